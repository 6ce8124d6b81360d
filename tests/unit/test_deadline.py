"""One deadline per invocation: ComfyUI calls never outlive the function (issue 10, item 8).

A fake clock stands in for time: ComfyUI "takes" 9.9 s per answer by moving it forward, so
the tests count seconds without waiting for them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import responses
from urllib3.util.retry import Retry

from comfy_core import deadline
from comfy_core.api import Request, api_handler
from comfy_core.comfyui.client import ComfyUIClient, get_client
from comfy_core.config import get_settings
from comfy_core.errors import ComfyUIBadResponseError, ComfyUITimeoutError
from tests.support.lambda_context import FakeLambdaContext

BASE = "http://comfy.test:8188"
FUNCTION_TIMEOUT_S = 28.0  # the template's Globals.Function.Timeout


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@dataclass
class Context(FakeLambdaContext):
    """A context whose remaining time follows the fake clock, as Lambda's does."""

    clock: FakeClock | None = None
    started: float = 0.0
    timeout_s: float = FUNCTION_TIMEOUT_S

    def get_remaining_time_in_millis(self) -> int:
        assert self.clock is not None
        return int((self.timeout_s - (self.clock() - self.started)) * 1000)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(deadline, "now", fake)
    monkeypatch.setattr(Retry, "get_backoff_time", lambda self: 0.0)
    return fake


def _slow_503(clock: FakeClock, seconds: float):
    def answer(request):  # type: ignore[no-untyped-def]
        clock.t += seconds
        return 503, {}, ""

    return answer


def test_retries_stop_before_the_function_would_be_killed(rsps, clock, monkeypatch) -> None:
    """Three attempts of ~9.9 s each (a proxy's slow 503) used to take 29.7 s: past the 28 s
    function timeout, so the client got API Gateway's bare 502. Now the last attempt that
    cannot fit is not started and the client gets our envelope in time."""
    monkeypatch.setenv("COMFYUI_GET_RETRIES", "2")
    client = ComfyUIClient(get_settings())
    rsps.add_callback(responses.GET, f"{BASE}/queue", callback=_slow_503(clock, 9.9))
    context = Context(clock=clock, started=clock.t)
    with deadline.from_context(context), pytest.raises(ComfyUIBadResponseError):
        client.queue()
    elapsed = clock.t - context.started
    assert elapsed < FUNCTION_TIMEOUT_S - deadline.RESERVE_SECONDS
    assert len(rsps.calls) == 2


def test_timeouts_are_cut_to_the_time_left(rsps, clock) -> None:
    client = ComfyUIClient(get_settings())
    rsps.add(responses.GET, f"{BASE}/queue", json={"queue_running": [], "queue_pending": []})
    context = Context(clock=clock, started=clock.t - 24.0)  # 4 s left, 3 before the reserve
    with deadline.from_context(context):
        client.queue()
    connect, read = rsps.calls[0].request.req_kwargs["timeout"]
    assert connect == pytest.approx(3.0)
    assert read == pytest.approx(3.0)


def test_without_a_context_the_configured_timeouts_apply(rsps) -> None:
    client = ComfyUIClient(get_settings())
    rsps.add(responses.GET, f"{BASE}/queue", json={"queue_running": [], "queue_pending": []})
    client.queue()
    assert rsps.calls[0].request.req_kwargs["timeout"] == (3.05, 10.0)


def test_no_call_is_started_without_time_to_finish_it(rsps, clock) -> None:
    client = ComfyUIClient(get_settings())
    context = Context(clock=clock, started=clock.t - 27.2)  # 0.8 s left, under the reserve
    with deadline.from_context(context), pytest.raises(ComfyUITimeoutError):
        client.queue()
    assert len(rsps.calls) == 0


def test_the_api_answers_the_documented_504_before_lambda_would_end(rsps, clock) -> None:
    """A request that spent its time on a first slow call answers 504 with the envelope
    instead of starting a second call that would outlive the function."""
    rsps.add_callback(responses.GET, f"{BASE}/history/p1",
                      callback=lambda request: (clock.__setattr__("t", clock.t + 27.0), (200, {}, "{}"))[1])

    @api_handler
    def handler(request: Request):
        client = get_client()
        client.history_entry("p1")
        return client.queue()

    context = Context(clock=clock, started=clock.t)
    answer = handler({"httpMethod": "GET", "path": "/x"}, context)
    assert answer["statusCode"] == 504
    assert json.loads(answer["body"]) == {"error": "ComfyUI did not answer in time", "status_code": 504}
    assert [call.request.path_url for call in rsps.calls] == ["/history/p1"]
    assert context.get_remaining_time_in_millis() > 0


def test_the_deadline_ends_with_the_invocation(clock) -> None:
    with deadline.from_context(Context(clock=clock, started=clock.t)):
        assert deadline.remaining() == pytest.approx(FUNCTION_TIMEOUT_S - deadline.RESERVE_SECONDS)
    assert deadline.remaining() is None


def test_other_timeouts_are_bounded_by_the_invocation_too(clock) -> None:
    """Webhook attempts and input URL fetches take their own timeout, cut to the time left."""
    assert deadline.bounded(5.0) == 5.0  # no invocation: as configured
    with deadline.from_context(Context(clock=clock, started=clock.t - 25.0)):  # 2 s before the reserve
        assert deadline.bounded(5.0) == pytest.approx(2.0)
        assert deadline.bounded(1.0) == 1.0
        clock.t += 10.0
        assert deadline.bounded(5.0) == 0.0
