"""Tier 1 fixtures: ComfyUI faked with `responses` (never together with moto)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import responses

from comfy_core.client import ComfyUIClient
from comfy_core.config import get_settings


@pytest.fixture
def rsps() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


@pytest.fixture
def client() -> ComfyUIClient:
    return ComfyUIClient(get_settings())
