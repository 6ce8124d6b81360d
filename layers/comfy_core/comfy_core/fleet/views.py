"""The fleet-wide answers: GET /api/queue, /api/status, /api/test_comfy and /api/history
ask every backend at once and report per backend and in total.

With one backend each answer is what it always was (the same ComfyUI request, the same
shape). With several, answers gain `backend` on each item and `backends`/`fleet` objects,
and an unreachable backend is reported as such beside the others' answers; only when none
answers is it an error.
"""

from __future__ import annotations

import heapq
from typing import Any

from .. import answers, status
from ..errors import BadRequestError
from .backends import Backend
from .pool import Fleet, Outcome


def _describe(backend: Backend) -> dict[str, Any]:
    return {"draining": backend.draining}


def _failed(outcome: Outcome) -> dict[str, Any]:
    error = outcome.error
    assert error is not None
    return {**_describe(outcome.backend), "healthy": False, "error": error.message,
            "status_code": error.status_code}


def _all_failed(outcomes: list[Outcome]) -> None:
    """Raise the first backend's error when no backend answered (one server: its error)."""
    if outcomes and not any(outcome.ok for outcome in outcomes):
        error = outcomes[0].error
        assert error is not None
        raise error


# -- GET /api/queue ----------------------------------------------------------------------
def queue(fleet: Fleet) -> dict[str, Any]:
    """Running and pending prompts of every backend, with totals. `position` stays the
    place in its backend's queue, which is the one it waits in."""
    outcomes = fleet.each(lambda client: status.queue_summary(client.queue()))
    _all_failed(outcomes)
    several = len(outcomes) > 1
    merged: dict[str, Any] = {"queue_running": [], "queue_pending": [], "running_count": 0,
                              "pending_count": 0, "backends": {}}
    for outcome in outcomes:
        name = outcome.backend.name
        if not outcome.ok:
            merged["backends"][name] = _failed(outcome)
            continue
        summary = outcome.value
        for key in ("queue_running", "queue_pending"):
            merged[key].extend({**item, "backend": name} if several else item for item in summary[key])
        merged["running_count"] += summary["running_count"]
        merged["pending_count"] += summary["pending_count"]
        merged["backends"][name] = {**_describe(outcome.backend), "healthy": True,
                                    "running_count": summary["running_count"],
                                    "pending_count": summary["pending_count"]}
    if not several:
        del merged["backends"]
    return merged


# -- GET /api/status ---------------------------------------------------------------------
def system(fleet: Fleet) -> dict[str, Any]:
    """The first answering backend's /system_stats (the original shape), each backend's
    under `backends`, and counts under `fleet`."""
    outcomes = fleet.each(lambda client: answers.public_system_stats(client.system_stats()))
    _all_failed(outcomes)
    first = next(outcome for outcome in outcomes if outcome.ok)
    if len(outcomes) == 1:
        return first.value
    per_backend = {
        outcome.backend.name: ({**_describe(outcome.backend), "healthy": True, **outcome.value}
                               if outcome.ok else _failed(outcome))
        for outcome in outcomes
    }
    return {**first.value, "backends": per_backend, "fleet": _counts(outcomes)}


def _counts(outcomes: list[Outcome]) -> dict[str, int]:
    return {
        "backends": len(outcomes),
        "healthy": sum(1 for outcome in outcomes if outcome.ok),
        "draining": sum(1 for outcome in outcomes if outcome.backend.draining),
    }


# -- GET /api/test_comfy -----------------------------------------------------------------
def test(fleet: Fleet) -> tuple[int, dict[str, Any]]:
    """The seed's answer for the first backend, plus every backend's verdict when there
    are several: `success` while at least one answers (new prompts go there)."""
    outcomes = fleet.each(lambda client: answers.public_system_stats(client.system_stats()))
    first = outcomes[0]
    url = fleet.client(first.backend).public_url("/system_stats")
    answering = next((outcome for outcome in outcomes if outcome.ok), None)
    if answering is None:
        error = first.error
        assert error is not None
        # The seed answered failures with status "error" in the same shape.
        body: dict[str, Any] = {"status": "error", "comfyui_url": url, "error": error.message,
                                "status_code": error.status_code}
        code = error.status_code
    else:
        url = fleet.client(answering.backend).public_url("/system_stats")
        body, code = {"status": "success", "comfyui_url": url, "response": answering.value}, 200
    if len(outcomes) > 1:
        body["backends"] = {
            outcome.backend.name: (
                {**_describe(outcome.backend), "healthy": True,
                 "comfyui_url": fleet.client(outcome.backend).public_url("/system_stats")}
                if outcome.ok else _failed(outcome))
            for outcome in outcomes
        }
        body["fleet"] = _counts(outcomes)
    return code, body


# -- GET /api/history --------------------------------------------------------------------
def history(fleet: Fleet, query: dict[str, str], default: int, limit: int,
            budget: int = answers.ANSWER_BUDGET_BYTES) -> status.HistoryPage:
    """One backend's history as always, or with `backend=NAME` that backend's; with
    several backends, the newest `max_items` of all of them, by start time, each entry
    naming its backend. `offset` counts within one backend's history, so with several it
    needs `backend`."""
    backends = fleet.backends()
    name = query.get("backend")
    if name is not None:
        backends = [fleet.named(name)]
    if len(backends) == 1:
        page = status.history(fleet.client(backends[0]), query, default, limit, budget)
        if name is not None:
            for entry in page.body.values():
                entry["backend"] = backends[0].name
        return page
    count, offset, include_prompt = status.history_query(query, default, limit)
    if offset is not None:
        raise BadRequestError("'offset' pages one backend's history: add backend=NAME (GET /api/queue lists them)")

    def newest(client: Any) -> list[tuple[float, str, dict[str, Any]]]:
        return [(status.started_at(entry) or 0.0, prompt_id, answers.public_entry(entry, include_prompt=include_prompt))
                for prompt_id, entry in client.history_items(count)]

    outcomes = fleet.each(newest, backends)
    _all_failed(outcomes)
    merged = []
    for outcome in outcomes:
        for started, prompt_id, entry in outcome.value or []:
            merged.append((started, prompt_id, {**entry, "backend": outcome.backend.name}))
    chosen = sorted(heapq.nlargest(count, merged, key=lambda item: item[0]), key=lambda item: item[0])
    page = status.page(((prompt_id, entry) for _, prompt_id, entry in chosen), None, budget)
    down = [outcome.backend.name for outcome in outcomes if not outcome.ok]
    if down:
        # Their entries are missing from this page, which the client must be able to tell.
        page.headers["X-Truncated"] = "true"
        page.headers["X-Unavailable-Backends"] = ",".join(down)
    return page

