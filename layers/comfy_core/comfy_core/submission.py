"""Submitting a workflow, the one way every entry point does it (HTTP, SQS, S3,
EventBridge, direct invoke): run it, count it, announce it — at most once per key."""

from __future__ import annotations

import re
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from . import idempotency, jobs, validation
from .announce import notify
from .config import get_settings
from .errors import BadRequestError, ComfyUIRejectedError
from .observability import metrics
from .workflows.store import get_store

# Idempotency-Key: an opaque client token (a UUID is typical).
IDEMPOTENCY_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
HTTP_NAMESPACE = "http"


def submit(
    workflow: str,
    body: dict[str, Any],
    *,
    job_id: str | None = None,
    trigger: str = "api",
    origin: dict[str, Any] | None = None,
    prompt_id: str | None = None,
) -> dict[str, Any]:
    """jobs.run_workflow plus the PromptSubmitted/PromptRejected metrics and the
    `ComfyUI Prompt Submitted` event. `prompt_id`: see jobs.run_workflow (keyed only)."""
    try:
        answer = jobs.run_workflow(get_store(), workflow, body, job=origin, prompt_id=prompt_id)
    except ComfyUIRejectedError:
        metrics.add_metric(name="PromptRejected", unit=MetricUnit.Count, value=1)
        raise
    metrics.add_metric(name="PromptSubmitted", unit=MetricUnit.Count, value=1)
    if get_settings().announce_submissions:
        notify.prompt_submitted(answer, workflow=workflow, job_id=job_id, trigger=trigger)
    return answer


def submit_http(
    workflow: str, body: dict[str, Any], idempotency_key: str | None, context: Any = None
) -> dict[str, Any]:
    """POST /api/workflow/{name}. With an Idempotency-Key, the same key within the expiry
    (24 h by default) returns the first answer and submits nothing; the same key with a
    different request is a 422, and while the first is still running a 409."""
    validation.workflow_name(workflow)  # before any I/O, the idempotency table included
    if idempotency_key is None:
        return submit(workflow, body)
    if not IDEMPOTENCY_KEY.fullmatch(idempotency_key):
        raise BadRequestError("Idempotency-Key must be 1-128 letters, digits, '.', '_', ':' or '-'")
    payload = {"workflow": workflow, "body": body}
    prompt_id = jobs.keyed_prompt_id(HTTP_NAMESPACE, idempotency_key, payload)
    return idempotency.run_once(
        idempotency_key,
        lambda: submit(workflow, body, prompt_id=prompt_id),
        namespace=HTTP_NAMESPACE,
        payload=payload,
        context=context,
    )
