"""POST /api/workflow/{workflow_name}: run a stored workflow with the request applied."""

from aws_lambda_powertools.metrics import MetricUnit

from comfy_core import jobs, notify
from comfy_core.api import Request, api_handler
from comfy_core.client import get_client
from comfy_core.errors import ComfyUIRejectedError
from comfy_core.observability import metrics
from comfy_core.workflows import get_store


@api_handler
def lambda_handler(request: Request):
    body = request.json_object()
    try:
        answer = jobs.run_workflow(get_client(), get_store(), request.path_params.get("workflow_name"), body)
    except ComfyUIRejectedError:
        metrics.add_metric(name="PromptRejected", unit=MetricUnit.Count, value=1)
        raise
    metrics.add_metric(name="PromptSubmitted", unit=MetricUnit.Count, value=1)
    notify.prompt_submitted(answer, workflow=request.path_params.get("workflow_name"))
    return answer
