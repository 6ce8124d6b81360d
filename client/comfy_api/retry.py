"""When to try a request again, and how long to wait first."""

from __future__ import annotations

import email.utils
import time
from dataclasses import dataclass

# Always worth another try: the queue is full or S3 hiccuped, and nothing was done.
RETRY_ALWAYS = frozenset({429, 503})
# Worth another try only when repeating cannot do a thing twice: a GET, a DELETE (the API
# says repeating a cancel is harmless) or a run carrying an Idempotency-Key. 409 is the
# same key still being submitted by an earlier try.
RETRY_IF_IDEMPOTENT = frozenset({409, 502, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """`max_attempts` tries at most; each wait is the answer's Retry-After, else
    `backoff` doubled per try, never more than `max_delay`; and no retry once the waits
    would add up to more than `max_total_wait` seconds."""

    max_attempts: int = 6
    backoff: float = 0.5
    max_delay: float = 30.0
    max_total_wait: float = 120.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait before try `attempt + 1` (attempt counts from 1)."""
        wanted = retry_after if retry_after is not None else self.backoff * 2 ** (attempt - 1)
        return max(0.0, min(wanted, self.max_delay))

    def should_retry(self, status_code: int | None, *, idempotent: bool) -> bool:
        """None is no answer at all (connection refused, reset, timed out)."""
        if status_code is None:
            return idempotent
        return status_code in RETRY_ALWAYS or (idempotent and status_code in RETRY_IF_IDEMPOTENT)


NO_RETRIES = RetryPolicy(max_attempts=1)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Retry-After in seconds: a number of seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
