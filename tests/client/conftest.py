"""Fixtures of the client tier: a ComfyAPI whose waits are recorded instead of slept, and
in-process runs of the `comfy-api` command with captured consoles."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import pytest

from comfy_api import ComfyAPI, RetryPolicy
from comfy_api.cli import main

from .fakes import API_URL, Result, Sleeps, console


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def api(sleeps: Sleeps) -> ComfyAPI:
    return ComfyAPI(API_URL, "test-key-123456789", sleep=sleeps, retry=RetryPolicy())


@pytest.fixture
def cli(sleeps: Sleeps) -> Callable[..., Result]:
    """Run `comfy-api ARGS` in this process, against API_URL unless env says otherwise."""
    def run(*argv: str, env: Mapping[str, str] | None = None) -> Result:
        out, err = console(), console()
        code = main(list(argv), stdout=out, stderr=err, environ={"COMFY_API_URL": API_URL} if env is None else env,
                    api_factory=lambda url, key: ComfyAPI(url, key, sleep=sleeps))
        return Result(code, out.file.getvalue(), err.file.getvalue())  # type: ignore[attr-defined]
    return run
