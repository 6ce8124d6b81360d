"""One local stack (moto + ComfyUI stand-in + LocalApi) per e2e test module.

The root conftest's autouse `clean_container` still runs around every test: it
empties comfy_core's per-container caches, so each test's handlers rebuild
their settings and clients from the environment the local API applies.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devtools.dev import LocalStack


@pytest.fixture(scope="module")
def local_stack() -> Iterator[LocalStack]:
    # No api_key: these tests call without one (only `make dev` reads LOCAL_API_KEY).
    with LocalStack(port=0, standin_delay=0.2) as stack:
        yield stack
