"""comfy_core.workflows.store: the S3 workflow store, against moto's in-process S3."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from moto import mock_aws

from comfy_core.workflows import store as workflows
from comfy_core.config import get_settings
from comfy_core.errors import (
    BadRequestError,
    ConfigurationError,
    NotFoundError,
    StorageError,
    WorkflowFormatError,
)
from comfy_core.storage import s3_client
from comfy_core.workflows.store import WorkflowStore, get_store
from tests.support.recordings import workflow

BUCKET = "workflow-bucket"
PREFIX = "workflows/"
EMPTY_SAVE = workflow("empty_save.json")


@pytest.fixture
def s3() -> Iterator[Any]:
    # No AWS_ENDPOINT_URL*: tests/conftest.py unsets them, so moto intercepts every call.
    with mock_aws():
        client = s3_client()
        client.create_bucket(Bucket=BUCKET)
        yield client


@pytest.fixture
def store(s3: Any) -> WorkflowStore:
    return get_store()


def put(s3: Any, key: str, body: Any) -> None:
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    s3.put_object(Bucket=BUCKET, Key=key, Body=data)


def test_list_names_sorted_and_filtered(s3: Any, store: WorkflowStore) -> None:
    for key in (
        "workflows/zeta.json",
        "workflows/alpha.json",
        "workflows/Beta_2.json",
        "workflows/readme.txt",
        "workflows/alpha.json.bak",
        "workflows/sub/nested.json",
        "workflows/-dash.json",
        "workflows/.json",
        "workflows/",
        "other/outside.json",
        "workflowsX/near.json",
    ):
        put(s3, key, EMPTY_SAVE)
    assert store.list_names() == ["Beta_2", "alpha", "zeta"]


def test_list_names_of_an_empty_prefix(store: WorkflowStore) -> None:
    assert store.list_names() == []


def test_list_names_pages_through_many_objects(s3: Any, store: WorkflowStore) -> None:
    names = [f"wf{i:04d}" for i in range(1005)]
    for name in names:
        s3.put_object(Bucket=BUCKET, Key=f"{PREFIX}{name}.json", Body=b"{}")
    assert store.list_names() == names


@pytest.mark.parametrize("document", [EMPTY_SAVE, {"prompt": EMPTY_SAVE}])
def test_load_bare_and_wrapped(s3: Any, store: WorkflowStore, document: Any) -> None:
    put(s3, "workflows/empty_save.json", document)
    assert store.load("empty_save") == EMPTY_SAVE
    assert store.downloads == 1


def test_load_unknown_is_not_found(store: WorkflowStore) -> None:
    with pytest.raises(NotFoundError) as caught:
        store.load("missing")
    assert caught.value.status_code == 404
    assert "missing" in caught.value.message


@pytest.mark.parametrize("name", ["../x", "", "a" * 129, "a/b", ".hidden", "a..b", "a b"])
def test_invalid_name_is_refused_before_any_s3_call(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    def no_s3() -> Any:
        raise AssertionError("S3 was called for an invalid name")

    monkeypatch.setattr(workflows, "s3_client", no_s3)
    store = WorkflowStore(get_settings())
    with pytest.raises(BadRequestError) as caught:
        store.load(name)
    assert caught.value.status_code == 400


def test_longest_valid_name_loads(s3: Any, store: WorkflowStore) -> None:
    name = "a" * 128
    put(s3, f"{PREFIX}{name}.json", EMPTY_SAVE)
    assert store.load(name) == EMPTY_SAVE


def test_unchanged_workflow_is_not_downloaded_again(s3: Any, store: WorkflowStore) -> None:
    put(s3, "workflows/empty_save.json", EMPTY_SAVE)
    first = store.load("empty_save")
    second = store.load("empty_save")
    assert second == first == EMPTY_SAVE
    assert store.downloads == 1


def test_changed_workflow_is_downloaded_again(s3: Any, store: WorkflowStore) -> None:
    put(s3, "workflows/empty_save.json", EMPTY_SAVE)
    assert store.load("empty_save")["1"]["inputs"]["width"] == 64
    changed = json.loads(json.dumps(EMPTY_SAVE))
    changed["1"]["inputs"]["width"] = 128
    put(s3, "workflows/empty_save.json", changed)
    assert store.load("empty_save")["1"]["inputs"]["width"] == 128
    assert store.downloads == 2
    assert store.load("empty_save")["1"]["inputs"]["width"] == 128
    assert store.downloads == 2


def test_deleted_workflow_is_not_served_from_the_cache(s3: Any, store: WorkflowStore) -> None:
    put(s3, "workflows/empty_save.json", EMPTY_SAVE)
    store.load("empty_save")
    s3.delete_object(Bucket=BUCKET, Key="workflows/empty_save.json")
    with pytest.raises(NotFoundError):
        store.load("empty_save")


@pytest.mark.parametrize("body", [b"{not json", b"\xff\xfe\x00", b""])
def test_invalid_json_is_a_format_error(s3: Any, store: WorkflowStore, body: bytes) -> None:
    put(s3, "workflows/broken.json", body)
    with pytest.raises(WorkflowFormatError) as caught:
        store.load("broken")
    assert caught.value.status_code == 422


def test_ui_format_file_is_a_format_error(s3: Any, store: WorkflowStore) -> None:
    put(s3, "workflows/ui.json", {"nodes": [], "links": [], "version": 0.4})
    with pytest.raises(WorkflowFormatError, match="Save \\(API Format\\)"):
        store.load("ui")


def test_prefix_is_honoured(s3: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKFLOW_PREFIX", "/team/flows")
    get_settings.cache_clear()
    store = WorkflowStore(get_settings())
    assert store.key("x") == "team/flows/x.json"
    put(s3, "team/flows/x.json", EMPTY_SAVE)
    put(s3, "workflows/y.json", EMPTY_SAVE)
    assert store.list_names() == ["x"]
    assert store.load("x") == EMPTY_SAVE


def test_missing_bucket_setting_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKFLOW_BUCKET", "")
    with pytest.raises(ConfigurationError) as caught:
        get_store()
    assert caught.value.status_code == 500


def test_missing_bucket_is_a_storage_error(s3: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKFLOW_BUCKET", "no-such-bucket")
    store = WorkflowStore(get_settings())
    with pytest.raises(StorageError) as caught:
        store.list_names()
    assert caught.value.status_code == 503
    with pytest.raises(StorageError):
        store.load("anything")


def test_listed_names_are_all_loadable(s3: Any, store: WorkflowStore) -> None:
    put(s3, "workflows/good.json", EMPTY_SAVE)
    put(s3, "workflows/v1..2.json", EMPTY_SAVE)
    for name in store.list_names():
        assert store.load(name) == EMPTY_SAVE
