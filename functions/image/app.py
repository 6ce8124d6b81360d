"""GET /api/image/{prompt_id}: the images a finished prompt produced; 404 when none."""

from comfy_core import status, validation
from comfy_core.api import Request, api_handler
from comfy_core.client import get_client


@api_handler
def lambda_handler(request: Request):
    return status.images(get_client(), validation.prompt_id(request.path_params.get("prompt_id")))
