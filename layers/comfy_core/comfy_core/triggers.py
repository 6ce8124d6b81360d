"""The edge between event sources and jobs: SQS batches, S3 job files, EventBridge
requests and direct invocations each become a `Job`, run exactly like
POST /api/workflow/{name} (`jobs.run_workflow`), at most once per job id.

A job is JSON: `{"workflow": "<name>", "job_id"?: "...", "webhook_url"?: "https://...",
...the simple or advanced request body...}`. Without a job_id, the delivery's own id is
used (SQS message id, EventBridge event id, S3 object version, Lambda request id), so a
redelivery of the same message still runs once.

Failures fall in two kinds (`is_transient`):
- the job itself is wrong (bad JSON, unknown workflow, any 4xx-class error): retrying
  cannot help. It is rejected: logged with its reason and sent to the jobs dead-letter
  queue (SQS, EventBridge), written as the result (S3) or returned (direct invocation).
- ComfyUI or AWS trouble (5xx-class, 409 in progress, 429 queue full): a later attempt may
  succeed. It is raised, so SQS (batch item failure), Lambda's async retries or the
  caller (Step Functions Retry) try again.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from . import idempotency, jobs, submission
from .announce import webhooks
from .api import error_body
from .config import Settings, get_settings
from .errors import (
    BadRequestError,
    ComfyCoreError,
    ComfyUITimeoutError,
    ComfyUIUnreachableError,
    DuplicateInProgressError,
    QueueFullError,
    StorageError,
)
from .observability import logger, metrics
from .storage import client_error_code, s3_client

RUN_DETAIL_TYPE = "Run ComfyUI Workflow"
S3_CREATED_DETAIL_TYPE = "Object Created"
JOB_SUFFIX = ".json"
RESULT_SUFFIX = ".result.json"
# Fields of a job that are not part of the request body.
JOB_FIELDS = ("workflow", "job_id", "webhook_url")
MAX_JOB_ID_LENGTH = 256
IDEMPOTENCY_NAMESPACE = "job"
# ComfyUI gone or hung: later jobs of the same batch would wait for the same timeout.
_RUN_FATAL = (ComfyUIUnreachableError, ComfyUITimeoutError)
_LOG_KEYS = ["job_id", "trigger", "prompt_id", "workflow"]


# -- the job -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Job:
    workflow: str
    job_id: str
    trigger: str  # sqs | s3 | eventbridge | direct
    body: dict[str, Any] = field(default_factory=dict)
    webhook_url: str | None = None

    def origin(self) -> dict[str, Any]:
        """What travels with the prompt in ComfyUI's extra_data, for the archiver to read."""
        recorded: dict[str, Any] = {"job_id": self.job_id, "trigger": self.trigger}
        if self.webhook_url:
            recorded["webhook_url"] = self.webhook_url
        return recorded

    def fingerprint(self) -> dict[str, Any]:
        """What must match when a job id comes again (the trigger may differ)."""
        return {"workflow": self.workflow, "body": self.body, "webhook_url": self.webhook_url}


def parse_job(data: Any, *, trigger: str, default_id: str, settings: Settings | None = None) -> Job:
    """A Job from decoded JSON; BadRequestError saying what is wrong otherwise."""
    if isinstance(data, (str, bytes)):
        try:
            data = json.loads(data)
        except (ValueError, RecursionError) as exc:
            raise BadRequestError("Job is not valid JSON") from exc
    if not isinstance(data, dict):
        raise BadRequestError("Job must be a JSON object")
    workflow = data.get("workflow")
    if not isinstance(workflow, str):
        raise BadRequestError("Job needs 'workflow', the name of a workflow")
    job_id = data.get("job_id", default_id)
    if (
        not isinstance(job_id, str)
        or not 0 < len(job_id) <= MAX_JOB_ID_LENGTH
        or not job_id.isprintable()
    ):
        raise BadRequestError(f"'job_id' must be a string of 1-{MAX_JOB_ID_LENGTH} printable characters")
    url = data.get("webhook_url")
    if url is not None:
        url = webhooks.validate_url(url, settings)
    body = {k: v for k, v in data.items() if k not in JOB_FIELDS}
    return Job(workflow=workflow, job_id=job_id, trigger=trigger, body=body, webhook_url=url)


def is_transient(exc: Exception) -> bool:
    """Whether the same job may succeed later. Unexpected exceptions count as transient:
    the retries end in the dead-letter queue through the redrive policy anyway."""
    if isinstance(exc, (DuplicateInProgressError, QueueFullError)):
        return True
    if isinstance(exc, ComfyCoreError):
        return exc.status_code >= 500
    return True


def run_job(job: Job, *, context: Any = None, settings: Settings | None = None) -> dict[str, Any]:
    """The answer POST /api/workflow/{name} would give; a job id that ran before gets its
    first answer back without submitting again."""
    logger.append_keys(job_id=job.job_id, trigger=job.trigger)

    # The same job id and job always name the same prompt: a retry after a POST /prompt
    # that timed out finds it in ComfyUI instead of submitting it twice.
    prompt_id = jobs.keyed_prompt_id(IDEMPOTENCY_NAMESPACE, job.job_id, job.fingerprint())

    def submit() -> dict[str, Any]:
        # Inside the once-only block: a duplicate delivery announces nothing.
        return submission.submit(job.workflow, job.body, job_id=job.job_id, trigger=job.trigger,
                                 origin=job.origin(), prompt_id=prompt_id)

    return idempotency.run_once(
        job.job_id,
        submit,
        namespace=IDEMPOTENCY_NAMESPACE,
        payload=job.fingerprint(),
        context=context,
        settings=settings,
    )


# -- rejected jobs -------------------------------------------------------------------------
@lru_cache(maxsize=1)
def sqs_client() -> Any:
    """Created on first use (so moto can intercept it in tests); AWS_ENDPOINT_URL, when set
    (the local stack), is honoured by boto3 itself."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "sqs",
        config=Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=2, read_timeout=5),
    )


def send_to_dlq(
    raw: str, envelope: dict[str, Any], *, trigger: str, source_id: str, settings: Settings
) -> bool:
    """Put a rejected job on the jobs dead-letter queue, as it came, with the reason in
    message attributes (fix it and redrive it to the jobs queue). False when it could not."""
    if not settings.jobs_dlq_url:
        logger.error("JOBS_DLQ_URL is not set: rejected job kept in the logs only")
        return False
    attributes = {
        "reason": {"DataType": "String", "StringValue": str(envelope.get("error"))[:1024] or "-"},
        "status_code": {"DataType": "Number", "StringValue": str(envelope.get("status_code", 500))},
        "trigger": {"DataType": "String", "StringValue": trigger},
        "source_id": {"DataType": "String", "StringValue": source_id[:1024] or "-"},
    }
    try:
        sqs_client().send_message(
            QueueUrl=settings.jobs_dlq_url, MessageBody=raw or "(empty)", MessageAttributes=attributes
        )
    except Exception:  # noqa: BLE001 - botocore error types are generated
        logger.exception("Could not send the rejected job to the dead-letter queue")
        return False
    return True


def _rejected(exc: Exception, trigger: str, source_id: str) -> dict[str, Any]:
    envelope = error_body(exc)
    metrics.add_metric(name="JobRejected", unit=MetricUnit.Count, value=1)
    logger.warning(
        "Job rejected",
        extra={"reason": envelope["error"], "status_code": envelope["status_code"],
               "trigger": trigger, "source_id": source_id},
    )
    return envelope


def _deferred(exc: Exception, trigger: str, source_id: str) -> None:
    metrics.add_metric(name="JobRetried", unit=MetricUnit.Count, value=1)
    if isinstance(exc, ComfyCoreError):
        logger.warning("Job failed; it will be retried",
                       extra={"reason": exc.message, "trigger": trigger, "source_id": source_id})
    else:
        logger.exception("Job failed unexpectedly; it will be retried",
                         extra={"trigger": trigger, "source_id": source_id})


# -- event kinds ---------------------------------------------------------------------------
def event_kind(event: Any) -> str:
    """sqs | s3 | eventbridge | direct."""
    if isinstance(event, dict):
        records = event.get("Records")
        if isinstance(records, list) and records and isinstance(records[0], dict) \
                and records[0].get("eventSource") == "aws:sqs":
            return "sqs"
        if "detail-type" in event and "source" in event:
            if event.get("source") == "aws.s3" and event.get("detail-type") == S3_CREATED_DETAIL_TYPE:
                return "s3"
            return "eventbridge"
    return "direct"


def run_sqs_batch(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Each message one job. Answers `batchItemFailures` with the messages SQS should
    deliver again (transient failures only): a bad message never fails or repeats the
    others. Rejected jobs are moved to the dead-letter queue here and reported done."""
    from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response

    settings = get_settings()
    fatal: list[Exception] = []  # ComfyUI went away earlier in this batch

    def record_handler(record: Any) -> dict[str, Any] | None:
        logger.remove_keys(_LOG_KEYS)
        source_id = record.message_id
        try:
            job = parse_job(record.body, trigger="sqs", default_id=f"sqs:{source_id}", settings=settings)
            if fatal:
                # Fail fast instead of waiting for the same timeout once per message.
                raise ComfyUIUnreachableError("ComfyUI was unreachable earlier in this batch")
            return run_job(job, context=context, settings=settings)
        except Exception as exc:  # noqa: BLE001 - sorted into retry or reject right here
            if is_transient(exc):
                if isinstance(exc, _RUN_FATAL):
                    fatal.append(exc)
                _deferred(exc, "sqs", source_id)
                raise
            envelope = _rejected(exc, "sqs", source_id)
            if not send_to_dlq(record.body, envelope, trigger="sqs", source_id=source_id, settings=settings):
                # Not lost: SQS delivers it again, and the redrive policy moves it to the
                # dead-letter queue after maxReceiveCount.
                raise
            return None

    # Every message failing is still a partial answer: SQS retries exactly those.
    processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
    return process_partial_response(event=event, record_handler=record_handler, processor=processor,
                                    context=context)


def _result_key(key: str) -> str:
    return key[: -len(JOB_SUFFIX)] + RESULT_SUFFIX


def _read_job_file(bucket: str, key: str, version: str | None, settings: Settings) -> bytes | None:
    """The job file's bytes; None when it is gone already. Larger than MAX_BODY_BYTES is a
    job error, read no further."""
    params: dict[str, Any] = {"Bucket": bucket, "Key": key}
    if version:
        params["VersionId"] = version  # the job as put, even if overwritten since
    try:
        answer = s3_client().get_object(**params)
    except Exception as exc:  # noqa: BLE001 - botocore error types are generated
        if client_error_code(exc) in ("NoSuchKey", "NoSuchVersion", "404", "NotFound"):
            return None
        raise StorageError("Could not read the job file") from exc
    with answer["Body"] as body:
        if answer.get("ContentLength", 0) > settings.max_body_bytes:
            raise BadRequestError(f"Job file is larger than {settings.max_body_bytes} bytes")
        return body.read()


def _write_result(bucket: str, key: str, result: dict[str, Any]) -> None:
    try:
        s3_client().put_object(
            Bucket=bucket,
            Key=key,
            Body=json.dumps(result, ensure_ascii=False, default=str).encode("utf-8"),
            ContentType="application/json",
        )
    except Exception as exc:  # noqa: BLE001 - botocore error types are generated
        # Transient: the retry is answered from the idempotency record, not resubmitted.
        raise StorageError("Could not write the job result") from exc


def run_s3_job(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """A job file put under JOB_PREFIX in the workflow bucket (S3 -> EventBridge). Its
    outcome is written beside it as <name>.result.json: the prompt_id, or the error."""
    settings = get_settings()
    detail = event.get("detail") or {}
    bucket = str((detail.get("bucket") or {}).get("name") or "")
    obj = detail.get("object") or {}
    key = str(obj.get("key") or "")
    if (bucket != settings.workflow_bucket or not key.startswith(settings.job_prefix)
            or not key.endswith(JOB_SUFFIX) or key.endswith(RESULT_SUFFIX)):
        # Results we wrote ourselves land here too: the rule cannot exclude them.
        logger.debug("Not a job file; ignored", extra={"bucket": bucket, "key": key})
        return {"status": "ignored", "key": key}
    version = obj.get("version-id")
    source_id = f"s3:{bucket}/{key}@{version or obj.get('sequencer') or obj.get('etag') or event.get('id')}"
    workflow = None
    try:
        raw = _read_job_file(bucket, key, version, settings)
        if raw is None:
            logger.info("Job file gone before it was read; nothing to do", extra={"key": key})
            return {"status": "gone", "key": key}
        job = parse_job(raw, trigger="s3", default_id=source_id, settings=settings)
        workflow = job.workflow
        result = {"job_id": job.job_id, "workflow": workflow, "job_key": key,
                  **run_job(job, context=context, settings=settings)}
    except Exception as exc:  # noqa: BLE001 - sorted into retry or reject right here
        if is_transient(exc):
            _deferred(exc, "s3", source_id)
            raise
        result = {"job_key": key, "workflow": workflow, **_rejected(exc, "s3", source_id)}
    result_key = _result_key(key)
    _write_result(bucket, result_key, result)
    return {**result, "result_key": result_key}


def run_eventbridge_job(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """A `Run ComfyUI Workflow` event: the job is its detail. A rejected job goes to the
    dead-letter queue (the sender has no other way to learn of it)."""
    settings = get_settings()
    source_id = f"events:{event.get('id') or uuid.uuid4()}"
    detail = event.get("detail")
    if event.get("detail-type") != RUN_DETAIL_TYPE:
        logger.warning("Unexpected EventBridge event; ignored",
                       extra={"detail_type": event.get("detail-type")})
        return {"status": "ignored"}
    try:
        job = parse_job(detail, trigger="eventbridge", default_id=source_id, settings=settings)
        return run_job(job, context=context, settings=settings)
    except Exception as exc:  # noqa: BLE001 - sorted into retry or reject right here
        if is_transient(exc):
            _deferred(exc, "eventbridge", source_id)
            raise  # Lambda retries the async invocation, then its on-failure destination
        envelope = _rejected(exc, "eventbridge", source_id)
        raw = json.dumps(detail, ensure_ascii=False, default=str)
        send_to_dlq(raw, envelope, trigger="eventbridge", source_id=source_id, settings=settings)
        return envelope


def run_direct_job(event: Any, context: Any) -> dict[str, Any]:
    """The job as the event itself (Step Functions, `aws lambda invoke`): the answer POST
    /api/workflow/{name} would give, its error envelope for a job error. Transient trouble
    is raised instead (errorType names it, e.g. ComfyUIUnreachableError), so Lambda's
    async retries and Step Functions' Retry apply."""
    settings = get_settings()
    request_id = getattr(context, "aws_request_id", None) or str(uuid.uuid4())
    source_id = f"lambda:{request_id}"
    try:
        job = parse_job(event, trigger="direct", default_id=source_id, settings=settings)
        return run_job(job, context=context, settings=settings)
    except Exception as exc:  # noqa: BLE001 - sorted into retry or reject right here
        if not is_transient(exc):
            return _rejected(exc, "direct", source_id)
        _deferred(exc, "direct", source_id)
        if isinstance(exc, ComfyCoreError):
            raise
        # Never an unexpected exception's own text to the caller.
        raise ComfyCoreError("Internal server error") from exc

