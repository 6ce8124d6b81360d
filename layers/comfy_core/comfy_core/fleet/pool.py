"""The fleet: one ComfyUIClient (one pooled Session) per backend, and a bounded fan-out
for the calls that ask every backend at once (history, queue, status, sweeps, routing)."""

from __future__ import annotations

import contextvars
import dataclasses
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import Any, TypeVar

from ..comfyui.client import ComfyUIClient
from ..config import Settings, get_settings
from ..errors import BadRequestError, ComfyCoreError, ComfyUIError, NotFoundError
from .backends import Backend, Registry

T = TypeVar("T")
# Backends asked at the same time: enough for a small fleet in one round, few enough that a
# function's memory and ComfyUI's connection count stay small.
MAX_PARALLEL = 8


@dataclasses.dataclass
class Outcome:
    """One backend's answer to a fan-out: a value, or the ComfyUI error it raised."""

    backend: Backend
    value: Any = None
    error: ComfyCoreError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class Fleet:
    def __init__(self, settings: Settings, registry: Registry | None = None) -> None:
        self.settings = settings
        self.registry = registry or Registry(settings)
        self._clients: dict[Backend, ComfyUIClient] = {}
        self._lock = threading.Lock()

    # -- membership --------------------------------------------------------------------
    def backends(self) -> list[Backend]:
        return self.registry.backends()

    def active(self) -> list[Backend]:
        """Backends that take new prompts (not draining)."""
        return [backend for backend in self.backends() if not backend.draining]

    def find(self, name: str | None) -> Backend | None:
        return next((backend for backend in self.backends() if backend.name == name), None)

    def named(self, name: str) -> Backend:
        """The backend a request names (`?backend=`): a 400 for a name the fleet lacks."""
        backend = self.find(name)
        if backend is None:
            raise BadRequestError(f"No ComfyUI backend named {name[:40]!r}; GET /api/queue lists them")
        return backend

    def first_active(self) -> Backend:
        """The first backend taking prompts (else the first): whose node definitions convert
        a UI-format workflow before routing, which needs the API prompt, picks a backend."""
        return (self.active() or self.backends())[0]

    @property
    def is_fleet(self) -> bool:
        """More than one backend: only then is anything recorded or routed (one server
        costs what it always did)."""
        return len(self.backends()) > 1

    # -- clients -----------------------------------------------------------------------
    def client(self, backend: Backend | str) -> ComfyUIClient:
        if isinstance(backend, str):
            found = self.find(backend)
            if found is None:
                raise NotFoundError(f"No ComfyUI backend named {backend!r}")
            backend = found
        with self._lock:
            client = self._clients.get(backend)
            if client is None:
                # Keyed by the whole Backend: a registry edit (new URL, new auth) gets a new client.
                client = ComfyUIClient(self._settings_for(backend), backend=backend.name)
                self._clients[backend] = client
            return client

    def default_client(self) -> ComfyUIClient:
        """The first backend's client: for one-server deployments, the only one."""
        return self.client(self.backends()[0])

    def _settings_for(self, backend: Backend) -> Settings:
        return dataclasses.replace(
            self.settings,
            comfyui_base_url=backend.base_url,
            comfyui_public_url=backend.public_url,
            comfyui_auth_header=backend.auth_header,
            comfyui_auth_parameter=backend.auth_parameter,
        )

    @property
    def request_count(self) -> int:
        """ComfyUI round trips made by every client of this fleet (tests and bench)."""
        with self._lock:
            return sum(client.request_count for client in self._clients.values())

    # -- fan-out -----------------------------------------------------------------------
    def each(self, call: Callable[[ComfyUIClient], T], backends: list[Backend] | None = None,
             workers: int = MAX_PARALLEL) -> list[Outcome]:
        """`call(client)` on every backend at once, in the backends' order. A ComfyUI (or
        other expected) error becomes that backend's Outcome.error; anything else raises."""
        backends = self.backends() if backends is None else backends
        if not backends:
            return []

        def one(backend: Backend) -> Outcome:
            try:
                return Outcome(backend, value=call(self.client(backend)))
            except ComfyUIError as exc:
                return Outcome(backend, error=exc)

        if len(backends) == 1:  # no thread for the one-server case
            return [one(backends[0])]
        with ThreadPoolExecutor(max_workers=min(workers, len(backends))) as pool:
            # Each thread sees the caller's context: the invocation deadline, log keys.
            futures = [pool.submit(contextvars.copy_context().run, one, backend) for backend in backends]
            return [future.result() for future in futures]


@lru_cache(maxsize=1)
def get_fleet() -> Fleet:
    """One fleet (and so one client per backend) per warm container."""
    return Fleet(get_settings())
