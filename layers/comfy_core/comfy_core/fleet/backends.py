"""Which ComfyUI servers there are: the fleet's backends, each with a stable name.

Two sources, the second winning when it is set and readable:

- COMFYUI_BASE_URL, one URL or a comma-separated list, each entry `url` or `name=url`.
  COMFYUI_PUBLIC_URL and COMFYUI_AUTH_PARAMETER may list one value per backend, in the same
  order, or hold one value for all.
- The registry: an SSM parameter (COMFYUI_BACKENDS_PARAMETER) holding JSON, edited by
  operators without a redeploy and read at most every BACKENDS_CACHE_SECONDS per container:

      {"backends": [{"name": "gpu-a", "url": "http://10.0.1.5:8188",
                     "public_url": "https://a.example.com",          (optional)
                     "auth_parameter": "/comfy/gpu-a/token",         (optional)
                     "auth_header": "Authorization",                 (optional)
                     "drain": false}]}                               (optional)

A draining backend takes no new prompts; everything else (status, cancel, archive, the
watcher) still reaches it, so what it holds finishes and is archived before it is removed.

Names are part of the prompt-state records and of metric dimensions, so they stay stable:
a lone unnamed URL is `default` (what a one-server deployment has always recorded);
several unnamed URLs are named after their host and port.
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ..config import Settings
from ..errors import ConfigurationError
from ..observability import logger

DEFAULT_NAME = "default"
NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,39}")
# Far more than one API should front; a bound keeps fan-outs (history, sweeps) sane.
MAX_BACKENDS = 32


@dataclass(frozen=True)
class Backend:
    name: str
    base_url: str
    public_url: str = ""
    auth_header: str = "Authorization"
    auth_parameter: str = ""
    draining: bool = False


def _checked_url(url: str, where: str) -> str:
    url = url.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(f"{where}: a backend URL must be http(s)://host[:port]")
    return url


def _checked_name(name: str, where: str) -> str:
    if not NAME.fullmatch(name):
        raise ConfigurationError(
            f"{where}: backend name {name[:40]!r} must be 1-40 lowercase letters, digits or '-'"
        )
    return name


def name_for_url(url: str) -> str:
    """A stable name for an unnamed URL of a list: its host and port (`10-0-1-5-8188`)."""
    parts = urlsplit(url)
    host = re.sub(r"[^a-z0-9]+", "-", (parts.hostname or "").lower()).strip("-") or "comfyui"
    name = f"{host}-{parts.port}" if parts.port else host
    return name[:40].rstrip("-")


def _per_backend(raw: str, count: int) -> list[str]:
    """One value per backend: a list of exactly `count`, or one value (or none) for all."""
    values = [value.strip() for value in raw.split(",")] if raw.strip() else []
    if len(values) == count:
        return values
    if len(values) <= 1:
        return [values[0] if values else ""] * count
    raise ConfigurationError(
        f"{len(values)} values given for {count} backends: list one per backend, or one for all"
    )


def from_settings(settings: Settings) -> list[Backend]:
    """The backends COMFYUI_BASE_URL lists (one by default)."""
    entries = [entry.strip() for entry in settings.comfyui_base_url.split(",") if entry.strip()]
    if not entries:
        raise ConfigurationError("COMFYUI_BASE_URL names no ComfyUI")
    if len(entries) > MAX_BACKENDS:
        raise ConfigurationError(f"COMFYUI_BASE_URL lists more than {MAX_BACKENDS} backends")
    publics = _per_backend(settings.comfyui_public_url, len(entries))
    auths = _per_backend(settings.comfyui_auth_parameter, len(entries))
    backends: list[Backend] = []
    for entry, public, auth in zip(entries, publics, auths):
        name, sep, url = entry.partition("=")
        if not sep or "://" in name:  # no name given (a URL's query may hold '=')
            name, url = "", entry
        url = _checked_url(url, "COMFYUI_BASE_URL")
        if name:
            name = _checked_name(name.strip(), "COMFYUI_BASE_URL")
        elif len(entries) == 1:
            name = DEFAULT_NAME
        else:
            name = name_for_url(url)
        backends.append(Backend(name=name, base_url=url, public_url=public.rstrip("/"),
                                auth_header=settings.comfyui_auth_header, auth_parameter=auth))
    _check_unique(backends, "COMFYUI_BASE_URL")
    return backends


def parse_registry(document: Any, settings: Settings) -> list[Backend]:
    """The registry parameter's JSON: {"backends": [...]} or the list alone."""
    where = f"registry {settings.comfyui_backends_parameter}"
    if isinstance(document, dict):
        document = document.get("backends")
    if not isinstance(document, list) or not document:
        raise ConfigurationError(f'{where}: expected {{"backends": [{{"name", "url"}}, ...]}}')
    if len(document) > MAX_BACKENDS:
        raise ConfigurationError(f"{where}: more than {MAX_BACKENDS} backends")
    backends = []
    for entry in document:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) \
                or not isinstance(entry.get("url"), str):
            raise ConfigurationError(f'{where}: every backend needs a "name" and a "url"')
        optional = {key: entry.get(key) for key in ("public_url", "auth_parameter", "auth_header")}
        if any(value is not None and not isinstance(value, str) for value in optional.values()):
            raise ConfigurationError(f"{where}: public_url, auth_parameter and auth_header are strings")
        if not isinstance(entry.get("drain", False), bool):
            raise ConfigurationError(f'{where}: "drain" is true or false')
        auth = (optional["auth_parameter"] or "").strip().lstrip("/")
        registry = settings.comfyui_backends_parameter.strip("/")
        if auth and not auth.startswith(f"{registry}/"):
            # The functions may read parameters under the registry's name only (template.yaml).
            raise ConfigurationError(f"{where}: auth_parameter must be under {registry}/")
        backends.append(Backend(
            name=_checked_name(entry["name"], where),
            base_url=_checked_url(entry["url"], where),
            public_url=(optional["public_url"] or "").strip().rstrip("/"),
            auth_header=(optional["auth_header"] or "").strip() or settings.comfyui_auth_header,
            auth_parameter=auth,
            draining=bool(entry.get("drain", False)),
        ))
    _check_unique(backends, where)
    return backends


def _check_unique(backends: list[Backend], where: str) -> None:
    names = [backend.name for backend in backends]
    if len(set(names)) != len(names):
        raise ConfigurationError(f"{where}: backend names must be unique")


class Registry:
    """The current backends: the registry parameter when set (cached, and the last good
    answer kept when a later read fails), else COMFYUI_BASE_URL's list."""

    def __init__(self, settings: Settings, clock: Any = time.monotonic) -> None:
        self.settings = settings
        self._clock = clock
        self._lock = threading.Lock()
        self._static = from_settings(settings)
        self._loaded: list[Backend] | None = None
        self._loaded_at = float("-inf")
        self.reads = 0  # registry reads made; tests assert the caching on it
        self._ssm: Any = None

    def backends(self) -> list[Backend]:
        if not self.settings.comfyui_backends_parameter:
            return self._static
        with self._lock:
            if self._clock() - self._loaded_at >= self.settings.backends_cache_seconds:
                self._loaded_at = self._clock()  # also after a failure: no read per request
                self._loaded = self._read() or self._loaded
            return self._loaded or self._static

    def _read(self) -> list[Backend] | None:
        self.reads += 1
        name = self.settings.comfyui_backends_parameter
        path = name if name.startswith("/") else f"/{name}"  # as secrets.ssm_secret names it
        try:
            if self._ssm is None:
                import boto3

                self._ssm = boto3.client("ssm")
            value = self._ssm.get_parameter(Name=path, WithDecryption=True)["Parameter"]["Value"]
            return parse_registry(json.loads(value), self.settings)
        except ConfigurationError as exc:
            logger.error("Backend registry is invalid; keeping the last good list",
                         extra={"parameter": name, "error": exc.message})
        except Exception as exc:  # noqa: BLE001 - botocore errors are generated; JSON errors too
            logger.error("Backend registry unreadable; keeping the last good list",
                         extra={"parameter": name, "error": type(exc).__name__})
        return None
