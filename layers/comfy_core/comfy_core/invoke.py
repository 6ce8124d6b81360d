"""Asynchronous calls to another function of the stack (the archiver).

boto3 is imported on first use only. AWS_ENDPOINT_URL_LAMBDA (or AWS_ENDPOINT_URL), when
set, is honoured by boto3 itself: the local stack serves the same Invoke API.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from .observability import logger


@lru_cache(maxsize=1)
def lambda_client() -> Any:
    import boto3
    from botocore.config import Config

    # Short timeouts: this is a fire-and-forget side effect of an API request.
    return boto3.client(
        "lambda", config=Config(retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=2, read_timeout=5)
    )


def invoke_async(function_name: str, payload: dict[str, Any]) -> bool:
    """Queue an asynchronous invocation (InvocationType Event). A failure is logged and
    reported as False, never raised: the caller's answer must not depend on it."""
    try:
        lambda_client().invoke(
            FunctionName=function_name,
            InvocationType="Event",
            Payload=json.dumps(payload).encode("utf-8"),
        )
    except Exception:  # noqa: BLE001 - botocore error types are generated; any failure is non-fatal
        logger.warning("Asynchronous invoke failed", extra={"function": function_name}, exc_info=True)
        return False
    return True
