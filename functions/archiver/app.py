"""Archiver: copies finished prompts' files from ComfyUI to S3 before ComfyUI loses them.

A scheduled event (or any event without `prompt_id`) sweeps recent history of every
backend; `{"prompt_id": "...", "backend": "gpu-a"}` archives that one prompt now (`backend`
optional: without it, or naming no backend of the fleet, the prompt is looked up).
Returns a JSON summary of counts.
"""

from typing import Any

from comfy_core.archive import sweep as archive
from comfy_core import deadline, validation
from comfy_core.errors import BadRequestError
from comfy_core.observability import capture_lambda_handler, logger, metrics


@capture_lambda_handler
@metrics.log_metrics
@logger.inject_lambda_context
def lambda_handler(event: Any, context: Any) -> dict[str, Any]:
    with deadline.from_context(context):
        return _run(event, context)


def _run(event: Any, context: Any) -> dict[str, Any]:
    prompt_id = event.get("prompt_id") if isinstance(event, dict) else None
    if prompt_id is None:
        return archive.run_sweep(seconds_left=deadline.seconds_left(context))
    try:
        prompt_id = validation.prompt_id(prompt_id if isinstance(prompt_id, str) else None)
    except BadRequestError as exc:
        # Returned, not raised: an async invoke would retry a bad id twice for nothing.
        logger.warning("Archive request refused", extra={"error": exc.message})
        return {"status": "invalid", "error": exc.message}
    backend = event.get("backend")
    # A hint only: a name the fleet does not have (or not a string) means "look it up".
    return archive.archive_one(prompt_id, backend=backend if isinstance(backend, str) else None)
