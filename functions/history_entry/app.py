"""GET /api/history/{prompt_id}: one prompt's history entry, from ComfyUI or the archive."""

from comfy_core.archive import results
from comfy_core import validation
from comfy_core.api import Request, api_handler
from comfy_core.fleet.placement import get_placements


@api_handler
def lambda_handler(request: Request):
    prompt_id = validation.prompt_id(request.path_params.get("prompt_id"))
    return results.history_entry(get_placements().locate(prompt_id), results.get_archive(), prompt_id)
