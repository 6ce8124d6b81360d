"""GET /api/docs: Swagger UI for this API; GET /api/docs/{asset}: the files that page loads.

Swagger UI's dist files come from the swagger-ui-py package (requirements.txt); the build
keeps only the two the page loads (Makefile). The page loads nothing from another origin:
its files come from here, and swagger-initializer.js reads the spec from GET /api/openapi.json.
"""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path
from typing import Any

from comfy_core.api import error_response
from comfy_core.errors import NotFoundError

HERE = Path(__file__).resolve().parent


def _dist() -> Path:
    # Located, not imported: the package's __init__ would pull in jinja2 and yaml.
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("swagger-ui-py is not installed (functions/docs/requirements.txt)")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


DIST = _dist()
JS = "text/javascript; charset=utf-8"
ASSETS = {
    "swagger-ui-bundle.js": (JS, DIST / "swagger-ui-bundle.js"),
    "swagger-ui.css": ("text/css; charset=utf-8", DIST / "swagger-ui.css"),
    "swagger-initializer.js": (JS, HERE / "swagger-initializer.js"),
}
PAGE = ("text/html; charset=utf-8", HERE / "index.html")

# The browser enforces what the tests check: scripts, styles and requests from this origin only
# (Swagger UI sets inline styles; its icons are data: URIs).
CSP = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
       "frame-ancestors 'none'")


@cache
def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _file(content_type: str, path: Path, cache_control: str) -> dict[str, Any]:
    headers = {"Content-Type": content_type, "Cache-Control": cache_control,
               "X-Content-Type-Options": "nosniff"}
    if content_type.startswith("text/html"):
        headers["Content-Security-Policy"] = CSP
    return {"statusCode": 200, "headers": headers, "body": _read(path), "isBase64Encoded": False}


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    name = ((event or {}).get("pathParameters") or {}).get("asset")
    if name is None:
        return _file(*PAGE, "no-cache")
    if name not in ASSETS:
        known = ", ".join(sorted(ASSETS))
        return error_response(NotFoundError(f"No such file under /api/docs (there are: {known})"))
    # An hour: the files change only with a deployment (the page itself is always revalidated).
    return _file(*ASSETS[name], "public, max-age=3600")
