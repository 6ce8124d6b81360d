"""One local stack (moto + ComfyUI stand-in + LocalApi) per e2e test module.

The root conftest's autouse `clean_container` still runs around every test: it
empties comfy_core's per-container caches, so each test's handlers rebuild
their settings and clients from the environment the local API applies.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from devtools.dev import LocalStack


@pytest.fixture(scope="module")
def local_stack() -> Iterator[LocalStack]:
    pytest.importorskip("devtools.comfyui_standin", reason="ComfyUI stand-in not available")
    with pytest.MonkeyPatch.context() as patch:
        # These tests call without a key; a developer's LOCAL_API_KEY must not turn them into 403s.
        patch.delenv("LOCAL_API_KEY", raising=False)
        with LocalStack(port=0, standin_delay=0.2) as stack:
            yield stack


def _cold_start() -> None:
    from comfy_core import reset_container_state

    reset_container_state()


@pytest.fixture
def cold_start() -> Callable[[], None]:
    """Call it to drop comfy_core's warm-container state, as a new deployment would.

    Handlers run in this process, so a second stack started in it would
    otherwise reuse the S3 client built for the first stack's moto endpoint.
    """
    return _cold_start
