"""The prompt-state table (DynamoDB): what the API knows about a prompt beyond ComfyUI.

One item per prompt, keyed `prompt_id`, expiring by TTL (`expires_at`, epoch seconds):

    status        queued | running | success | error | interrupted (the watcher's view)
    progress      {fraction, nodes_done, nodes_total, node, step, steps} while it runs
    expected_end  epoch seconds the run should end (from the workflow's recent durations);
                  task_status turns it into `eta_seconds` when it answers
    started_at    epoch seconds of execution_start
    workflow      the stored workflow's name
    backend       the ComfyUI that runs it ("default" until the fleet names several);
                  a fleet records it before it submits (fleet.placement)
    submitted_at  epoch seconds a fleet sent it to that backend
    announced     epoch seconds its Completed/Failed event and webhook were claimed: the
                  conditional write that makes the announcement happen once
    cancelled_at  epoch seconds DELETE /api/task took it out of ComfyUI's queue: task_status
                  then answers `cancelled`, where ComfyUI no longer knows the prompt

Other kinds of item share the table, with keys no prompt id can take ('#' is not
allowed in one): `lease#<backend>`, the live watcher's lease (live/lease.py),
`workflow#<name>`, recent run times of a workflow (for the ETA), and `backend#<name>`,
when a backend last answered a sweep (`last_seen`, for fleet.placement's grace period).

Without PROMPT_STATE_TABLE every function here is a no-op that answers as if the table
were empty and every claim were won: local runs without it behave as before.
boto3 is imported on first use only.
"""

from __future__ import annotations

import statistics
import time
from decimal import Decimal
from functools import lru_cache
from typing import Any

from ..config import Settings, get_settings
from ..errors import StorageError
from ..observability import logger
from ..storage import client_error_code

KEY = "prompt_id"
TTL_ATTRIBUTE = "expires_at"
DEFAULT_BACKEND = "default"
WORKFLOW_PREFIX = "workflow#"
# Durations kept per workflow: enough for a stable median, small enough for one item.
RECENT_DURATIONS = 20
PROGRESS_FIELDS = ("fraction", "nodes_done", "nodes_total", "node", "step", "steps")


@lru_cache(maxsize=1)
def dynamodb_client() -> Any:
    """One DynamoDB client per container, created lazily (so moto can intercept it)."""
    import boto3
    from botocore.config import Config

    # Short timeouts: a progress write or a status read must not stall the caller.
    return boto3.client(
        "dynamodb",
        config=Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=2, read_timeout=5),
    )


def now() -> float:
    """Wall-clock seconds (shared between functions, unlike time.monotonic); tests replace it."""
    return time.time()


# -- marshalling -----------------------------------------------------------------------
def to_attribute(value: Any) -> dict[str, Any]:
    """A Python value as a DynamoDB attribute value (floats through Decimal, as DynamoDB wants)."""
    from boto3.dynamodb.types import TypeSerializer

    return TypeSerializer().serialize(_decimals(value))


def from_item(item: dict[str, Any]) -> dict[str, Any]:
    from boto3.dynamodb.types import TypeDeserializer

    deserializer = TypeDeserializer()
    return {key: _plain(deserializer.deserialize(value)) for key, value in item.items()}


def _decimals(value: Any) -> Any:
    if isinstance(value, float):
        return Decimal(str(round(value, 3)))
    if isinstance(value, dict):
        return {key: _decimals(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_decimals(item) for item in value]
    return value


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def _key(prompt_id: str) -> dict[str, Any]:
    return {KEY: {"S": prompt_id}}


# -- announcements ---------------------------------------------------------------------
def claim_announcement(prompt_id: str, settings: Settings | None = None) -> bool:
    """True when the caller is the one to announce this finished prompt (Completed/Failed
    event, webhook, Images Archived); False when someone else already claimed it.

    A conditional write, so two archivers that finish the same prompt at the same moment
    (the watcher and the schedule, or an API-triggered run) announce it once. Claimed before
    sending: a run that dies between the claim and the send loses the announcement rather
    than ever sending it twice. When DynamoDB itself fails the claim is taken as won: the
    manifest is already written, so nobody would come back, and a rare duplicate beats a
    lost announcement."""
    settings = settings or get_settings()
    if not settings.prompt_state_table:
        return True
    stamp = now()
    try:
        dynamodb_client().update_item(
            TableName=settings.prompt_state_table,
            Key=_key(prompt_id),
            UpdateExpression="SET announced = :now, #ttl = if_not_exists(#ttl, :ttl)",
            ConditionExpression="attribute_not_exists(announced)",
            ExpressionAttributeNames={"#ttl": TTL_ATTRIBUTE},
            ExpressionAttributeValues={
                ":now": to_attribute(stamp),
                ":ttl": to_attribute(int(stamp) + settings.prompt_state_expiry),
            },
        )
    except Exception as exc:  # noqa: BLE001 - botocore error types are generated
        if client_error_code(exc) == "ConditionalCheckFailedException":
            logger.info("Prompt already announced by another run", extra={"prompt_id": prompt_id})
            return False
        logger.warning("Announcement claim failed; announcing anyway",
                       extra={"prompt_id": prompt_id, "error": repr(exc)})
    return True


# -- cancellation ----------------------------------------------------------------------
def record_cancelled(prompt_id: str, settings: Settings | None = None) -> bool:
    """Remember that a pending prompt was dequeued: ComfyUI keeps no trace of it. Never
    raises: the prompt is out of the queue either way; without the record task_status
    answers `not_found`, as before."""
    settings = settings or get_settings()
    if not settings.prompt_state_table:
        return False
    stamp = now()
    return _update(settings, prompt_id, ["cancelled_at = :now", "#ttl = :ttl"],
                   {":now": stamp, ":ttl": int(stamp) + settings.prompt_state_expiry}, "Cancellation not recorded")


def _update(settings: Settings, prompt_id: str, sets: list[str], values: dict[str, Any], failure: str,
            names: dict[str, str] | None = None) -> bool:
    """SET `sets` on the prompt's item (`#ttl` names the TTL attribute). Never raises: False,
    and `failure` logged, when DynamoDB refused or failed."""
    try:
        dynamodb_client().update_item(
            TableName=settings.prompt_state_table,
            Key=_key(prompt_id),
            UpdateExpression="SET " + ", ".join(sets),
            ExpressionAttributeNames={"#ttl": TTL_ATTRIBUTE, **(names or {})},
            ExpressionAttributeValues={name: to_attribute(value) for name, value in values.items()},
        )
    except Exception as exc:  # noqa: BLE001 - botocore error types are generated
        logger.warning(failure, extra={"prompt_id": prompt_id, "error": repr(exc)})
        return False
    return True


# -- the fleet: which backend holds a prompt, when a backend was last seen --------------
BACKEND_PREFIX = "backend#"


def record_backend(prompt_id: str, backend: str, workflow: str | None,
                   settings: Settings | None = None) -> bool:
    """Remember the backend a prompt is sent to, before it is sent: a lookup (task_status,
    cancel...) then costs one GetItem and one request to that backend, and a keyed retry
    asks that backend whether the first attempt got in. Never raises: False when it could
    not be written (fleet.placement then sends nothing)."""
    settings = settings or get_settings()
    if not settings.prompt_state_table:
        return False
    stamp = now()
    values: dict[str, Any] = {":backend": backend, ":at": stamp,
                              ":ttl": int(stamp) + settings.prompt_state_expiry}
    sets = ["backend = :backend", "submitted_at = :at", "#ttl = :ttl"]
    if workflow:
        values[":workflow"] = workflow
        sets.append("workflow = :workflow")
    return _update(settings, prompt_id, sets, values, "Prompt backend not recorded")


def record_seen(backends: list[str], settings: Settings | None = None) -> None:
    """Stamp `last_seen` on each backend that just answered (the archiver's sweep does)."""
    settings = settings or get_settings()
    if not settings.prompt_state_table:
        return
    stamp = now()
    for backend in backends:
        item = {KEY: f"{BACKEND_PREFIX}{backend}", "last_seen": stamp,
                TTL_ATTRIBUTE: int(stamp) + settings.prompt_state_expiry}
        try:
            dynamodb_client().put_item(TableName=settings.prompt_state_table,
                                       Item={name: to_attribute(value) for name, value in item.items()})
        except Exception as exc:  # noqa: BLE001 - botocore error types are generated
            logger.warning("Backend health not recorded", extra={"backend": backend, "error": repr(exc)})


def last_seen(backend: str, settings: Settings | None = None) -> float | None:
    """When `backend` last answered a sweep (epoch seconds), or None if never recorded."""
    item = load(f"{BACKEND_PREFIX}{backend}", settings)
    seen = (item or {}).get("last_seen")
    return float(seen) if isinstance(seen, (int, float)) else None


# -- progress --------------------------------------------------------------------------
def save_progress(
    prompt_id: str,
    *,
    status: str,
    progress: dict[str, Any] | None,
    workflow: str | None,
    started_at: float | None,
    expected_end: float | None,
    backend: str = DEFAULT_BACKEND,
    settings: Settings | None = None,
) -> bool:
    """Write what the watcher knows of a running (or just finished) prompt. Never raises:
    progress is a courtesy, the run goes on without it."""
    settings = settings or get_settings()
    if not settings.prompt_state_table:
        return False
    values: dict[str, Any] = {
        ":status": status,
        ":progress": progress,
        ":backend": backend,
        ":updated": now(),
        ":ttl": int(now()) + settings.prompt_state_expiry,
        ":expected": expected_end,
    }
    sets = ["#status = :status", "progress = :progress", "backend = :backend",
            "updated_at = :updated", "#ttl = :ttl", "expected_end = :expected"]
    if workflow is not None:
        values[":workflow"] = workflow
        sets.append("workflow = :workflow")
    if started_at is not None:
        values[":started"] = started_at
        sets.append("started_at = if_not_exists(started_at, :started)")
    return _update(settings, prompt_id, sets, values, "Progress not saved", {"#status": "status"})


def load(prompt_id: str, settings: Settings | None = None, *, strict: bool = False) -> dict[str, Any] | None:
    """The prompt's item, or None (no table, no item, or the table unreadable: a status
    answer without progress is still right). `strict`: an unreadable table raises
    StorageError instead, for a caller that would act on "no item" (a keyed retry)."""
    settings = settings or get_settings()
    if not settings.prompt_state_table:
        return None
    try:
        answer = dynamodb_client().get_item(TableName=settings.prompt_state_table, Key=_key(prompt_id))
    except Exception as exc:  # noqa: BLE001 - botocore error types are generated
        logger.warning("Prompt state unreadable", extra={"prompt_id": prompt_id, "error": repr(exc)})
        if strict:
            raise StorageError("Prompt records are unreadable; retry") from exc
        return None
    item = answer.get("Item")
    return from_item(item) if item else None


def progress_answer(item: dict[str, Any] | None, at: float | None = None) -> dict[str, Any] | None:
    """The `progress` object of a running prompt's task_status answer, from its item.
    `eta_seconds` is counted down from `expected_end` now, not when it was written."""
    if not item or not isinstance(item.get("progress"), dict):
        return None
    stored = item["progress"]
    answer = {name: stored.get(name) for name in PROGRESS_FIELDS}
    expected = item.get("expected_end")
    moment = now() if at is None else at
    answer["eta_seconds"] = (
        round(max(0.0, float(expected) - moment), 1) if isinstance(expected, (int, float)) else None
    )
    return answer


# -- run times per workflow (for the ETA) ----------------------------------------------
def recent_durations(workflow: str, settings: Settings | None = None) -> list[float]:
    item = load(f"{WORKFLOW_PREFIX}{workflow}", settings)
    durations = (item or {}).get("durations")
    return [float(d) for d in durations if isinstance(d, (int, float))] if isinstance(durations, list) else []


def record_duration(workflow: str, seconds: float, settings: Settings | None = None) -> None:
    """Remember one successful run's execution time. Read-modify-write without a condition:
    two runs recorded at the same instant may keep only one, which an ETA can afford."""
    settings = settings or get_settings()
    if not settings.prompt_state_table or seconds < 0:
        return
    durations = (recent_durations(workflow, settings) + [seconds])[-RECENT_DURATIONS:]
    item = {
        KEY: f"{WORKFLOW_PREFIX}{workflow}",
        "durations": durations,
        TTL_ATTRIBUTE: int(now()) + settings.prompt_state_expiry,
    }
    try:
        dynamodb_client().put_item(
            TableName=settings.prompt_state_table,
            Item={name: to_attribute(value) for name, value in item.items()},
        )
    except Exception as exc:  # noqa: BLE001 - botocore error types are generated
        logger.warning("Run time not recorded", extra={"workflow": workflow, "error": repr(exc)})


def typical_duration(durations: list[float]) -> float | None:
    """The median of recent run times: one slow outlier does not move it. None without any."""
    return statistics.median(durations) if durations else None
