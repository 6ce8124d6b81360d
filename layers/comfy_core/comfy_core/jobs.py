"""Running a workflow: load it, patch it with the request, submit it to ComfyUI."""

from __future__ import annotations

import copy
import hashlib
import json
import uuid
from typing import Any

from . import status, validation
from .comfyui.client import ComfyUIClient
from .errors import BadRequestError, ComfyUIUnreachableError, QueueFullError
from .fleet.placement import get_placements
from .fleet.routing import get_router
from .observability import logger
from .workflows import inputs, patcher
from .workflows import ui as ui_workflows
from .workflows.store import WorkflowStore


# Key under ComfyUI's extra_data where a prompt's origin (workflow, job) is recorded;
# answers strip it (it may hold a webhook URL's token).
from .answers import EXTRA_DATA_KEY  # noqa: E402 - kept beside the comment that explains it


def _check_queue_depth(client: ComfyUIClient) -> None:
    limit = client.settings.max_queue_depth
    if limit and client.queue_remaining() >= limit:
        raise QueueFullError(f"ComfyUI already has {limit} or more prompts queued; retry later")


# uuid5 namespace of prompt ids derived from an idempotency key (any fixed UUID would do).
_KEYED_PROMPT_IDS = uuid.UUID("6f1c9a52-3d0e-4b8e-9a57-2f4f3c1d7e20")


def keyed_prompt_id(namespace: str, key: str, payload: Any) -> str:
    """The prompt id of a keyed submission: the same key and request always give the same
    id, so a retry can ask ComfyUI whether the first attempt got in (see `run_workflow`).
    The request is part of the name: the same key with another request is another prompt."""
    digest = hashlib.sha256(
        json.dumps(payload, sort_keys=True, ensure_ascii=True, default=str).encode("ascii")
    ).hexdigest()
    return str(uuid.uuid5(_KEYED_PROMPT_IDS, f"{namespace}\0{key}\0{digest}"))


def _submitted_before(client: ComfyUIClient, prompt_id: str) -> dict[str, Any] | None:
    """The answer for a prompt ComfyUI already holds (queued, running or finished), else None."""
    item = status.held_item(client, prompt_id)
    return _answer_from_item(prompt_id, item) if item is not None else None


def _answer_from_item(prompt_id: str, item: list[Any]) -> dict[str, Any]:
    """The first answer again, from ComfyUI's [number, prompt_id, graph, extra_data, ...]:
    the client_id that answer gave is ours in extra_data, else what ComfyUI holds."""
    number = item[0] if item else None
    extra = item[3] if len(item) >= 4 and isinstance(item[3], dict) else {}
    recorded = extra.get(EXTRA_DATA_KEY)
    if isinstance(recorded, dict) and recorded.get("client_id"):
        client_id = recorded["client_id"]
    else:
        client_id = extra.get("client_id")
    return _answer(prompt_id, number, {}, client_id)


def _answer(prompt_id: str, number: Any, node_errors: dict[str, Any], client_id: Any) -> dict[str, Any]:
    return {
        "status": "success",
        "prompt_id": prompt_id,
        "number": number,
        "node_errors": node_errors,
        "error": None,
        "client_id": client_id,
    }


def run_workflow(
    store: WorkflowStore,
    name: str,
    body: dict[str, Any],
    job: dict[str, Any] | None = None,
    prompt_id: str | None = None,
) -> dict[str, Any]:
    """Answer of POST /api/workflow/{name}, in the original service's shape (plus `backend`,
    the fleet's name of the ComfyUI that got it).

    `job` (job_id, webhook_url... from an event-driven trigger) travels with the prompt in
    ComfyUI's extra_data, so whoever notices completion later knows whose prompt it was.

    `prompt_id` is given for keyed submissions (Idempotency-Key, job id): a POST /prompt
    that timed out may have been queued all the same, so before posting, ComfyUI is asked
    whether it holds that id already; if so, that prompt is the answer and nothing is
    posted. Two extra GETs per keyed submission buy "never submitted twice"; with a fleet,
    one GetItem: the backend is recorded before every send, so no record means never sent,
    and a record names the one backend to ask.

    With a fleet the prompt goes to the least loaded backend that can run it (routing); a
    backend that refuses the connection is skipped for the next, which is safe because
    nothing reached it. A timeout is not skipped: the prompt may be queued there."""
    router, placements = get_router(), get_placements()
    fleet = router.fleet
    settings = fleet.settings
    validation.workflow_name(name)
    client_id = body.get("client_id")
    if client_id is not None and (not isinstance(client_id, str) or not 0 < len(client_id) <= 128):
        raise BadRequestError("'client_id' must be a string of 1-128 characters")
    # UI-format files are converted with a backend's node definitions (see first_active):
    # routing needs the API prompt to know which backends can run it.
    stored = ui_workflows.load_prompt(store, fleet.client(fleet.first_active()), name)
    body, targets = inputs.take_targets(stored, body)
    workflow = patcher.apply_request(stored, body)
    if prompt_id is not None:
        placement = placements.locate(prompt_id, probe=not placements.recorded_always)
        found = _submitted_before(placement.client, prompt_id) if placement.backend else None
        if found is not None:
            logger.info("Prompt was submitted by an earlier attempt; not submitted again",
                        extra={"prompt_id": prompt_id, "backend": placement.backend.name})
            return {**found, "backend": placement.backend.name}
    candidates = router.candidates(workflow)
    if candidates[0][1] is None:  # one server: routing asked nothing, so ask its queue now
        _check_queue_depth(fleet.client(candidates[0][0]))
    elif settings.max_queue_depth:  # a fleet: the loads routing just read
        candidates = [(backend, load) for backend, load in candidates if load < settings.max_queue_depth]
        if not candidates:
            raise QueueFullError(
                f"Every ComfyUI backend that can run this workflow already has {settings.max_queue_depth} or more "
                "prompts queued; retry later")
    # Input images last before the prompt: read and checked (all of them) before any is
    # sent to ComfyUI, and not sent at all for a prompt that is already queued or refused.
    spooled = inputs.prepare(targets, settings, allow_s3=job is not None) if targets else []
    client_id = client_id or f"comfy-serverless-{uuid.uuid4().hex[:12]}"
    prompt_id = prompt_id or str(uuid.uuid4())
    # Under the deployment's own client id when the live watcher is on, so ComfyUI sends
    # this prompt's messages to the watcher's socket; the answer (and extra_data, for a
    # keyed retry's answer) keeps the client's id.
    routed = settings.watcher_client_id or client_id
    kept = {"client_id": client_id} if routed != client_id else {}
    extra_data = {EXTRA_DATA_KEY: {"workflow": name, **(job or {}), **kept}}
    logger.append_keys(prompt_id=prompt_id, workflow=name)
    try:
        for index, (backend, _) in enumerate(candidates):
            client = fleet.client(backend)
            try:
                sent = inputs.send(client, copy.deepcopy(workflow), targets, spooled) if targets else workflow
                _log_request(sent, routed, prompt_id, extra_data)
                placements.record(prompt_id, backend, name)
                answer = client.submit_prompt(sent, client_id=routed, prompt_id=prompt_id, extra_data=extra_data)
            except ComfyUIUnreachableError as exc:
                if not exc.never_connected or index == len(candidates) - 1:
                    raise
                router.unreachable(backend)
                logger.warning("ComfyUI backend refused the connection; trying the next",
                               extra={"backend": backend.name})
                continue
            router.submitted(backend)
            break
    finally:
        inputs.close(spooled)
    node_errors = answer.get("node_errors") or {}
    if node_errors:
        # ComfyUI ran the valid outputs and dropped these: the client must see which.
        logger.warning("ComfyUI dropped outputs with node errors", extra={"node_errors": node_errors})
    return {**_answer(answer["prompt_id"], answer.get("number"), node_errors, client_id), "backend": backend.name}


def _log_request(workflow: dict[str, Any], client_id: str, prompt_id: str, extra_data: dict[str, Any]) -> None:
    if logger.isEnabledFor(10):  # DEBUG: the seed's two dumps, without paying for them otherwise
        logger.debug("=== Final Workflow JSON ===\n" + json.dumps(workflow, indent=2))
        logger.debug(
            "=== Request to ComfyUI ===\n"
            + json.dumps(
                {"prompt": workflow, "client_id": client_id, "prompt_id": prompt_id, "extra_data": extra_data},
                indent=2,
            )
        )
