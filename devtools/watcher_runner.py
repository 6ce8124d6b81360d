"""Runs the template's watcher function the way its schedule does, in a process of its own:
``python -m devtools.watcher_runner <module> <timeout seconds> <tick seconds>``.

A child of the local stack (devtools/dev.py), started with the function's environment
(LocalStack.child_environment). Not in the stack's own process: the watcher holds its
invocation for up to 15 minutes, and the local stack runs its in-process handlers one at a
time. Every tick starts an invocation on a thread of its own, as EventBridge would start
one in Lambda, so the lease, the exit of a second invocation and the handover all run as
deployed. SIGTERM or SIGINT ends the process (the lease lapses by itself).
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
import threading
import time
import uuid
from typing import Any

TICK_EVENT = {"detail-type": "Scheduled Event", "source": "aws.scheduler", "detail": {}}


class Context:
    """The parts of a Lambda context the watcher and Powertools read."""

    def __init__(self, timeout: float) -> None:
        self.aws_request_id = str(uuid.uuid4())
        self.function_name = "watcher"
        self.function_version = "$LATEST"
        self.memory_limit_in_mb = 256
        self.invoked_function_arn = "arn:aws:lambda:us-east-1:000000000000:function:watcher"
        self._deadline = time.monotonic() + timeout

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def _invoke(handler: Any, timeout: float) -> None:
    try:
        result = handler(dict(TICK_EVENT), Context(timeout))
        print(f"watcher: {result.get('status')} ({result.get('prompts_archived', 0)} archived)",
              file=sys.stderr, flush=True)
    except Exception as exc:  # noqa: BLE001 - a failed invocation is logged, as Lambda would
        print(f"watcher: invocation failed: {exc!r}", file=sys.stderr, flush=True)


def main(argv: list[str]) -> int:
    module_name, timeout, tick = argv[0], float(argv[1]), float(argv[2])
    handler = importlib.import_module(module_name).lambda_handler
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    # The first invocation at once (a developer should not wait a minute), then every tick.
    while True:
        threading.Thread(target=_invoke, args=(handler, timeout), daemon=True).start()
        if stop.wait(tick):
            return 0


if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    # At once, as Lambda ends an environment: a fleet's watcher runs one thread per backend
    # in a ThreadPoolExecutor, whose threads a normal interpreter exit would wait for (until
    # the invocation's handover, minutes away); the lease lapses by itself.
    os._exit(code)
