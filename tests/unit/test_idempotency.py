"""comfy_core.idempotency alone: work runs once per (namespace, key) within the TTL, over
the DynamoDB table the template declares (moto in-process)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from comfy_core import idempotency
from comfy_core.config import get_settings
from comfy_core.errors import (
    ComfyUIUnreachableError,
    DuplicateInProgressError,
    IdempotencyKeyReusedError,
    StorageError,
)
from tests.support.jobs import IDEMPOTENCY_TABLE, create_idempotency_table
from tests.support.lambda_context import FakeLambdaContext


@pytest.fixture
def table(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("IDEMPOTENCY_TABLE", IDEMPOTENCY_TABLE)
    monkeypatch.setenv("IDEMPOTENCY_EXPIRY_SECONDS", "3600")
    get_settings.cache_clear()
    with mock_aws():
        create_idempotency_table()
        yield boto3.client("dynamodb", region_name="us-east-1")


def once(key: str, work: Any, **options: Any) -> dict[str, Any]:
    """run_once as the functions call it: with their Lambda context."""
    return idempotency.run_once(key, work, **{"context": FakeLambdaContext(), **options})


class Counter:
    def __init__(self, answer: dict[str, Any] | None = None) -> None:
        self.calls = 0
        self.answer = answer or {"prompt_id": "p-1"}

    def __call__(self) -> dict[str, Any]:
        self.calls += 1
        return {**self.answer, "run": self.calls}


def test_work_runs_once_per_key_and_repeats_its_answer(table: Any) -> None:
    work = Counter()
    first = once("job-1", work, namespace="job", payload={"a": 1})
    again = once("job-1", work, namespace="job", payload={"a": 1})
    assert first == again == {"prompt_id": "p-1", "run": 1} and work.calls == 1
    assert once("job-2", work, namespace="job", payload={"a": 1})["run"] == 2


def test_namespaces_do_not_share_keys(table: Any) -> None:
    work = Counter()
    once("k", work, namespace="job")
    once("k", work, namespace="http")  # the Idempotency-Key header's own space
    assert work.calls == 2


def test_record_expires_through_the_tables_ttl_attribute(table: Any) -> None:
    before = int(time.time())
    once("job-1", Counter(), namespace="job")
    after = int(time.time())
    (item,) = table.scan(TableName=IDEMPOTENCY_TABLE)["Items"]
    # `expiration` is the TTL attribute the template enables: DynamoDB deletes old records,
    # IDEMPOTENCY_EXPIRY_SECONDS after the work ran (however long the run took).
    assert before + 3600 <= int(item["expiration"]["N"]) <= after + 3600
    assert item["status"]["S"] == "COMPLETED"


def test_same_key_with_a_different_payload_is_refused(table: Any) -> None:
    work = Counter()
    once("job-1", work, namespace="job", payload={"prompt": "a"})
    with pytest.raises(IdempotencyKeyReusedError) as refused:
        once("job-1", work, namespace="job", payload={"prompt": "b"})
    assert refused.value.status_code == 422 and work.calls == 1


def test_same_key_while_the_first_still_runs_is_a_retryable_conflict(table: Any) -> None:
    seen: list[Exception] = []

    def work() -> dict[str, Any]:
        try:
            once("job-1", Counter(), namespace="job")
        except DuplicateInProgressError as exc:
            seen.append(exc)
        return {"prompt_id": "p-1"}

    once("job-1", work, namespace="job")
    assert len(seen) == 1 and seen[0].status_code == 409


def test_failed_work_is_not_remembered(table: Any) -> None:
    def down() -> dict[str, Any]:
        raise ComfyUIUnreachableError("ComfyUI is unreachable")

    with pytest.raises(ComfyUIUnreachableError):
        once("job-1", down, namespace="job")
    work = Counter()
    assert once("job-1", work, namespace="job")["run"] == 1


def test_unreachable_table_is_a_storage_error(table: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IDEMPOTENCY_TABLE", "no-such-table")
    get_settings.cache_clear()
    work = Counter()
    with pytest.raises(StorageError):
        once("job-1", work, namespace="job")
    assert work.calls == 0  # never runs unguarded


def test_without_a_table_work_just_runs() -> None:
    work = Counter()
    once("job-1", work, namespace="job")
    once("job-1", work, namespace="job")
    assert work.calls == 2
