"""Tier 1 fixtures: ComfyUI faked with `responses` (never together with moto), and
template.yaml as written."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import responses

from comfy_core.comfyui.client import ComfyUIClient
from comfy_core.config import get_settings
from tests.support.sam import load_template


@pytest.fixture
def rsps() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


@pytest.fixture
def client() -> ComfyUIClient:
    return ComfyUIClient(get_settings())


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    """template.yaml as written (decoded once per module; tests only read it)."""
    return load_template()
