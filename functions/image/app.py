"""GET /api/image/{prompt_id}: a finished prompt's images, with archive links; 404 when none."""

from comfy_core.archive import results
from comfy_core import validation
from comfy_core.api import Request, api_handler
from comfy_core.fleet.placement import get_placements


@api_handler
def lambda_handler(request: Request):
    prompt_id = validation.prompt_id(request.path_params.get("prompt_id"))
    return results.images(get_placements().locate(prompt_id), results.get_archive(), prompt_id)
