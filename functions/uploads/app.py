"""POST /api/uploads: a presigned S3 PUT for one input image; 201 with where to send it."""

from comfy_core.workflows import inputs
from comfy_core.api import Request, api_handler
from comfy_core.config import get_settings


@api_handler
def lambda_handler(request: Request):
    return 201, inputs.create_upload(request.json_object(), get_settings())
