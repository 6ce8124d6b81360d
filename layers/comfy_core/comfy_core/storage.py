"""S3 helpers. boto3 is imported on first use only: functions that never touch S3 must not
pay its import time at cold start."""

from __future__ import annotations

from functools import lru_cache
from typing import Any


@lru_cache(maxsize=1)
def s3_client() -> Any:
    """One S3 client per container, created lazily (so moto can intercept it in tests).
    AWS_ENDPOINT_URL, when set (the local stack), is honoured by boto3 itself."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        config=Config(
            # SigV4 explicitly: presigned download links must honour their expiry (SigV2
            # ignores the 7-day cap and newer regions refuse it).
            signature_version="s3v4",
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=3,
            read_timeout=10,
        ),
    )


def client_error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))
