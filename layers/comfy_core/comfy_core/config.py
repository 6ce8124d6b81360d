"""One frozen settings object, read from the environment once per container.

Template Parameter -> env var -> Settings: the README's configuration table lists each.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    return int(raw) if raw else default


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    return float(raw) if raw else default


@dataclass(frozen=True)
class Settings:
    comfyui_base_url: str
    # What clients are shown in image `url`s; defaults to the base URL (the seed's behaviour).
    comfyui_public_url: str
    workflow_bucket: str
    workflow_prefix: str
    # API Gateway gives up after 29 s: connect + read must finish well before that so the
    # client gets our 504 with the error envelope instead of API Gateway's bare timeout.
    connect_timeout: float
    read_timeout: float
    get_retries: int
    max_body_bytes: int
    history_default_items: int
    history_max_items: int

    @classmethod
    def from_env(cls) -> "Settings":
        base = os.environ.get("COMFYUI_BASE_URL", "http://127.0.0.1:8188").strip().rstrip("/")
        public = os.environ.get("COMFYUI_PUBLIC_URL", "").strip().rstrip("/") or base
        prefix = os.environ.get("WORKFLOW_PREFIX", "workflows/").strip().lstrip("/")
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        return cls(
            comfyui_base_url=base,
            comfyui_public_url=public,
            workflow_bucket=os.environ.get("WORKFLOW_BUCKET", "").strip(),
            workflow_prefix=prefix,
            connect_timeout=_float("COMFYUI_CONNECT_TIMEOUT", 3.05),
            read_timeout=_float("COMFYUI_READ_TIMEOUT", 20.0),
            get_retries=_int("COMFYUI_GET_RETRIES", 2),
            max_body_bytes=_int("MAX_BODY_BYTES", 1_048_576),
            history_default_items=_int("HISTORY_DEFAULT_MAX_ITEMS", 100),
            history_max_items=_int("HISTORY_MAX_ITEMS_LIMIT", 1000),
        )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The container's settings; tests call `get_settings.cache_clear()` after changing env."""
    return Settings.from_env()
