"""The whole API over real sockets: LocalApi -> real handlers -> moto S3 + ComfyUI stand-in.

Routes, handlers and environment all come from template.yaml, so this is what
`make dev` serves.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
import requests

from devtools.dev import LocalStack
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 10  # seconds per HTTP call
POLL_SECONDS = 15  # the stand-in finishes a prompt in ~0.2 s; this is the ceiling
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def sample_workflow_names() -> set[str]:
    return {path.stem for path in (REPO_ROOT / "workflows").glob("*.json")}


def test_lists_the_uploaded_sample_workflows(local_stack: LocalStack) -> None:
    response = requests.get(f"{local_stack.api_url}/api/workflows", timeout=TIMEOUT)

    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    assert sample_workflow_names() <= set(response.json()["workflows"])


def test_run_workflow_poll_status_and_fetch_images(local_stack: LocalStack) -> None:
    api = local_stack.api_url
    submitted = requests.post(f"{api}/api/workflow/empty_save", json={}, timeout=TIMEOUT)
    assert submitted.status_code == 200, submitted.text
    prompt_id = submitted.json()["prompt_id"]
    assert prompt_id

    def finished() -> dict[str, Any] | None:
        answer = requests.get(f"{api}/api/task_status/{prompt_id}", timeout=TIMEOUT)
        assert answer.status_code == 200, answer.text
        status = answer.json()
        return status if status.get("status") in ("completed", "error") else None

    # Bounded poll: a stuck prompt fails the test instead of hanging it.
    status = wait_for(finished, POLL_SECONDS, interval=0.1, what="prompt finished")
    assert status["status"] == "completed", status

    listed = requests.get(f"{api}/api/image/{prompt_id}", timeout=TIMEOUT)
    assert listed.status_code == 200, listed.text
    images = listed.json()["images"]
    assert images
    for image in images:
        fetched = requests.get(image["url"], timeout=TIMEOUT)
        assert fetched.status_code == 200
        assert fetched.content.startswith(PNG_MAGIC)


def test_the_original_call_flow_ends_with_archived_bytes_equal_to_comfyui(local_stack: LocalStack) -> None:
    """The seed's flow: list → run (simple format) → poll → /api/image → download.
    task_status asks the archiver (lambda.invoke, Event) to copy the prompt; the local
    Lambda endpoint runs it, so download_url points at moto and serves ComfyUI's bytes."""
    api = local_stack.api_url
    assert "text_label" in requests.get(f"{api}/api/workflows", timeout=TIMEOUT).json()["workflows"]
    submitted = requests.post(
        f"{api}/api/workflow/text_label", json={"prompt": "a lighthouse at dawn"}, timeout=TIMEOUT
    ).json()
    prompt_id = submitted["prompt_id"]

    def archived() -> list[dict[str, Any]] | None:
        status = requests.get(f"{api}/api/task_status/{prompt_id}", timeout=TIMEOUT).json()
        images = status.get("images") or []
        return images if images and all(image.get("download_url") for image in images) else None

    wait_for(archived, POLL_SECONDS, interval=0.2, what="every image archived with a download_url")

    answer = requests.get(f"{api}/api/image/{prompt_id}", timeout=TIMEOUT).json()
    # The prompt reached ComfyUI: the text workflow names its file after it.
    assert [i["filename"][: -len("_00001_.png")] for i in answer["images"]] == ["a_lighthouse_at_dawn"]
    for image in answer["images"]:
        assert image["archived"] is True
        assert image["download_url"].startswith(local_stack.s3_endpoint)
        fetched = requests.get(image["download_url"], timeout=TIMEOUT)
        assert fetched.status_code == 200
        assert fetched.content.startswith(PNG_MAGIC)
        assert fetched.content == requests.get(image["url"], timeout=TIMEOUT).content


NO_ROUTE = {"error": "No such route (path or method)", "status_code": 404}


def test_unknown_route_is_a_404_in_the_envelope(local_stack: LocalStack) -> None:
    """The template's GatewayResponses turn a REST API's 403 "Missing Authentication Token"
    into a 404 with the API's error envelope; the local gateway applies them."""
    response = requests.get(f"{local_stack.api_url}/api/no_such_route", timeout=TIMEOUT)

    assert response.status_code == 404
    assert response.json() == NO_ROUTE


def test_known_path_with_wrong_method_is_a_404(local_stack: LocalStack) -> None:
    response = requests.delete(f"{local_stack.api_url}/api/workflows", timeout=TIMEOUT)

    assert response.status_code == 404
    assert response.json() == NO_ROUTE


def _port_open(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_stack_stops_cleanly_and_restarts_on_the_same_port(local_stack: LocalStack) -> None:
    # Reuse the module's ComfyUI: this test is about the API and moto lifecycle.
    comfyui = local_stack.standin.base_url
    first = LocalStack(port=0, comfyui_base_url=comfyui).start()
    port = first.api.port
    lambda_port = first.lambda_api.port
    moto_endpoint = first.moto_endpoint
    try:
        assert requests.get(f"{first.api_url}/api/workflows", timeout=TIMEOUT).status_code == 200
    finally:
        first.stop()
    assert not _port_open(port)
    assert not _port_open(lambda_port)
    assert moto_endpoint != local_stack.moto_endpoint
    assert not _port_open(int(moto_endpoint.rsplit(":", 1)[1]))

    # Right after a stop the same port can be bound again (SO_REUSEADDR).
    with LocalStack(port=port, comfyui_base_url=comfyui) as second:
        assert second.api.port == port
        # No reset by hand: start() drops the S3 client built for the first stack's moto.
        assert requests.get(f"{second.api_url}/api/workflows", timeout=TIMEOUT).status_code == 200
    assert not _port_open(port)
