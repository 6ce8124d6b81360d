"""Where a prompt is: the backend a fleet sent it to.

A fleet records the backend in the prompt-state table before it submits (state.record_backend),
so status, image, history/{id} and cancel cost one GetItem and then one request to that
backend, as with one server. Without a record (no table, a prompt from before the fleet, an
expired item) or with a backend since removed from the registry, every backend is asked at
once, and the one that knows the prompt answers.

One server: no lookup at all, the only backend is the answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from .. import status
from ..comfyui.client import ComfyUIClient
from ..config import Settings
from ..errors import StorageError
from ..live import state as prompt_state
from .backends import Backend
from .pool import Fleet, get_fleet


@dataclass
class Placement:
    """The client to ask about a prompt. `backend` is None when no backend knows it (then
    `client` is the first backend's, for answers from the archive); `recorded` is the name
    the prompt-state table holds, which may be a backend no longer in the registry."""

    client: ComfyUIClient
    backend: Backend | None
    recorded: str | None = None
    item: dict[str, Any] | None = None  # the prompt-state item (None: none, or not read)
    read: bool = False  # whether `item` is what the table holds: no need to read it again

    @property
    def name(self) -> str | None:
        return self.backend.name if self.backend is not None else self.recorded


class Placements:
    def __init__(self, fleet: Fleet, settings: Settings | None = None) -> None:
        self.fleet = fleet
        self.settings = settings or fleet.settings

    @property
    def recorded_always(self) -> bool:
        """Every prompt of this fleet is recorded before it is sent (`record`), so a prompt
        without a record was never sent anywhere."""
        return self.fleet.is_fleet and bool(self.settings.prompt_state_table)

    def record(self, prompt_id: str, backend: Backend, workflow: str | None) -> None:
        """Before a fleet's POST /prompt (a no-op for one server). When the record cannot be
        written nothing is sent: a retry trusts that a prompt without a record was never
        sent (`locate(probe=False)`), which is what keeps it from going out twice."""
        if self.recorded_always and not prompt_state.record_backend(prompt_id, backend.name, workflow,
                                                                    self.settings):
            raise StorageError("Could not record which ComfyUI backend gets the prompt; nothing was "
                               "sent, retry", extra={"prompt_id": prompt_id})

    def locate(self, prompt_id: str, *, probe: bool = True) -> Placement:
        """Where the prompt is. `probe=False`: without a usable record, do not ask every
        backend (a keyed submission's check when `recorded_always`)."""
        backends = self.fleet.backends()
        if len(backends) == 1:
            return Placement(self.fleet.client(backends[0]), backends[0])
        item = prompt_state.load(prompt_id, self.settings, strict=not probe)
        recorded = (item or {}).get("backend")
        recorded = recorded if isinstance(recorded, str) else None
        backend = self.fleet.find(recorded)
        if backend is not None:
            return Placement(self.fleet.client(backend), backend, recorded, item, read=True)
        if not probe and recorded is None:
            return Placement(self.fleet.default_client(), None, None, item, read=True)
        for outcome in self.fleet.each(lambda client: status.held_item(client, prompt_id) is not None):
            if outcome.ok and outcome.value:
                return Placement(self.fleet.client(outcome.backend), outcome.backend, recorded, item, read=True)
        return Placement(self.fleet.default_client(), None, recorded, item, read=True)

    def gone(self, placement: Placement) -> float | None:
        """Seconds the prompt's backend has been gone (unreachable or removed, and not seen
        by a sweep for longer than BACKEND_GONE_GRACE_SECONDS), else None: a backend
        inside its grace period may come back with the prompt."""
        name = placement.name
        if name is None:
            return None
        # The later of: the last sweep that saw the backend, and the prompt's own records
        # (a `last_seen` from days ago must not make a prompt sent a minute ago lost).
        marks = [prompt_state.last_seen(name, self.settings)]
        if placement.item:
            marks += [placement.item.get("submitted_at"), placement.item.get("updated_at")]
        marks = [float(mark) for mark in marks if isinstance(mark, (int, float))]
        if not marks:
            return None
        away = prompt_state.now() - max(marks)
        return away if away > self.settings.backend_gone_grace else None


@lru_cache(maxsize=1)
def get_placements() -> Placements:
    return Placements(get_fleet())
