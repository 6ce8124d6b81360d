"""Logger, metrics and tracer, created once per container.

The tracer costs nothing when tracing is off: the X-Ray SDK is imported only when
POWERTOOLS_TRACE_DISABLED is not true (the template sets it from the EnableTracing
parameter).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

from aws_lambda_powertools import Logger, Metrics

SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME", "comfy-serverless-api")
NAMESPACE = os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "ComfyServerlessApi")

logger = Logger(service=SERVICE)
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)

F = TypeVar("F", bound=Callable[..., Any])


def tracing_enabled() -> bool:
    return os.environ.get("POWERTOOLS_TRACE_DISABLED", "true").lower() not in ("1", "true")


def capture_lambda_handler(func: F) -> F:
    """Powertools Tracer's decorator when tracing is on; the function itself otherwise."""
    if not tracing_enabled():
        return func
    from aws_lambda_powertools import Tracer  # imports aws_xray_sdk: only pay when used

    return Tracer(service=SERVICE).capture_lambda_handler(func)
