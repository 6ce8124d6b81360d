"""GET /api/status: ComfyUI's system stats."""

from comfy_core.api import Request, api_handler
from comfy_core.client import get_client


@api_handler
def lambda_handler(request: Request):
    return get_client().system_stats()
