"""Retries: 429 and 503 honour Retry-After (capped, and bounded in total); 502/504/409 and
lost connections are retried only where repeating is safe; a run keeps one Idempotency-Key
across its retries. Waits are recorded (the `sleeps` fixture), never slept."""

from __future__ import annotations

import pytest
import requests
import responses

from comfy_api import ComfyAPI, RetryPolicy
from comfy_api.errors import (APIConnectionError, BadRequestError, ComfyUIUnavailableError, ComfyUITimeoutError,
                              RateLimitedError, StorageUnavailableError)
from comfy_api.retry import parse_retry_after

from .fakes import API_URL, Sleeps

RUN = f"{API_URL}/api/workflow/text_label"
STATUS = f"{API_URL}/api/task_status/p1"
SUBMITTED = {"status": "success", "prompt_id": "p1", "number": 3, "node_errors": {}, "error": None,
             "client_id": "c"}
PENDING = {"status": "pending", "message": "Task is pending", "prompt_id": "p1", "queue_position": 1}


def envelope(status: int, message: str) -> dict[str, object]:
    return {"error": message, "status_code": status}


@responses.activate
def test_a_full_queue_is_retried_after_retry_after_with_the_same_idempotency_key(api: ComfyAPI,
                                                                                 sleeps: Sleeps) -> None:
    responses.post(RUN, status=429, json=envelope(429, "ComfyUI queue is full"), headers={"Retry-After": "3"})
    responses.post(RUN, status=429, json=envelope(429, "ComfyUI queue is full"), headers={"Retry-After": "7"})
    responses.post(RUN, json=SUBMITTED)

    submitted = api.run("text_label", {"prompt": "a fox"}, idempotency_key="key-1")

    assert submitted.prompt_id == "p1"
    assert sleeps == [3.0, 7.0]
    keys = [call.request.headers["Idempotency-Key"] for call in responses.calls]
    assert keys == ["key-1"] * 3


@responses.activate
def test_a_run_without_a_key_makes_one_and_keeps_it_across_retries(api: ComfyAPI) -> None:
    responses.post(RUN, status=503, json=envelope(503, "Storage unavailable"))
    responses.post(RUN, json=SUBMITTED)
    api.run("text_label", {})
    first, second = (call.request.headers["Idempotency-Key"] for call in responses.calls)
    assert first == second and len(first) == 36


@responses.activate
def test_without_retry_after_the_waits_double(api: ComfyAPI, sleeps: Sleeps) -> None:
    for _ in range(3):
        responses.get(STATUS, status=503, json=envelope(503, "Storage unavailable"))
    responses.get(STATUS, json=PENDING)
    assert api.status("p1").queue_position == 1
    assert sleeps == [0.5, 1.0, 2.0]


@responses.activate
def test_a_long_retry_after_is_capped(sleeps: Sleeps) -> None:
    api = ComfyAPI(API_URL, sleep=sleeps, retry=RetryPolicy(max_delay=10, max_total_wait=100))
    responses.get(STATUS, status=429, json=envelope(429, "Too Many Requests"), headers={"Retry-After": "3600"})
    responses.get(STATUS, json=PENDING)
    api.status("p1")
    assert sleeps == [10.0]


@responses.activate
def test_retries_stop_before_the_total_wait_is_exceeded(sleeps: Sleeps) -> None:
    api = ComfyAPI(API_URL, sleep=sleeps, retry=RetryPolicy(max_attempts=10, max_delay=60, max_total_wait=120))
    responses.post(RUN, status=429, json=envelope(429, "ComfyUI queue is full"), headers={"Retry-After": "50"})
    with pytest.raises(RateLimitedError) as raised:
        api.run("text_label", {})
    assert sleeps == [50.0, 50.0]  # a third wait would make 150 s
    assert len(responses.calls) == 3
    assert raised.value.retry_after == 50.0 and str(raised.value) == "429 ComfyUI queue is full"


@responses.activate
def test_retries_stop_after_max_attempts(sleeps: Sleeps) -> None:
    api = ComfyAPI(API_URL, sleep=sleeps, retry=RetryPolicy(max_attempts=4))
    responses.get(STATUS, status=503, json=envelope(503, "Storage unavailable"))
    with pytest.raises(StorageUnavailableError):
        api.status("p1")
    assert len(responses.calls) == 4 and len(sleeps) == 3


@responses.activate
def test_comfyui_trouble_is_retried_on_reads_and_runs(api: ComfyAPI) -> None:
    responses.get(STATUS, status=502, json=envelope(502, "ComfyUI unreachable"))
    responses.get(STATUS, json=PENDING)
    responses.post(RUN, status=504, json={**envelope(504, "ComfyUI timed out"), "prompt_id": "p1"})
    responses.post(RUN, status=409, json=envelope(409, "A request with this key is in progress"))
    responses.post(RUN, json=SUBMITTED)
    assert api.status("p1").status == "pending"
    assert api.run("text_label", {}, idempotency_key="k").prompt_id == "p1"
    assert len(responses.calls) == 5


@responses.activate
def test_an_upload_grant_is_not_repeated_after_a_502(api: ComfyAPI, sleeps: Sleeps) -> None:
    """Each POST /api/uploads makes a new upload: only 429/503 (nothing made) are retried."""
    responses.post(f"{API_URL}/api/uploads", status=502, json=envelope(502, "Bad gateway"))
    with pytest.raises(ComfyUIUnavailableError):
        api.create_upload("a.png", "image/png", 10)
    assert len(responses.calls) == 1 and sleeps == []


@pytest.mark.parametrize("status", [400, 403, 404, 413, 415, 422, 500])
@responses.activate
def test_answers_that_would_say_the_same_again_are_not_retried(api: ComfyAPI, sleeps: Sleeps, status: int) -> None:
    responses.post(RUN, status=status, json=envelope(status, "no"))
    with pytest.raises(Exception):
        api.run("text_label", {})
    assert len(responses.calls) == 1 and sleeps == []


@responses.activate
def test_a_lost_connection_is_retried_on_a_read_then_reported(api: ComfyAPI, sleeps: Sleeps) -> None:
    responses.get(STATUS, body=requests.ConnectionError("Connection refused"))
    with pytest.raises(APIConnectionError, match=r"^cannot reach https://api.test: connection refused$"):
        api.status("p1")
    assert len(responses.calls) == 6 and len(sleeps) == 5


@responses.activate
def test_a_timeout_is_named(sleeps: Sleeps) -> None:
    api = ComfyAPI(API_URL, sleep=sleeps, retry=RetryPolicy(max_attempts=1))
    responses.post(RUN, body=requests.ReadTimeout("read timed out"))
    with pytest.raises(APIConnectionError, match="timed out"):
        api.run("text_label", {})


@responses.activate
def test_a_504_keeps_the_prompt_id_the_api_sent(sleeps: Sleeps) -> None:
    api = ComfyAPI(API_URL, sleep=sleeps, retry=RetryPolicy(max_attempts=1))
    responses.post(RUN, status=504, json={**envelope(504, "ComfyUI timed out"), "prompt_id": "p9"})
    with pytest.raises(ComfyUITimeoutError) as raised:
        api.run("text_label", {})
    assert raised.value.details["prompt_id"] == "p9"


@responses.activate
def test_bad_input_is_not_retried_and_says_why(api: ComfyAPI) -> None:
    responses.post(RUN, status=400, json=envelope(400, "Unknown parameter(s): promt (did you mean 'prompt'?)"))
    with pytest.raises(BadRequestError, match=r"^400 Unknown parameter\(s\): promt"):
        api.run("text_label", {"promt": "x"})


def test_retry_after_reads_seconds_and_http_dates() -> None:
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412490.0) == 0.0  # in the past
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
