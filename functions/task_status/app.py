"""GET /api/task_status/{prompt_id}: pending, running (with progress), completed, error or not_found."""

from comfy_core import results, validation
from comfy_core.api import Request, api_handler
from comfy_core.client import get_client


@api_handler
def lambda_handler(request: Request):
    prompt_id = validation.prompt_id(request.path_params.get("prompt_id"))
    return results.task_status_response(get_client(), results.get_archive(), prompt_id)
