"""Where a new prompt goes: a healthy backend that can run it, the least loaded first.

"Can run it": every `class_type` is in the backend's /object_info, and every value given
to a list (COMBO) input is one of that input's options there: the checkpoint, LoRA, VAE...
files that backend has (ComfyUI itself refuses a prompt naming a file it lacks). Inputs
that take an uploaded file (LoadImage's `image`) are skipped: the input image is uploaded
to the chosen backend afterwards. The definitions are the conversion cache's (a few
minutes per backend); a backend that seems to lack something is asked again at once,
unless its definitions are only seconds old, so a model installed a minute ago counts.

"Least loaded": ComfyUI's queue_remaining (GET /prompt, a few hundred bytes), asked of all
backends at once and kept LOAD_CACHE_SECONDS per container; a submission adds one to its
backend's cached count, so a burst within that time still spreads. Equal loads are shuffled.

One backend: no routing, no request: it is the only candidate.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from ..comfyui.client import ComfyUIClient
from ..errors import BadRequestError, ComfyUIUnreachableError
from ..workflows import ui as ui_workflows
from .backends import Backend
from .pool import Fleet, get_fleet

LOAD_CACHE_SECONDS = 2.0
# Definitions younger than this are not fetched again on a miss (a missing node stays missing).
DEFINITIONS_REFRESH_SECONDS = 15.0
# Inputs whose list holds what the user uploads, not what the backend has installed.
_UPLOAD_FLAGS = ("image_upload", "video_upload", "audio_upload", "upload")


class NoCapableBackendError(BadRequestError):
    """Healthy backends exist, but none has every node type and model the workflow uses."""


class NoBackendAvailableError(ComfyUIUnreachableError):
    """No backend takes prompts: all unreachable, or all draining."""

    status_code = 503
    retry_after_seconds = 30


@dataclass
class Fit:
    """What one backend lacks to run a prompt (nothing: it can)."""

    missing_nodes: list[str] = field(default_factory=list)
    missing_models: list[dict[str, Any]] = field(default_factory=list)

    def __bool__(self) -> bool:  # True when something is missing
        return bool(self.missing_nodes or self.missing_models)

    def as_dict(self) -> dict[str, Any]:
        return {"missing_nodes": self.missing_nodes, "missing_models": self.missing_models}


def _options(spec: Any) -> list[Any] | None:
    """The allowed values of a list input, in either of /object_info's forms:
    `[[...options], {...}]` or `["COMBO", {"options": [...]}]`; None for other inputs and
    for list inputs that take uploads."""
    if not isinstance(spec, list) or not spec:
        return None
    extra = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if any(extra.get(flag) for flag in _UPLOAD_FLAGS):
        return None
    if isinstance(spec[0], list):
        return spec[0]
    if spec[0] == "COMBO" and isinstance(extra.get("options"), list):
        return extra["options"]
    return None


def fit(prompt: dict[str, Any], info: dict[str, Any]) -> Fit:
    """What `prompt` needs that the backend described by `info` (/object_info) lacks."""
    found = Fit()
    for node_id, node in prompt.items():
        if not isinstance(node, dict):
            continue
        class_type = node.get("class_type")
        definition = info.get(class_type) if isinstance(class_type, str) else None
        if not isinstance(definition, dict):
            if isinstance(class_type, str) and class_type not in found.missing_nodes:
                found.missing_nodes.append(class_type)
            continue
        declared = definition.get("input") if isinstance(definition.get("input"), dict) else {}
        specs = {**(declared.get("optional") or {}), **(declared.get("required") or {})}
        for name, value in (node.get("inputs") or {}).items():
            if not isinstance(value, str):  # links, numbers, input-image references
                continue
            options = _options(specs.get(name))
            if options is not None and value not in options:
                found.missing_models.append(
                    {"node": str(node_id), "class_type": class_type, "input": name, "value": value})
    return found


class Router:
    def __init__(self, fleet: Fleet, clock: Any = time.monotonic, rng: random.Random | None = None) -> None:
        self.fleet = fleet
        self._clock = clock
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._loads: dict[str, tuple[float, int]] = {}  # backend name -> (when asked, depth)

    def candidates(self, prompt: dict[str, Any]) -> list[tuple[Backend, int | None]]:
        """The backends to try, best first, with their queue depths (None for one server,
        where nothing is asked). Raises NoCapableBackendError (400) when healthy
        backends exist but none can run the prompt, NoBackendAvailableError (503) when none
        is healthy or every one is draining."""
        backends = self.fleet.backends()
        active = [backend for backend in backends if not backend.draining]
        if len(backends) == 1:
            if not active:
                raise NoBackendAvailableError("The only ComfyUI backend is draining; retry later")
            return [(active[0], None)]
        if not active:
            raise NoBackendAvailableError("Every ComfyUI backend is draining; retry later")
        outcomes = self.fleet.each(lambda client: self._assess(client, prompt), active)
        healthy = [outcome for outcome in outcomes if outcome.ok]
        capable = [(outcome.backend, outcome.value[1]) for outcome in healthy if not outcome.value[0]]
        if not capable:
            if healthy:
                raise NoCapableBackendError(
                    "No ComfyUI backend can run this workflow",
                    extra={"backends": {outcome.backend.name: outcome.value[0].as_dict() for outcome in healthy}},
                )
            raise NoBackendAvailableError("No ComfyUI backend is reachable; retry later")
        self._rng.shuffle(capable)  # fair among equals: sorted() keeps this order for ties
        return sorted(capable, key=lambda pair: pair[1])

    def _assess(self, client: ComfyUIClient, prompt: dict[str, Any]) -> tuple[Fit, int]:
        cache = ui_workflows.conversion_cache()
        definitions = cache.definitions(client)
        missing = fit(prompt, definitions.info)
        if missing and time.monotonic() - definitions.fetched_at >= DEFINITIONS_REFRESH_SECONDS:
            missing = fit(prompt, cache.definitions(client, refresh=True).info)
        return missing, self._load(client)

    def _load(self, client: ComfyUIClient) -> int:
        with self._lock:
            cached = self._loads.get(client.backend)
        if cached is not None and self._clock() - cached[0] < LOAD_CACHE_SECONDS:
            return cached[1]
        depth = client.queue_remaining()
        with self._lock:
            self._loads[client.backend] = (self._clock(), depth)
        return depth

    def submitted(self, backend: Backend) -> None:
        """Count a prompt just sent, until the backend's next load answer."""
        with self._lock:
            cached = self._loads.get(backend.name)
            if cached is not None:
                self._loads[backend.name] = (cached[0], cached[1] + 1)

    def unreachable(self, backend: Backend) -> None:
        """Forget a backend's load after it refused a connection."""
        with self._lock:
            self._loads.pop(backend.name, None)


@lru_cache(maxsize=1)
def get_router() -> Router:
    return Router(get_fleet())
