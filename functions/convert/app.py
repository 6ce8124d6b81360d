"""POST /api/convert[?backend=NAME]: a UI-format workflow (the editor's Save or Export) to
the API-format prompt ComfyUI runs, converted with the node definitions of the ComfyUI
behind the API (with a fleet: the named backend, else the first taking prompts)."""

from comfy_core.api import Request, api_handler
from comfy_core.fleet.pool import get_fleet
from comfy_core.workflows import ui as ui_workflows


@api_handler
def lambda_handler(request: Request):
    fleet = get_fleet()
    name = request.query.get("backend")
    backend = fleet.named(name) if name is not None else fleet.first_active()
    body = request.json_object(ui_workflows.MAX_UI_WORKFLOW_BYTES)
    return ui_workflows.convert_request(body, fleet.client(backend))
