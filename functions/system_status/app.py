"""GET /api/status: ComfyUI's system stats (without its command line)."""

from comfy_core import answers
from comfy_core.api import Request, api_handler
from comfy_core.comfyui.client import get_client


@api_handler
def lambda_handler(request: Request):
    return answers.public_system_stats(get_client().system_stats())
