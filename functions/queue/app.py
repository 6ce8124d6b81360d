"""GET /api/queue: running and pending prompt ids with positions (no workflow graphs), in
total and per ComfyUI backend."""

from comfy_core.api import Request, api_handler
from comfy_core.fleet import views
from comfy_core.fleet.pool import get_fleet


@api_handler
def lambda_handler(request: Request):
    return views.queue(get_fleet())
