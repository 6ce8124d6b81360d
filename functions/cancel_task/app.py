"""DELETE /api/task/{prompt_id}: dequeue a pending prompt or interrupt the running one."""

from comfy_core import status, validation
from comfy_core.api import Request, api_handler
from comfy_core.fleet.placement import get_placements


@api_handler
def lambda_handler(request: Request):
    prompt_id = validation.prompt_id(request.path_params.get("prompt_id"))
    return status.cancel(get_placements().locate(prompt_id).client, prompt_id)
