"""GET /api/openapi.json: the API's OpenAPI document.

openapi.json is generated from the repository's openapi.yaml (python -m devtools.openapi):
the layer has no YAML parser, and reading it once per container keeps requests cheap.
"""

import json
from pathlib import Path
from typing import Any

from comfy_core.api import Request, api_handler

SPEC = json.loads((Path(__file__).resolve().parent / "openapi.json").read_text(encoding="utf-8"))


@api_handler
def lambda_handler(request: Request) -> dict[str, Any]:
    return SPEC
