"""One deadline per invocation, from the Lambda context's remaining time.

Timeouts of single requests do not add up to a promise: three GET attempts each close to the
read timeout outlast a 28 s function, and the client then gets API Gateway's bare error
instead of our 504. So each invocation sets a deadline a little before Lambda would kill it,
and every ComfyUI call sizes its timeouts (and decides whether to retry) from the time left.

A context variable, not a global: the value belongs to the request being served (and to the
thread serving it), never to the next one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

# Time kept back for what happens after the last ComfyUI call: building and logging the
# answer, flushing metrics. Measured in milliseconds; a second is generous.
RESERVE_SECONDS = 1.0

_deadline: ContextVar[float | None] = ContextVar("comfy_core_deadline", default=None)


def now() -> float:
    """The clock deadlines are measured on (tests replace it)."""
    return time.monotonic()


def remaining() -> float | None:
    """Seconds left before the invocation's deadline; None when no deadline is set."""
    deadline = _deadline.get()
    return None if deadline is None else deadline - now()


def bounded(seconds: float) -> float:
    """`seconds`, or less: never past the invocation's deadline (0 when it has passed)."""
    left = remaining()
    return seconds if left is None else max(0.0, min(seconds, left))


def seconds_from_context(context: Any) -> float | None:
    """The Lambda context's remaining time in seconds, or None without a usable context."""
    get_remaining = getattr(context, "get_remaining_time_in_millis", None)
    if not callable(get_remaining):
        return None
    try:
        return float(get_remaining()) / 1000.0
    except (TypeError, ValueError):
        return None


def seconds_left(context: Any) -> Callable[[], float] | None:
    """A clock of the invocation's time left (for loops that stop starting work before the
    timeout: the archiver's sweep, the watcher), or None without a Lambda context."""
    get_remaining = getattr(context, "get_remaining_time_in_millis", None)
    return (lambda: float(get_remaining()) / 1000.0) if callable(get_remaining) else None


@contextmanager
def from_context(context: Any, reserve: float = RESERVE_SECONDS) -> Iterator[None]:
    """Within the block, ComfyUI calls end `reserve` seconds before the invocation does.
    Without a Lambda context (scripts, some tests) there is no deadline."""
    seconds = seconds_from_context(context)
    token = _deadline.set(None if seconds is None else now() + max(0.0, seconds - reserve))
    try:
        yield
    finally:
        _deadline.reset(token)
