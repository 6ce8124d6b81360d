"""One cold start, run by bench/cold.py as ``python -c <this file's text>`` in a fresh
interpreter: stdlib only, and no import of the bench package, so the child loads nothing
a Lambda container would not.

BENCH_SUBJECT is a handler module (``functions.queue.app``, or ``app`` in a built function
folder), ``baseline:import`` (``import boto3``) or ``baseline:client`` (``import boto3;
boto3.client("s3")``). A handler serves the event in BENCH_EVENT once. The report goes to
the file BENCH_RESULT (stdout is the function's log stream).

BENCH_BREAKDOWN=1 (a separate, untimed run for functions that load boto3): boto3 is imported
right after the handler, as its first event would, and every client creation and AWS call of
the first event is timed.
"""

import time

STARTED = time.perf_counter()

import importlib  # noqa: E402 - after the clock on purpose
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402


def monotonic_ns() -> int | None:
    """System-wide monotonic clock: comparable with the parent's reading at spawn."""
    clock = getattr(time, "CLOCK_MONOTONIC", None)
    return time.clock_gettime_ns(clock) if clock is not None else None


class Context:
    """The attributes of a Lambda context that Powertools reads."""

    function_name = "bench"
    function_version = "$LATEST"
    memory_limit_in_mb = 256
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:bench"
    aws_request_id = "00000000-0000-4000-8000-000000000000"
    log_group_name = "/aws/lambda/bench"
    log_stream_name = "bench"

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 28_000


def outcome(answer: object) -> str:
    if isinstance(answer, dict) and "statusCode" in answer:
        return str(answer["statusCode"])
    if isinstance(answer, dict) and "status" in answer:
        return str(answer["status"])  # the archiver answers with a run summary
    return type(answer).__name__


def instrument(marks: list) -> float:
    """Import boto3 (returns the ms it took) and time client creations and AWS calls."""
    started = time.perf_counter()
    import boto3.session
    import botocore.client

    took = (time.perf_counter() - started) * 1e3
    create, call = boto3.session.Session.client, botocore.client.BaseClient._make_api_call

    def client(self, *args, **kwargs):
        began = time.perf_counter()
        made = create(self, *args, **kwargs)
        service = args[0] if args else kwargs.get("service_name")
        marks.append((f"{service} client", (time.perf_counter() - began) * 1e3))
        return made

    def api_call(self, operation, params):
        began = time.perf_counter()
        try:
            return call(self, operation, params)
        finally:
            name = f"{self.meta.service_model.service_id} {operation}"
            marks.append((name, (time.perf_counter() - began) * 1e3))

    boto3.session.Session.client = client
    botocore.client.BaseClient._make_api_call = api_call
    return took


def run(subject: str) -> dict:
    if subject.startswith("baseline:"):
        import boto3

        loaded = time.perf_counter()
        if subject == "baseline:client":
            boto3.client("s3")
        return {"import_ms": (loaded - STARTED) * 1e3, "outcome": "ok"}
    module = importlib.import_module(subject)
    loaded = time.perf_counter()
    report = {"import_ms": (loaded - STARTED) * 1e3}
    if os.environ.get("BENCH_BREAKDOWN"):
        report["marks"] = []
        report["boto3_import_ms"] = instrument(report["marks"])
    with open(os.environ["BENCH_EVENT"], encoding="utf-8") as handle:
        event = json.load(handle)
    began = time.perf_counter()
    answer = module.lambda_handler(event, Context())
    report.update(first_event_ms=(time.perf_counter() - began) * 1e3, outcome=outcome(answer))
    return report


def main() -> None:
    report = run(os.environ["BENCH_SUBJECT"])
    report.update(answered_ns=monotonic_ns(), boto3=("boto3" in sys.modules))
    with open(os.environ["BENCH_RESULT"], "w", encoding="utf-8") as handle:
        json.dump(report, handle)


if __name__ == "__main__":  # `python -c` runs it as __main__; importing it does nothing
    main()
