"""Logger, metrics and tracer, created once per container.

The tracer costs nothing when tracing is off: the X-Ray SDK is imported only when
POWERTOOLS_TRACE_DISABLED is not true (the template sets it from the EnableTracing
parameter).

`metrics` is flushed by each handler's `log_metrics`, with the one dimension `service`.
Metrics that need a dimension of their own (one series per ComfyUI backend) go out at once
through `emit_dimensioned`, one EMF document per dimension set.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME", "comfy-serverless-api")
NAMESPACE = os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "ComfyServerlessApi")


class _ThreadSafeMetrics(Metrics):
    """Powertools' Metrics, with add_metric safe to call from several threads at once.

    The archiver sweeps backends side by side and the watcher archives on worker threads;
    Powertools reads, extends and stores a metric's value list in three steps, so two
    threads adding the same metric at once could drop one of the values."""

    _add_lock = threading.Lock()

    def add_metric(self, *args: Any, **kwargs: Any) -> None:
        with self._add_lock:
            super().add_metric(*args, **kwargs)


logger = Logger(service=SERVICE)
metrics = _ThreadSafeMetrics(namespace=NAMESPACE, service=SERVICE)

F = TypeVar("F", bound=Callable[..., Any])


def emit_dimensioned(dimensions: dict[str, str], values: Iterable[tuple[str, MetricUnit, float]]) -> None:
    """Print one EMF document now: `values` (name, unit, value) under `dimensions` plus
    `service`. Its own document, so these metrics never take on the dimensions of the
    handler's shared `metrics`, nor it theirs (a dimension set applies to every metric of
    a document)."""
    document = EphemeralMetrics(namespace=NAMESPACE, service=SERVICE)
    for name, value in dimensions.items():
        document.add_dimension(name=name, value=value)
    for name, unit, value in values:
        document.add_metric(name=name, unit=unit, value=value)
    document.flush_metrics()


def tracing_enabled() -> bool:
    return os.environ.get("POWERTOOLS_TRACE_DISABLED", "true").lower() not in ("1", "true")


def capture_lambda_handler(func: F) -> F:
    """Powertools Tracer's decorator when tracing is on; the function itself otherwise."""
    if not tracing_enabled():
        return func
    from aws_lambda_powertools import Tracer  # imports aws_xray_sdk: only pay when used

    return Tracer(service=SERVICE).capture_lambda_handler(func)
