"""Running a workflow: load it, patch it with the request, submit it to ComfyUI."""

from __future__ import annotations

import json
import uuid
from typing import Any

from . import patcher, validation
from .client import ComfyUIClient
from .errors import BadRequestError, QueueFullError
from .observability import logger
from .workflows import WorkflowStore


# Key under ComfyUI's extra_data where a prompt's origin (workflow, job) is recorded.
EXTRA_DATA_KEY = "comfy_serverless"


def _check_queue_depth(client: ComfyUIClient) -> None:
    limit = client.settings.max_queue_depth
    if limit and client.queue_remaining() >= limit:
        raise QueueFullError(f"ComfyUI already has {limit} or more prompts queued; retry later")


def run_workflow(
    client: ComfyUIClient,
    store: WorkflowStore,
    name: str,
    body: dict[str, Any],
    job: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Answer of POST /api/workflow/{name}, in the original service's shape.

    `job` (job_id, webhook_url... from an event-driven trigger) travels with the prompt in
    ComfyUI's extra_data, so whoever notices completion later knows whose prompt it was."""
    validation.workflow_name(name)
    client_id = body.get("client_id")
    if client_id is not None and (not isinstance(client_id, str) or not 0 < len(client_id) <= 128):
        raise BadRequestError("'client_id' must be a string of 1-128 characters")
    workflow = patcher.apply_request(store.load(name), body)
    _check_queue_depth(client)
    client_id = client_id or f"comfy-serverless-{uuid.uuid4().hex[:12]}"
    prompt_id = str(uuid.uuid4())
    extra_data = {EXTRA_DATA_KEY: {"workflow": name, **(job or {})}}
    logger.append_keys(prompt_id=prompt_id, workflow=name)
    if logger.isEnabledFor(10):  # DEBUG: the seed's two dumps, without paying for them otherwise
        logger.debug("=== Final Workflow JSON ===\n" + json.dumps(workflow, indent=2))
        logger.debug(
            "=== Request to ComfyUI ===\n"
            + json.dumps(
                {"prompt": workflow, "client_id": client_id, "prompt_id": prompt_id, "extra_data": extra_data},
                indent=2,
            )
        )
    answer = client.submit_prompt(workflow, client_id=client_id, prompt_id=prompt_id, extra_data=extra_data)
    node_errors = answer.get("node_errors") or {}
    if node_errors:
        # ComfyUI ran the valid outputs and dropped these: the client must see which.
        logger.warning("ComfyUI dropped outputs with node errors", extra={"node_errors": node_errors})
    return {
        "status": "success",
        "prompt_id": answer["prompt_id"],
        "number": answer.get("number"),
        "node_errors": node_errors,
        "error": None,
        "client_id": client_id,
    }
