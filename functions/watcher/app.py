"""Live watcher: holds ComfyUI's WebSocket for most of its invocation and archives each
prompt the moment it finishes (started every minute by a schedule; one runs at a time)."""

from typing import Any

from comfy_core import deadline
from comfy_core.live import watcher
from comfy_core.observability import capture_lambda_handler, logger, metrics


@capture_lambda_handler
@metrics.log_metrics
@logger.inject_lambda_context
def lambda_handler(event: Any, context: Any) -> dict[str, Any]:
    with deadline.from_context(context):
        return watcher.run_watcher(getattr(context, "aws_request_id", None), deadline.seconds_left(context))
