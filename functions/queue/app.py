"""GET /api/queue: running and pending prompt ids with positions (no workflow graphs)."""

from comfy_core import status
from comfy_core.api import Request, api_handler
from comfy_core.comfyui.client import get_client


@api_handler
def lambda_handler(request: Request):
    return status.queue_summary(get_client().queue())
