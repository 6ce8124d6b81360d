"""Handler tier: each lambda_handler fed API Gateway events, S3 from moto in-process,
ComfyUI from recorded answers through FakeComfySession."""

from __future__ import annotations

import copy
import importlib
import json
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from comfy_core import client as client_module
from tests.support.fake_comfy import FakeComfySession
from tests.support.lambda_context import FakeLambdaContext

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "events"
WORKFLOWS = ROOT / "workflows"


@pytest.fixture
def s3(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="workflow-bucket")
        for path in sorted(WORKFLOWS.glob("*.json")):
            s3.put_object(Bucket="workflow-bucket", Key=f"workflows/{path.name}", Body=path.read_bytes())
        yield s3


@pytest.fixture
def comfy(monkeypatch) -> FakeComfySession:
    """The ComfyUI the handlers talk to; tests set `comfy.routes`."""
    session = FakeComfySession()
    # The client itself is built on first use, from the settings in force then.
    monkeypatch.setattr(client_module, "_new_session", lambda settings: session)
    return session


def event(name: str, **changes: Any) -> dict[str, Any]:
    """A sample event from events/, with top-level fields replaced."""
    data = json.loads((EVENTS / f"{name}.json").read_text())
    for key, value in changes.items():
        data[key] = copy.deepcopy(value)
    return data


def invoke(function: str, evt: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    module = importlib.import_module(f"functions.{function}.app")
    response = module.lambda_handler(evt, FakeLambdaContext())
    assert response["headers"]["Content-Type"] == "application/json"
    return response["statusCode"], json.loads(response["body"])
