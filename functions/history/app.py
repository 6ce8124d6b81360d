"""GET /api/history?max_items=N&offset=K&include_prompt=true: recent ComfyUI history,
bounded in count and size (see comfy_core.status.history)."""

from __future__ import annotations

from comfy_core import status
from comfy_core.api import Request, api_handler
from comfy_core.comfyui.client import get_client
from comfy_core.config import get_settings


@api_handler
def lambda_handler(request: Request):
    settings = get_settings()
    page = status.history(get_client(), request.query, settings.history_default_items,
                          settings.history_max_items)
    return 200, page.body, page.headers
