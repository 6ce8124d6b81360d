"""Every API function answers its own sample event (the file `sam local invoke -e` uses)
with a documented status and the JSON the seed's clients expect."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.handlers import event, invoke
from tests.support.lambda_context import FakeLambdaContext
from tests.support.recordings import recording
from tests.support.sam import api_routes, functions, load_template

PID = "11111111-2222-3333-4444-555555555555"


def api_functions() -> list[str]:
    """The folders of the functions serving an API route."""
    template = load_template()
    served = {name for _, _, name in api_routes(template)}
    return sorted(Path(functions(template)[name]["Properties"]["CodeUri"]).name for name in served)


# docs answers a web page, not JSON: its sample event has a test of its own below.
@pytest.mark.parametrize("function", [name for name in api_functions() if name != "docs"])
def test_sample_event_gets_a_successful_answer(function, s3, comfy, monkeypatch):
    monkeypatch.setenv("IMAGE_BUCKET", "image-bucket")  # uploads are signed for it
    comfy.routes.update({
        ("GET", "/system_stats"): (200, recording("system_stats")),
        ("GET", "/queue"): (200, recording("queue_empty")),
        ("GET", "/history"): (200, recording("history_max_items_1")),
        ("GET", f"/history/{PID}"): (200, recording("history_id_success_preview")),
        ("POST", "/prompt"): (200, recording("prompt_success")),
        ("GET", "/object_info"): (200, recording("object_info_full")),
    })
    status, body = invoke(function, event(function))
    assert status == (201 if function == "uploads" else 200), body
    assert isinstance(body, dict) and body
    if "status" in body and function != "system_status":
        assert body["status"] in ("success", "completed", "finished")


def test_advanced_format_sample_event(s3, comfy):
    comfy.routes[("POST", "/prompt")] = (200, recording("prompt_success"))
    status, body = invoke("run_workflow", event("run_workflow_advanced"))
    assert status == 200 and body["status"] == "success"
    sent = comfy.calls[-1]["json"]["prompt"]
    assert (sent["1"]["inputs"]["width"], sent["1"]["inputs"]["height"]) == (128, 96)


def test_docs_sample_event_gets_the_swagger_ui_page():
    from functions.docs import app

    response = app.lambda_handler(event("docs"), FakeLambdaContext())
    assert response["statusCode"] == 200
    assert response["headers"]["Content-Type"] == "text/html; charset=utf-8"
    assert '<div id="swagger-ui">' in response["body"]
    # Relative, so the page works under the stage prefix (/dev/api/docs -> /dev/api/docs/...).
    assert '<script src="docs/swagger-ui-bundle.js">' in response["body"]
