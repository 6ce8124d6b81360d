"""GET /api/test_comfy: can the API reach ComfyUI? The seed's answer shape; `comfyui_url`
is ComfyUI's public URL, or null: its internal address is never shown. With a fleet,
every backend's verdict too (comfy_core.fleet.views.test)."""

from comfy_core.api import Request, api_handler
from comfy_core.fleet import views
from comfy_core.fleet.pool import get_fleet


@api_handler
def lambda_handler(request: Request):
    return views.test(get_fleet())
