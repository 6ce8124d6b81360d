"""Runs a workflow job from SQS, S3 (a job file under jobs/), EventBridge or a direct
invocation, exactly like POST /api/workflow/{workflow_name}. See comfy_core.triggers."""

from collections.abc import Callable
from typing import Any

from comfy_core import deadline, triggers
from comfy_core.observability import capture_lambda_handler, logger, metrics

RUNNERS: dict[str, Callable[[Any, Any], Any]] = {
    "sqs": triggers.run_sqs_batch,
    "s3": triggers.run_s3_job,
    "eventbridge": triggers.run_eventbridge_job,
    "direct": triggers.run_direct_job,
}


@capture_lambda_handler
@metrics.log_metrics
# clear_state: job keys appended for one invocation must not leak into the next.
@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: Any, context: Any) -> Any:
    # ComfyUI calls end before the invocation does: a transient error is then raised (and
    # retried) instead of the function being killed mid-job.
    with deadline.from_context(context):
        return RUNNERS[triggers.event_kind(event)](event, context)
