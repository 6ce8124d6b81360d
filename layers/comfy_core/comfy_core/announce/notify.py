"""A prompt's life announced: EventBridge events, and the job's webhook when it has one.

    ComfyUI Prompt Submitted   when a job or POST /api/workflow submits a prompt
    ComfyUI Prompt Completed   when the archiver finds it finished successfully
    ComfyUI Prompt Failed      when the archiver finds it finished with an error (or interrupted)

Completion is noticed by the archiver's sweep, so prompts submitted any way are covered;
the workflow and job come from the prompt's extra_data when it was submitted by us. The
archiver announces a prompt right after writing its manifest, and a prompt with a manifest
is never swept again: each prompt is announced once.

Every detail names the prompt's `backend`: the fleet's name of the ComfyUI it was sent to
and ran on ("default" for a lone server; fleet.backends).
"""

from __future__ import annotations

from typing import Any

from ..config import Settings, get_settings
from ..answers import EXTRA_DATA_KEY
from ..status import execution_time, failed, failure_details
from . import events, webhooks

SUBMITTED = "ComfyUI Prompt Submitted"
COMPLETED = "ComfyUI Prompt Completed"
FAILED = "ComfyUI Prompt Failed"


def origin(entry: dict[str, Any]) -> dict[str, Any]:
    """What we recorded in the prompt's extra_data (workflow, job_id, webhook_url...):
    ComfyUI keeps the submitted prompt as [number, prompt_id, graph, extra_data, outputs].
    `{}` for a prompt some other client submitted."""
    item = entry.get("prompt")
    if not isinstance(item, (list, tuple)) or len(item) < 4 or not isinstance(item[3], dict):
        return {}
    recorded = item[3].get(EXTRA_DATA_KEY)
    return dict(recorded) if isinstance(recorded, dict) else {}


def prompt_submitted(
    answer: dict[str, Any],
    *,
    workflow: str,
    job_id: str | None = None,
    trigger: str = "api",
    settings: Settings | None = None,
) -> bool:
    """`ComfyUI Prompt Submitted` for the answer of jobs.run_workflow (which names the backend
    the prompt went to). Never raises."""
    settings = settings or get_settings()
    detail = {
        "prompt_id": answer.get("prompt_id"),
        "workflow": workflow,
        "job_id": job_id,
        "status": "submitted",
        "trigger": trigger,
        "number": answer.get("number"),
        "client_id": answer.get("client_id"),
        "backend": answer.get("backend"),
    }
    return events.put_event(SUBMITTED, detail, settings.event_bus_name)


def finished_detail(prompt_id: str, entry: dict[str, Any], archived: dict[str, Any],
                    backend: str | None = None) -> dict[str, Any]:
    """The detail of Completed / Failed: who asked, where it ran, the outcome, and where the
    files are. `archived` is the archiver's bucket, manifest_key, keys, sizes, lost and
    truncated."""
    job = origin(entry)
    ok = not failed(entry)
    detail: dict[str, Any] = {
        "prompt_id": prompt_id,
        "workflow": job.get("workflow"),
        "job_id": job.get("job_id"),
        "backend": backend,
        "status": "success" if ok else "error",
        "execution_time": execution_time(entry),
        **archived,
    }
    if not ok:
        detail["error"] = failure_details(entry)
    return detail


def prompt_finished(
    prompt_id: str, entry: dict[str, Any], archived: dict[str, Any], settings: Settings | None = None,
    *, backend: str | None = None,
) -> dict[str, bool]:
    """Send Completed or Failed, then the job's webhook (the same detail). Never raises: the
    manifest is already written; a notification that cannot be sent is logged and counted."""
    settings = settings or get_settings()
    detail = finished_detail(prompt_id, entry, archived, backend)
    detail_type = COMPLETED if detail["status"] == "success" else FAILED
    sent = {"event": events.put_event(detail_type, detail, settings.event_bus_name)}
    url = origin(entry).get("webhook_url")
    if isinstance(url, str) and url:
        sent["webhook"] = webhooks.deliver(url, detail_type, detail, settings)
    return sent
