"""DELETE /api/task then GET /api/task_status: a dequeued prompt stays `cancelled` while its
prompt-state item lasts (ComfyUI itself forgets it at once). DynamoDB from moto, ComfyUI from
recorded answers."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from moto import mock_aws

from comfy_core.live import state as prompt_state
from comfy_core.config import get_settings
from tests.support.jobs import create_prompt_state_table
from tests.support.handlers import event, invoke
from tests.support.recordings import recording

TABLE = "prompt-state"
# Deleted between the two recorded queues (queue_running_and_pending -> queue_after_delete).
DEQUEUED = "202dc9a5-af9d-439b-b60d-93a6066af86d"
INTERRUPTED = "170ba43b-ba66-42ad-b8c9-7369f34ec7ff"  # history_id_interrupted_targeted


@pytest.fixture
def table(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("PROMPT_STATE_TABLE", TABLE)
    get_settings.cache_clear()
    with mock_aws():
        create_prompt_state_table(TABLE)
        yield TABLE


def status_of(comfy: Any, prompt_id: str) -> dict[str, Any]:
    comfy.routes.setdefault(("GET", f"/history/{prompt_id}"), (200, {}))
    status, body = invoke("task_status", event("task_status", pathParameters={"prompt_id": prompt_id}))
    assert status == 200, body
    return body


def cancel(prompt_id: str) -> dict[str, Any]:
    status, body = invoke("cancel_task", event("cancel_task", pathParameters={"prompt_id": prompt_id}))
    assert status == 200, body
    return body


def test_a_dequeued_prompt_answers_cancelled_not_not_found(comfy: Any, table: str) -> None:
    comfy.routes[("GET", "/queue")] = (200, recording("queue_running_and_pending"))
    comfy.routes[("POST", "/queue")] = (200, None)
    assert cancel(DEQUEUED)["status"] == "cancelled"

    comfy.routes[("GET", "/queue")] = (200, recording("queue_after_delete"))  # ComfyUI forgot it
    answer = status_of(comfy, DEQUEUED)
    assert answer["status"] == "cancelled" and answer["prompt_id"] == DEQUEUED
    assert answer["cancelled_at"] == pytest.approx(time.time(), abs=60)
    # Kept as long as the table keeps the prompt's other records.
    item = prompt_state.load(DEQUEUED)
    assert item["expires_at"] == pytest.approx(time.time() + get_settings().prompt_state_expiry, abs=60)


def test_an_interrupted_running_prompt_still_finishes_as_an_interrupted_error(comfy: Any, table: str) -> None:
    comfy.routes[("GET", "/queue")] = (200, {"queue_running": [[0, INTERRUPTED, {}, {}, []]], "queue_pending": []})
    comfy.routes[("POST", "/interrupt")] = (200, None)
    assert cancel(INTERRUPTED)["status"] == "interrupting"

    comfy.routes[("GET", f"/history/{INTERRUPTED}")] = (200, recording("history_id_interrupted_targeted"))
    answer = status_of(comfy, INTERRUPTED)
    assert (answer["status"], answer["error"]["type"]) == ("error", "interrupted")
    assert prompt_state.load(INTERRUPTED) is None


def test_a_prompt_never_cancelled_is_still_not_found(comfy: Any, table: str) -> None:
    comfy.routes[("GET", "/queue")] = (200, recording("queue_after_delete"))
    assert status_of(comfy, DEQUEUED)["status"] == "not_found"


def test_the_cancel_succeeds_when_the_record_cannot_be_written(comfy: Any, table: str,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMPT_STATE_TABLE", "no-such-table")
    get_settings.cache_clear()
    comfy.routes[("GET", "/queue")] = (200, recording("queue_running_and_pending"))
    comfy.routes[("POST", "/queue")] = (200, None)
    assert cancel(DEQUEUED)["status"] == "cancelled"  # the prompt is out of the queue all the same
    comfy.routes[("GET", "/queue")] = (200, recording("queue_after_delete"))
    assert status_of(comfy, DEQUEUED)["status"] == "not_found"
