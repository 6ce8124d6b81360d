"""Run a piece of work once per key: Powertools idempotency over a DynamoDB table.

The first call with a key runs the work and stores its (JSON) answer; a later call with the
same key within IDEMPOTENCY_EXPIRY_SECONDS gets that answer back without running it again.
A call while the first is still running gets DuplicateInProgressError (retry shortly); the
same key with a different payload gets IdempotencyKeyReusedError. Work that raises is not
remembered, so a retry after a failure runs it again.

Used for event-driven jobs (keyed by job_id or the delivery's id) and meant for the API's
Idempotency-Key header too: each use picks its own `namespace`.

boto3 and the Powertools idempotency package (which imports boto3) are imported on first
use only: functions that never deduplicate must not pay for them at cold start.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from .config import Settings, get_settings
from .errors import DuplicateInProgressError, IdempotencyKeyReusedError, StorageError
from .observability import logger, metrics

# What the persistence layer hashes: the key decides identity, the payload is only checked.
_KEY_PATH = "key"
_PAYLOAD_PATH = "payload"

Work = Callable[[], dict[str, Any]]


@lru_cache(maxsize=1)
def persistence_layer(table_name: str) -> Any:
    """One DynamoDB persistence layer (and boto3 client) per container and table.
    AWS_ENDPOINT_URL, when set (the local stack), is honoured by boto3 itself."""
    from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer
    from botocore.config import Config

    # Short timeouts: a deduplication check must not eat the job's own time budget.
    config = Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=2, read_timeout=5)
    return DynamoDBPersistenceLayer(table_name=table_name, boto_config=config)


def _config(settings: Settings, context: Any) -> Any:
    from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig

    config = IdempotencyConfig(
        event_key_jmespath=_KEY_PATH,
        payload_validation_jmespath=_PAYLOAD_PATH,
        raise_on_no_idempotency_key=True,
        expires_after_seconds=settings.idempotency_expiry,
        response_hook=_on_replay,
    )
    if context is not None:
        # With the Lambda context a run cut off by a timeout leaves an in-progress record
        # that expires with the invocation, so the retry is not blocked for the whole TTL.
        config.register_lambda_context(context)
    return config


def _on_replay(response: Any, record: Any) -> Any:
    """Powertools calls this only when the answer comes from the table, not from a run."""
    metrics.add_metric(name="DuplicateSkipped", unit=MetricUnit.Count, value=1)
    logger.info("Duplicate delivery: answered with the first run's result")
    return response


def run_once(
    key: str,
    work: Work,
    *,
    namespace: str,
    payload: Any = None,
    context: Any = None,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """`work()`'s answer, computed at most once per (namespace, key). Pass the Lambda
    `context`: a run cut off by a timeout then blocks its retry only until the invocation
    would have ended, not for the whole TTL.

    Without IDEMPOTENCY_TABLE (a local run) the work simply runs: deduplication is a
    deployment feature, and the template always sets the table.
    """
    settings = settings or get_settings()
    if not settings.idempotency_table:
        logger.debug("IDEMPOTENCY_TABLE not set: running without deduplication")
        return work()
    from aws_lambda_powertools.utilities.idempotency import idempotent_function
    from aws_lambda_powertools.utilities.idempotency.exceptions import (
        IdempotencyAlreadyInProgressError,
        IdempotencyPersistenceLayerError,
        IdempotencyValidationError,
    )

    def _run(request: dict[str, Any]) -> dict[str, Any]:
        return work()

    guarded = idempotent_function(
        _run,
        data_keyword_argument="request",
        persistence_store=persistence_layer(settings.idempotency_table),
        config=_config(settings, context),
        key_prefix=f"comfy-serverless:{namespace}",
    )
    try:
        return guarded(request={_KEY_PATH: key, _PAYLOAD_PATH: payload})
    except IdempotencyAlreadyInProgressError as exc:
        raise DuplicateInProgressError("The same job is already running; try again shortly") from exc
    except IdempotencyValidationError as exc:
        raise IdempotencyKeyReusedError(
            "This idempotency key was already used for a different request"
        ) from exc
    except IdempotencyPersistenceLayerError as exc:
        raise StorageError("The idempotency store is unavailable") from exc
