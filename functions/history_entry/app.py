"""GET /api/history/{prompt_id}: one prompt's history entry; 404 when ComfyUI has none."""

from comfy_core import status, validation
from comfy_core.api import Request, api_handler
from comfy_core.client import get_client


@api_handler
def lambda_handler(request: Request):
    return status.history_entry(get_client(), validation.prompt_id(request.path_params.get("prompt_id")))
