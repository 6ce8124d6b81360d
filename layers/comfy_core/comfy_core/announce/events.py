"""EventBridge helper. boto3 is imported on first use only, like storage.py: functions that
never publish events must not pay its import time at cold start."""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from ..observability import logger

SOURCE = "comfy-serverless-api"
# PutEvents refuses an entry above 256 KB; stay well below it with the envelope added.
MAX_DETAIL_BYTES = 200_000


@lru_cache(maxsize=1)
def events_client() -> Any:
    """One EventBridge client per container, created lazily (so moto can intercept it in
    tests). AWS_ENDPOINT_URL, when set (the local stack), is honoured by boto3 itself."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "events",
        config=Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=3, read_timeout=10),
    )


# Strings cut to this length when a detail is too large (an exception message, a path).
SHRUNK_STRING_CHARS = 2_048
TRUNCATED_KEY = "detail_truncated"


def _encode(detail: Any) -> str:
    # ASCII escapes: a lone surrogate in a string from ComfyUI stays an escape instead of
    # failing to encode, so this cannot raise.
    return json.dumps(detail, default=str)


def _shrink_strings(value: Any) -> Any:
    if isinstance(value, str) and len(value) > SHRUNK_STRING_CHARS:
        return value[:SHRUNK_STRING_CHARS] + f"…[truncated {len(value) - SHRUNK_STRING_CHARS} characters]"
    if isinstance(value, dict):
        return {key: _shrink_strings(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_shrink_strings(item) for item in value]
    return value


def fit(detail: dict[str, Any], limit: int = MAX_DETAIL_BYTES) -> str | None:
    """The detail as JSON within `limit` bytes: as it is when it fits; else with long strings
    cut, then top-level lists halved until it fits, marked `"detail_truncated": true`. An
    event that is announced cut beats one that is never announced (a failed prompt with a
    long error must still reach its subscribers). None only if even that cannot fit."""
    body = _encode(detail)
    if len(body) <= limit:
        return body
    shrunk = {**_shrink_strings(detail), TRUNCATED_KEY: True}
    body = _encode(shrunk)
    while len(body) > limit:
        lists = [key for key, value in shrunk.items() if isinstance(value, list) and value]
        if not lists:
            return None
        longest = max(lists, key=lambda key: len(_encode(shrunk[key])))
        shrunk[longest] = shrunk[longest][: len(shrunk[longest]) // 2]
        body = _encode(shrunk)
    return body


def put_event(detail_type: str, detail: dict[str, Any], bus_name: str, source: str = SOURCE) -> bool:
    """Publish one event; True when EventBridge accepted it.

    Never raises: an event is a notification about work that is already done and stored,
    so failing to send it must not undo or fail that work. Failures are logged.
    """
    body = fit(detail)
    if body is None:
        logger.warning("Event detail too large; not sent", extra={"detail_type": detail_type})
        return False
    entry = {"Source": source, "DetailType": detail_type, "Detail": body, "EventBusName": bus_name}
    try:
        answer = events_client().put_events(Entries=[entry])
    except Exception as exc:  # noqa: BLE001 - botocore raises many types; none may be fatal here
        logger.warning(
            "EventBridge put_events failed", extra={"detail_type": detail_type, "error": repr(exc)}
        )
        return False
    if answer.get("FailedEntryCount"):
        failed = (answer.get("Entries") or [{}])[0]
        logger.warning(
            "EventBridge refused the event",
            extra={
                "detail_type": detail_type,
                "code": failed.get("ErrorCode"),
                "error": failed.get("ErrorMessage"),
            },
        )
        return False
    return True
