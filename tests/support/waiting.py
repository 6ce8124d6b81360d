"""Polling with a ceiling: for things that happen in another thread or process."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(condition: Callable[[], T], timeout: float, interval: float = 0.02, what: str = "condition") -> T:
    """Call `condition` until it returns something truthy, and return that; fail the test
    with an AssertionError when `timeout` seconds pass first. The timeout is a ceiling for a
    stuck test, never a speed check: a fast machine returns as soon as the condition holds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} not met within {timeout}s (last: {result!r})")
        time.sleep(interval)
