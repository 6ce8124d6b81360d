"""POST /api/convert: a UI-format workflow (the editor's Save or Export) to the API-format
prompt ComfyUI runs, converted with the node definitions of the ComfyUI behind the API."""

from comfy_core.workflows import ui as ui_workflows
from comfy_core.api import Request, api_handler


@api_handler
def lambda_handler(request: Request):
    return ui_workflows.convert_request(request.json_object(ui_workflows.MAX_UI_WORKFLOW_BYTES))
