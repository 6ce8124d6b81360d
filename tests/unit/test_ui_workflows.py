"""comfy_core.workflows.ui and ComfyUIClient.object_info: where UI-format workflows meet the
service (the node definitions a conversion uses, and what is cached). No sockets: ComfyUI's
answers come from `responses` or a small fake client."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import responses

from comfy_core.workflows import ui as ui_workflows
from comfy_core.comfyui.client import get_client
from comfy_core.errors import BadRequestError, ComfyUIBadResponseError
from comfy_core.workflows.ui import ConversionCache, ui_document
from tests.conftest import COMFYUI_BASE_URL
from tests.support.recordings import recording, recording_meta
from tests.support.ui_graph import UiGraph


class FakeClient:
    """The one call the conversions make, counted."""

    def __init__(self, info: dict[str, Any], base_url: str = COMFYUI_BASE_URL) -> None:
        self.info = info
        self.base_url = base_url
        self.calls = 0

    def object_info(self) -> dict[str, Any]:
        self.calls += 1
        return copy.deepcopy(self.info)


@pytest.fixture(scope="module")
def object_info() -> dict[str, Any]:
    return recording("object_info_full")


def small_workflow(object_info: dict[str, Any], prefix: str = "x") -> dict[str, Any]:
    g = UiGraph(object_info)
    image = g.node("EmptyImage")
    save = g.node("SaveImage", {"filename_prefix": prefix})
    g.link(image, 0, save, "images")
    return g.document()


@responses.activate
def test_object_info_is_one_get_of_the_recorded_answer() -> None:
    meta = recording_meta("object_info_full")
    responses.get(f"{COMFYUI_BASE_URL}{meta['path']}", json=recording("object_info_full"), status=meta["status"])
    info = get_client().object_info()
    assert info == recording("object_info_full") and len(info) == 496
    assert [call.request.method for call in responses.calls] == ["GET"]


@responses.activate
def test_object_info_that_is_no_object_is_a_broken_answer() -> None:
    responses.get(f"{COMFYUI_BASE_URL}/object_info", json=["KSampler"])
    with pytest.raises(ComfyUIBadResponseError):
        get_client().object_info()


def test_definitions_are_kept_per_backend_for_the_ttl(object_info: dict[str, Any],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    cache = ConversionCache(ttl=300)
    first, second = FakeClient(object_info), FakeClient(object_info, "http://other.test:8188")
    clock = iter([0.0, 10.0, 20.0, 400.0])
    monkeypatch.setattr(ui_workflows.time, "monotonic", lambda: next(clock))
    digest = cache.definitions(first).digest
    assert cache.definitions(first).digest == digest  # 10 s later: cached
    cache.definitions(second)  # another backend has its own
    cache.definitions(first)  # 400 s later: fetched again
    assert (first.calls, second.calls) == (2, 1)


def test_definitions_of_an_unexpected_shape_are_refused(object_info: dict[str, Any]) -> None:
    broken = {**object_info, "KSampler": "not a definition"}
    with pytest.raises(ComfyUIBadResponseError):
        ConversionCache().definitions(FakeClient(broken))


def test_stored_conversions_are_bounded(object_info: dict[str, Any]) -> None:
    cache = ConversionCache(size=2)
    client = FakeClient(object_info)
    for etag in ("a", "b", "c", "a"):
        cache.stored("flow", etag, small_workflow(object_info), client)
    assert cache.conversions == 4  # "a" was dropped for "c", so it was converted again
    cache.stored("flow", "c", small_workflow(object_info), client)
    assert cache.conversions == 4


def test_a_prompt_holding_the_date_is_never_reused(object_info: dict[str, Any]) -> None:
    cache = ConversionCache()
    client = FakeClient(object_info)
    document = small_workflow(object_info, "run_%date:yyyyMMdd-hhmmss%")
    for _ in range(2):
        cache.stored("dated", "etag", document, client)
    assert cache.conversions == 2


@pytest.mark.parametrize(("body", "found"), [
    ({"nodes": [], "links": []}, True),
    ({"workflow": {"nodes": [], "links": []}}, True),
    ({"workflow": {"nodes": []}}, False),
    ({"prompt": {}}, False),
])
def test_ui_document_is_the_body_or_its_workflow(body: dict[str, Any], found: bool) -> None:
    assert (ui_document(body) is not None) is found


def test_convert_request_needs_a_ui_workflow(object_info: dict[str, Any]) -> None:
    client = FakeClient(object_info)
    with pytest.raises(BadRequestError):
        ui_workflows.convert_request({"hello": "world"}, client)  # type: ignore[arg-type]
    answer = ui_workflows.convert_request({"workflow": small_workflow(object_info)}, client)  # type: ignore[arg-type]
    assert set(answer) == {"prompt", "warnings"} and set(answer["prompt"]) == {"1", "2"}
    assert client.calls == 1
