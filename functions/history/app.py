"""GET /api/history?max_items=N: recent ComfyUI history, bounded."""

from comfy_core import status
from comfy_core.api import Request, api_handler
from comfy_core.client import get_client
from comfy_core.config import get_settings


@api_handler
def lambda_handler(request: Request):
    settings = get_settings()
    return status.history(get_client(), request.query.get("max_items"),
                          settings.history_default_items, settings.history_max_items)
