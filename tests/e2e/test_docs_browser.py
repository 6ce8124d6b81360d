"""GET /api/docs in a real browser: Debian's headless Chromium, driven by Playwright (which
downloads no browser of its own; `make e2e` / `make test` install chromium with apt-get).

Against the local stack `make dev` runs: Swagger UI renders every route of openapi.yaml, and
"Try it out" then "Execute" on GET /api/workflows answers 200. Every request the page makes
stays on the API's own origin (no CDN), and the browser logs no error (the page's
Content-Security-Policy would log one for anything it blocks). With the key enforced, as
deployed, the open page asks for the key, loads the protected spec with it and sends it on
"Try it out". The first test takes a screenshot; with UPDATE_SCREENSHOT=1 it replaces
docs/swagger-ui.png (kept out of ordinary runs: the local port in it changes every time).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from devtools.dev import LocalStack

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = ROOT / "docs" / "swagger-ui.png"
HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
API_KEY = "docs-browser-key"
RESPONSE_ROW = ".live-responses-table tr.response"  # the answer "Execute" got (not the header row)
WAIT_MS = 20_000  # a ceiling for the page (1.5 MB of Swagger UI from the local gateway) to settle
# Headless, no sandbox (CI runs as root), and none of Chromium's own traffic (updates, sync,
# field trials), so every request recorded is the page's.
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium_path() -> str:
    found = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    reason = "no chromium on PATH (Debian: apt-get install chromium; `make e2e` installs it as root)"
    if os.environ.get("CI"):
        pytest.fail(reason)  # CI installs it (make test): a missing browser is a broken machine
    pytest.skip(reason)


def spec_operations() -> list[tuple[str, str, str]]:
    """(method, path, operationId) of every operation in openapi.yaml."""
    spec = yaml.safe_load((ROOT / "openapi.yaml").read_text(encoding="utf-8"))
    return [(method, path, op["operationId"]) for path, item in spec["paths"].items()
            for method, op in item.items() if method in HTTP_METHODS]


class Page:
    """A fresh Chromium profile with one page, recording its requests and errors."""

    def __init__(self, context: Any) -> None:
        self.context = context
        self.page = context.pages[0] if context.pages else context.new_page()
        self.requests: list[Any] = []
        self.errors: list[str] = []
        context.on("request", lambda request: self.requests.append(request))
        self.page.on("console", lambda msg: msg.type == "error" and self.errors.append(msg.text))
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))

    def foreign_requests(self, origin: str) -> list[str]:
        return [request.url for request in self.requests
                if not request.url.startswith("data:") and _origin(request.url) != origin]


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Page]:
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"),  # a fresh --user-data-dir
            executable_path=executable,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1280, "height": 1100},
        )
        try:
            yield Page(context)
        finally:
            context.close()


def assert_every_route_rendered(page: Any) -> None:
    operations = spec_operations()
    page.locator(".opblock").first.wait_for(timeout=WAIT_MS)
    assert page.locator(".opblock").count() == len(operations)
    for method, path, operation_id in operations:
        block = page.locator(f".opblock.opblock-{method}:has(.opblock-summary-path[data-path='{path}'])")
        assert block.count() == 1, (method, path)
        assert block.locator(".opblock-summary-method").inner_text().lower() == method, (method, path)


def try_workflows(page: Any) -> tuple[Any, str]:
    """Expand GET /api/workflows, "Try it out", "Execute": (the API's response, the status shown)."""
    block = page.locator(".opblock.opblock-get:has(.opblock-summary-path[data-path='/api/workflows'])")
    block.locator(".opblock-summary").click()
    block.get_by_role("button", name="Try it out").click()
    with page.expect_response(lambda r: urlsplit(r.url).path.endswith("/api/workflows"),
                              timeout=WAIT_MS) as answer:
        block.get_by_role("button", name="Execute").click()
    shown = block.locator(f"{RESPONSE_ROW} .response-col_status").first
    shown.wait_for(timeout=WAIT_MS)
    block.locator(f"{RESPONSE_ROW} .response-col_description pre").first.wait_for(timeout=WAIT_MS)
    return answer.value, shown.inner_text().strip()


def workflow_names() -> set[str]:
    return {path.stem for path in (ROOT / "workflows").glob("*.json")}


def test_swagger_ui_renders_every_route_and_tries_list_workflows(local_stack: LocalStack, browser: Page,
                                                                 tmp_path: Path) -> None:
    page = browser.page
    origin = _origin(local_stack.api_url)
    page.goto(f"{local_stack.api_url}/api/docs")

    assert_every_route_rendered(page)
    response, shown = try_workflows(page)

    assert response.status == 200 and shown == "200"
    body = response.json()
    assert set(body["workflows"]) >= workflow_names(), body
    shown_body = page.locator(f"{RESPONSE_ROW} .response-col_description pre").first.inner_text()
    assert "empty_save" in shown_body
    # Swagger UI's "Request URL" is this deployment, not a server listed in the spec.
    assert page.locator(".request-url pre").first.inner_text() == f"{local_stack.api_url}/api/workflows"

    assert browser.foreign_requests(origin) == []
    paths = {urlsplit(r.url).path for r in browser.requests}
    assert {"/api/docs", "/api/docs/swagger-ui-bundle.js", "/api/docs/swagger-ui.css",
            "/api/docs/swagger-initializer.js", "/api/openapi.json", "/api/workflows"} <= paths, paths
    assert browser.errors == []
    page.evaluate("window.scrollTo(0, 0)")
    shot = page.screenshot(path=str(tmp_path / "swagger-ui.png"))
    assert shot.startswith(b"\x89PNG")
    if os.environ.get("UPDATE_SCREENSHOT") == "1":
        SCREENSHOT.write_bytes(shot)


@pytest.fixture(scope="module")
def keyed_stack() -> Iterator[LocalStack]:
    # The key enforced where the template requires it, as a deployment does by default.
    with LocalStack(port=0, standin_delay=0, schedule_every=0, api_key=API_KEY) as stack:
        yield stack


def test_with_the_key_required_the_open_page_asks_for_it(keyed_stack: LocalStack, browser: Page) -> None:
    page = browser.page
    with page.expect_response(lambda r: urlsplit(r.url).path == "/api/docs") as opened:
        page.goto(f"{keyed_stack.api_url}/api/docs")
    assert opened.value.status == 200  # the page itself is open
    key_input = page.locator("#api-key")
    key_input.wait_for(timeout=WAIT_MS)

    key_input.fill("a-wrong-key")
    page.get_by_role("button", name="Show the API").click()
    page.get_by_text("That key was refused (403).").wait_for(timeout=WAIT_MS)
    assert page.locator(".opblock").count() == 0

    key_input.fill(API_KEY)
    page.get_by_role("button", name="Show the API").click()
    assert_every_route_rendered(page)
    response, shown = try_workflows(page)

    assert response.status == 200 and shown == "200"
    assert response.request.headers.get("x-api-key") == API_KEY
    assert browser.foreign_requests(_origin(keyed_stack.api_url)) == []
    # The only errors: the browser reporting the spec's 403s (without a key, then a wrong one).
    assert browser.errors and all("403" in error for error in browser.errors), browser.errors
