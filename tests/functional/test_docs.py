"""GET /api/docs/{asset}: Swagger UI's files from the installed package, with the content types
a browser needs (nosniff), and the page's policy that keeps it on this origin."""

from __future__ import annotations

import json

import pytest

from functions.docs import app
from tests.support.handlers import event
from tests.support.lambda_context import FakeLambdaContext


def get(asset: str | None) -> dict:
    evt = event("docs", resource="/api/docs/{asset}" if asset else "/api/docs",
                pathParameters={"asset": asset} if asset else None)
    return app.lambda_handler(evt, FakeLambdaContext())


@pytest.mark.parametrize(("asset", "content_type", "marker"), [
    ("swagger-ui-bundle.js", "text/javascript; charset=utf-8", "SwaggerUIBundle"),
    ("swagger-ui.css", "text/css; charset=utf-8", ".swagger-ui"),
    ("swagger-initializer.js", "text/javascript; charset=utf-8", "preauthorizeApiKey"),
])
def test_each_asset_is_served_with_its_content_type(asset: str, content_type: str, marker: str) -> None:
    response = get(asset)
    assert response["statusCode"] == 200
    assert response["headers"]["Content-Type"] == content_type
    assert response["headers"]["X-Content-Type-Options"] == "nosniff"
    assert response["isBase64Encoded"] is False and marker in response["body"]


def test_every_file_the_page_loads_is_served() -> None:
    page = get(None)["body"]
    for asset in app.ASSETS:
        assert f'"docs/{asset}"' in page, asset


def test_the_page_may_load_nothing_from_another_origin() -> None:
    policy = get(None)["headers"]["Content-Security-Policy"]
    directives = dict(part.strip().split(" ", 1) for part in policy.split(";"))
    assert directives["default-src"] == "'none'"
    for name in ("script-src", "connect-src"):
        assert directives[name] == "'self'", name
    assert "http" not in policy


@pytest.mark.parametrize("asset", ["index.html", "../app.py", "app.py", "swagger-ui-bundle.js.map",
                                   "LICENSE"])
def test_anything_else_is_a_404_envelope(asset: str) -> None:
    response = get(asset)
    assert response["statusCode"] == 404
    assert response["headers"]["Content-Type"] == "application/json"
    assert json.loads(response["body"])["status_code"] == 404
