"""One IAM-enforcing moto server and one ComfyUI stand-in for the whole tier (and a second
one, the fleet's other backend, for the registry scenario); one stack of roles per parameter
set, built on first use (see tests/support/iam.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from devtools.comfyui_standin import ComfyUIStandIn
from tests.support.handlers import ROOT
from tests.support.iam import SCENARIOS, IamStack
from tests.support.iam_moto import IamMotoServer


@pytest.fixture(scope="package", autouse=True)
def one_model_loader() -> Iterator[None]:
    """Every botocore session of this tier shares one loader of service models. Each run
    is a new "container" (new sessions, so no credentials leak between roles), and loading
    the JSON models again for each would cost a fifth of a second per client."""
    import botocore.session

    loaders: dict[Any, Any] = {}
    create_loader = botocore.session.create_loader

    def shared(search_path: Any = None) -> Any:
        if search_path not in loaders:
            loaders[search_path] = create_loader(search_path)
        return loaders[search_path]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(botocore.session, "create_loader", shared)
        yield


@pytest.fixture(scope="session")
def iam_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IamMotoServer]:
    with IamMotoServer(tmp_path_factory.mktemp("iam") / "decisions.jsonl") as server:
        yield server


@pytest.fixture(scope="session")
def standin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComfyUIStandIn]:
    server = ComfyUIStandIn(root_dir=tmp_path_factory.mktemp("comfyui"), delay=0.0).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def second_standin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComfyUIStandIn]:
    """The fleet's other backend (registry scenario): prompts go to either."""
    server = ComfyUIStandIn(root_dir=tmp_path_factory.mktemp("comfyui-b"), delay=0.0).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def stacks(iam_server: IamMotoServer, standin: ComfyUIStandIn,
           second_standin: ComfyUIStandIn) -> Callable[..., IamStack]:
    """`stacks(name, **parameters)`: that stack, built once per session. A stack with a
    backends registry lists `standin` (gpu-a) and `second_standin` (gpu-b) in it."""
    built: dict[str, IamStack] = {}

    def get(name: str, **parameters: str) -> IamStack:
        if name not in built:
            values = {"ComfyUIBaseUrl": standin.base_url, **SCENARIOS.get(name, {}), **parameters}
            backends = None
            if values.get("ComfyUIBackendsParameter"):
                backends = {"gpu-a": standin.base_url, "gpu-b": second_standin.base_url}
            built[name] = IamStack(iam_server, name, values, backends).build(ROOT / "workflows")
        return built[name]

    return get


@pytest.fixture(scope="module", params=list(SCENARIOS))
def stack(request: Any, stacks: Callable[..., IamStack]) -> IamStack:
    return stacks(request.param)
