"""DELETE /api/task/{prompt_id}: dequeue a pending prompt or interrupt the running one."""

from comfy_core import status, validation
from comfy_core.api import Request, api_handler
from comfy_core.comfyui.client import get_client


@api_handler
def lambda_handler(request: Request):
    return status.cancel(get_client(), validation.prompt_id(request.path_params.get("prompt_id")))
