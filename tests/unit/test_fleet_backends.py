"""The fleet's backends (COMFYUI_BASE_URL's list and the SSM registry), what a backend can
run (routing.fit against the recorded /object_info), and the submission's failover rule:
only a connection never made moves a prompt to the next backend."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from comfy_core import jobs, reset_container_state
from comfy_core.config import Settings
from comfy_core.errors import ComfyUITimeoutError, ConfigurationError
from comfy_core.fleet import backends, routing
from comfy_core.fleet.backends import Backend, Registry
from comfy_core.fleet.pool import get_fleet
from tests.support.recordings import recording


def settings(base: str, **changes: Any) -> Settings:
    return Settings(comfyui_base_url=base, comfyui_public_url=changes.pop("public", ""), workflow_bucket="",
                    workflow_prefix="workflows/", connect_timeout=1.0, read_timeout=1.0, get_retries=0,
                    max_body_bytes=1_000_000, history_default_items=20, history_max_items=100, **changes)


# -- COMFYUI_BASE_URL --------------------------------------------------------------------------
def test_one_url_is_the_default_backend_as_before() -> None:
    [only] = backends.from_settings(settings("http://10.0.0.5:8188"))
    assert (only.name, only.base_url, only.draining) == ("default", "http://10.0.0.5:8188", False)


def test_a_list_names_each_backend_by_its_given_name_or_its_host_and_port() -> None:
    found = backends.from_settings(settings("gpu-a=http://10.0.0.5:8188/,http://gpu-b.internal:8188",
                                            public="https://a.example.com,https://b.example.com"))
    assert [(b.name, b.base_url, b.public_url) for b in found] == [
        ("gpu-a", "http://10.0.0.5:8188", "https://a.example.com"),
        ("gpu-b-internal-8188", "http://gpu-b.internal:8188", "https://b.example.com"),
    ]


def test_one_public_url_and_auth_parameter_serve_every_backend() -> None:
    found = backends.from_settings(settings("http://a:1,http://b:2", public="https://p.example.com",
                                            comfyui_auth_parameter="comfy/token"))
    assert {(b.public_url, b.auth_parameter) for b in found} == {("https://p.example.com", "comfy/token")}


@pytest.mark.parametrize(("base", "public", "words"), [
    ("http://a:1,http://a:1", "", "unique"),
    ("ftp://a:1", "", "http(s)"),
    ("Bad_Name=http://a:1,http://b:2", "", "lowercase"),
    ("http://a:1,http://b:2,http://c:3", "https://x,https://y", "2 values given for 3 backends"),
    (" , ", "", "names no ComfyUI"),
])
def test_a_bad_list_is_a_configuration_error_naming_the_problem(base: str, public: str, words: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        backends.from_settings(settings(base, public=public))
    assert words in caught.value.message


# -- the registry ------------------------------------------------------------------------------
REGISTRY = "comfy/backends"


@pytest.fixture
def ssm() -> Iterator[Any]:
    with mock_aws():
        yield boto3.client("ssm", region_name="us-east-1")


def put(ssm: Any, document: Any) -> None:
    ssm.put_parameter(Name=f"/{REGISTRY}", Type="String", Value=json.dumps(document), Overwrite=True)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_registry_replaces_the_env_list_and_is_read_once_per_cache_period(ssm) -> None:
    put(ssm, {"backends": [{"name": "gpu-a", "url": "http://a:8188", "drain": True,
                            "auth_parameter": f"{REGISTRY}/gpu-a", "public_url": "https://a.example.com/"}]})
    clock = Clock()
    registry = Registry(settings("http://env:1", comfyui_backends_parameter=REGISTRY), clock=clock)
    assert registry.backends() == [Backend("gpu-a", "http://a:8188", "https://a.example.com",
                                           "Authorization", f"{REGISTRY}/gpu-a", True)]
    put(ssm, {"backends": [{"name": "gpu-b", "url": "http://b:8188"}]})
    clock.now = 29.0
    assert registry.backends()[0].name == "gpu-a" and registry.reads == 1  # cached
    clock.now = 30.0
    assert [b.name for b in registry.backends()] == ["gpu-b"] and registry.reads == 2


def test_a_broken_registry_keeps_the_last_good_list(ssm) -> None:
    put(ssm, [{"name": "gpu-a", "url": "http://a:8188"}])
    clock = Clock()
    registry = Registry(settings("http://env:1", comfyui_backends_parameter=REGISTRY), clock=clock)
    assert [b.name for b in registry.backends()] == ["gpu-a"]
    for broken in ({"backends": []}, [{"name": "x"}], [{"name": "a", "url": "http://a:1"}] * 2):
        put(ssm, broken)
        clock.now += 60
        assert [b.name for b in registry.backends()] == ["gpu-a"]
    ssm.put_parameter(Name=f"/{REGISTRY}", Type="String", Value="{not json", Overwrite=True)
    clock.now += 60
    assert [b.name for b in registry.backends()] == ["gpu-a"]


def test_an_unreadable_registry_at_start_falls_back_to_the_env_list(ssm) -> None:
    registry = Registry(settings("http://env:1", comfyui_backends_parameter="no/such/parameter"))
    assert [b.base_url for b in registry.backends()] == ["http://env:1"]


def test_a_registry_auth_secret_must_live_under_the_registry_name() -> None:
    """The template lets the functions read parameters under the registry's name only."""
    with pytest.raises(ConfigurationError) as caught:
        backends.parse_registry([{"name": "a", "url": "http://a:1", "auth_parameter": "elsewhere/token"}],
                                settings("http://env:1", comfyui_backends_parameter=REGISTRY))
    assert f"under {REGISTRY}/" in caught.value.message


# -- what a backend can run ----------------------------------------------------------------------
INFO = recording("object_info_full")


def test_fit_names_missing_node_types_and_list_values_but_not_uploaded_images() -> None:
    prompt = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd15.safetensors"}},
        "2": {"class_type": "LoadImage", "inputs": {"image": "whatever-the-user-uploads.png"}},
        "3": {"class_type": "KSampler", "inputs": {"sampler_name": "euler", "scheduler": "normal",
                                                   "model": ["1", 0]}},
        "4": {"class_type": "MyCustomNode", "inputs": {}},
        "5": {"class_type": "MyCustomNode", "inputs": {}},
    }
    found = routing.fit(prompt, INFO)
    assert found.missing_nodes == ["MyCustomNode"]
    assert found.missing_models == [{"node": "1", "class_type": "CheckpointLoaderSimple",
                                     "input": "ckpt_name", "value": "sd15.safetensors"}]
    info = {**INFO, "CheckpointLoaderSimple": {"input": {"required": {
        "ckpt_name": ["COMBO", {"options": ["sd15.safetensors"]}]}}}}  # the newer list form
    assert routing.fit({"1": prompt["1"]}, info).missing_models == []


# -- failover --------------------------------------------------------------------------------------
class Silent:
    """A socket that accepts connections and never answers: a POST sent there may be queued."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.accepted: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.server.accept()
            except OSError:
                return
            self.accepted.append(connection)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.getsockname()[1]}"


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


@pytest.fixture
def two_backends(monkeypatch, tmp_path) -> Iterator[Any]:
    from devtools.comfyui_standin import ComfyUIStandIn

    alive = ComfyUIStandIn(tmp_path).start()
    yield alive
    alive.stop()


def submit_with(monkeypatch, first_url: str, alive: Any) -> dict[str, Any]:
    monkeypatch.setenv("COMFYUI_BASE_URL", f"first={first_url},alive={alive.base_url}")
    monkeypatch.setenv("COMFYUI_READ_TIMEOUT", "1")
    reset_container_state()
    fleet = get_fleet()
    order = [(fleet.find("first"), 0), (fleet.find("alive"), 0)]
    monkeypatch.setattr(routing.Router, "candidates", lambda self, prompt: order)

    class Store:
        def fetch(self, name: str) -> Any:
            from comfy_core.workflows.store import StoredWorkflow

            return StoredWorkflow(name, "etag", {"1": {"class_type": "EmptyImage", "inputs": {
                "width": 8, "height": 8, "batch_size": 1, "color": 0}},
                "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}})

    return jobs.run_workflow(Store(), "w", {})


def test_a_backend_refusing_the_connection_passes_the_prompt_to_the_next(monkeypatch, two_backends) -> None:
    answer = submit_with(monkeypatch, closed_port_url(), two_backends)
    assert answer["backend"] == "alive"
    assert two_backends.requests.count(("POST", "/prompt")) == 1


def test_a_backend_that_times_out_keeps_the_prompt_it_may_have(monkeypatch, two_backends) -> None:
    silent = Silent()
    with pytest.raises(ComfyUITimeoutError) as caught:
        submit_with(monkeypatch, silent.url, two_backends)
    assert caught.value.extra["prompt_id"]  # the client can follow it
    assert ("POST", "/prompt") not in two_backends.requests  # never sent to a second backend
