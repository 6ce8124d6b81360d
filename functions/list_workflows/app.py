"""GET /api/workflows: workflow names in the workflow bucket, sorted."""

from comfy_core.api import Request, api_handler
from comfy_core.workflows.store import get_store


@api_handler
def lambda_handler(request: Request):
    return {"workflows": get_store().list_names()}
