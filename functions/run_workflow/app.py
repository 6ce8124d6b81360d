"""POST /api/workflow/{workflow_name}: run a stored workflow with the request applied."""

from comfy_core import submission
from comfy_core.api import Request, api_handler


@api_handler
def lambda_handler(request: Request):
    return submission.submit_http(
        request.path_params.get("workflow_name"),
        request.json_object(),
        request.headers.get("idempotency-key"),
        request.context,
    )
