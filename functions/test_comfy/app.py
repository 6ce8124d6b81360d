"""GET /api/test_comfy: can the API reach ComfyUI? The seed's answer shape; `comfyui_url`
is ComfyUI's public URL, or null: its internal address is never shown."""

from comfy_core import answers
from comfy_core.api import Request, api_handler
from comfy_core.comfyui.client import get_client
from comfy_core.errors import ComfyUIError


@api_handler
def lambda_handler(request: Request):
    client = get_client()
    url = client.public_url("/system_stats")
    try:
        stats = client.system_stats()
    except ComfyUIError as exc:
        # The seed answered failures with status "error" in the same shape.
        return exc.status_code, {"status": "error", "comfyui_url": url, "error": exc.message,
                                 "status_code": exc.status_code}
    return {"status": "success", "comfyui_url": url, "response": answers.public_system_stats(stats)}
