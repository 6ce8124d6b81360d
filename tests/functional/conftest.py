"""Handler tier: each lambda_handler fed API Gateway events, S3 from moto in-process,
ComfyUI from recorded answers through FakeComfySession."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from comfy_core.observability import logger
from tests.support.fake_comfy import FakeComfySession, use_session
from tests.support.handlers import ROOT

WORKFLOWS = ROOT / "workflows"


@pytest.fixture
def s3() -> Iterator[Any]:
    """moto's S3 with the sample workflows uploaded (credentials and region: tests/conftest.py)."""
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="workflow-bucket")
        for path in sorted(WORKFLOWS.glob("*.json")):
            s3.put_object(Bucket="workflow-bucket", Key=f"workflows/{path.name}", Body=path.read_bytes())
        yield s3


@pytest.fixture
def comfy(monkeypatch: pytest.MonkeyPatch) -> FakeComfySession:
    """The ComfyUI the handlers talk to; tests set `comfy.routes`."""
    session = FakeComfySession()
    use_session(monkeypatch, session)
    return session


class CapturedLogs:
    """What the handlers' logger wrote during the test: `text()` all of it, and calling the
    object gives the JSON log lines, parsed."""

    def __init__(self, buffer: io.StringIO) -> None:
        self._buffer = buffer

    def text(self) -> str:
        return self._buffer.getvalue()

    def __call__(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.text().splitlines()
                if line.startswith("{") and '"level"' in line]


@pytest.fixture
def logs() -> Iterator[CapturedLogs]:
    """The handler's stream is swapped for a buffer (Powertools binds sys.stdout when the
    logger is created, before capsys exists)."""
    buffer = io.StringIO()
    previous = logger.registered_handler.setStream(buffer)
    yield CapturedLogs(buffer)
    logger.registered_handler.setStream(previous)


@pytest.fixture
def debug_logging() -> Iterator[None]:
    """The handlers' logger at DEBUG, its most talkative setting, for the test."""
    previous = logger.log_level
    logger.setLevel("DEBUG")
    yield
    logger.setLevel(previous)
