"""GET /api/history?max_items=N&offset=K&include_prompt=true&backend=NAME: recent ComfyUI
history, bounded in count and size (see comfy_core.status.history), merged across a
fleet's backends (comfy_core.fleet.views.history)."""

from __future__ import annotations

from comfy_core.api import Request, api_handler
from comfy_core.config import get_settings
from comfy_core.fleet import views
from comfy_core.fleet.pool import get_fleet


@api_handler
def lambda_handler(request: Request):
    settings = get_settings()
    page = views.history(get_fleet(), request.query, settings.history_default_items,
                         settings.history_max_items)
    return 200, page.body, page.headers
