"""GET /api/status: ComfyUI's system stats (without its command line); with a fleet, the
first answering backend's, every backend's under `backends` and counts under `fleet`."""

from comfy_core.api import Request, api_handler
from comfy_core.fleet import views
from comfy_core.fleet.pool import get_fleet


@api_handler
def lambda_handler(request: Request):
    return views.system(get_fleet())
