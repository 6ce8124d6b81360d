"""comfy_core.triggers alone: what a job is, and which failures are worth a retry."""

from __future__ import annotations

import pytest

from comfy_core import triggers
from comfy_core.errors import (
    BadRequestError,
    ComfyUIBadResponseError,
    ComfyUIRejectedError,
    ComfyUITimeoutError,
    ComfyUIUnreachableError,
    ConfigurationError,
    DuplicateInProgressError,
    IdempotencyKeyReusedError,
    NotFoundError,
    QueueFullError,
    StorageError,
    WorkflowFormatError,
)


def test_job_fields_are_not_part_of_the_request_body() -> None:
    job = triggers.parse_job(
        '{"workflow": "text_label", "job_id": "order-1", "prompt": "x", "seed": 7}',
        trigger="sqs",
        default_id="sqs:m-1",
    )
    assert (job.workflow, job.job_id, job.trigger, job.webhook_url) == ("text_label", "order-1", "sqs", None)
    assert job.body == {"prompt": "x", "seed": 7}
    assert job.origin() == {"job_id": "order-1", "trigger": "sqs"}
    assert job.fingerprint() == {
        "workflow": "text_label", "body": {"prompt": "x", "seed": 7}, "webhook_url": None
    }


def test_without_a_job_id_the_delivery_id_is_used() -> None:
    assert triggers.parse_job({"workflow": "w"}, trigger="s3", default_id="s3:b/k@v").job_id == "s3:b/k@v"


@pytest.mark.parametrize(
    "data",
    ["{oops", "null", [], {"workflow": 3}, {"workflow": "w", "job_id": ""},
     {"workflow": "w", "job_id": "a\nb"}, {"workflow": "w", "job_id": "x" * 257},
     {"workflow": "w", "webhook_url": 5}],
)
def test_malformed_jobs_are_bad_requests(data) -> None:
    with pytest.raises(BadRequestError):
        triggers.parse_job(data, trigger="direct", default_id="lambda:r-1")


@pytest.mark.parametrize(
    "exc",
    [ComfyUIUnreachableError("x"), ComfyUITimeoutError("x"), ComfyUIBadResponseError("x"), StorageError("x"),
     QueueFullError("x"), DuplicateInProgressError("x"), ConfigurationError("x"), KeyError("bug")],
)
def test_trouble_that_may_pass_is_retried(exc: Exception) -> None:
    assert triggers.is_transient(exc)


@pytest.mark.parametrize(
    "exc",
    [BadRequestError("x"), NotFoundError("x"), WorkflowFormatError("x"), ComfyUIRejectedError("x"),
     IdempotencyKeyReusedError("x")],
)
def test_a_wrong_job_is_never_retried(exc: Exception) -> None:
    assert not triggers.is_transient(exc)


@pytest.mark.parametrize(
    ("event", "kind"),
    [
        ({"Records": [{"eventSource": "aws:sqs", "body": "{}"}]}, "sqs"),
        ({"source": "aws.s3", "detail-type": "Object Created", "detail": {}}, "s3"),
        ({"source": "my.app", "detail-type": "Run ComfyUI Workflow", "detail": {}}, "eventbridge"),
        ({"workflow": "text_label"}, "direct"),
        ({"Records": []}, "direct"),
        ("not an object", "direct"),
    ],
)
def test_event_kind(event, kind: str) -> None:
    assert triggers.event_kind(event) == kind
