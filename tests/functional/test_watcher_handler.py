"""The watcher function and what it changes in the API, with S3, DynamoDB and EventBridge
from moto (a rule copies events to a queue the test reads), ComfyUI's HTTP side from recorded
history and files, and its socket replaying a recorded message sequence.

Also the race the prompt-state table closes: two archivers that reach the same prompt at
once announce it once."""

from __future__ import annotations

import copy
import json
import threading
import time
from typing import Any

import pytest
from moto import mock_aws

from comfy_core.archive import sweep as archive
from comfy_core.live import state as prompt_state
from comfy_core.announce import webhooks
from comfy_core.config import get_settings
from comfy_core.live import watcher
from comfy_core.comfyui.socket import SocketClosedError
from comfy_core.storage import s3_client
from functions.task_status.app import lambda_handler as task_status
from functions.watcher.app import lambda_handler as watcher_handler
from tests.support.fake_comfy import StreamingComfy, use_session
from tests.support.handlers import event
from tests.support.jobs import capture_events, create_prompt_state_table, events_in
from tests.support.lambda_context import FakeLambdaContext
from tests.support.recordings import recorded_file, recording

BUCKET = "image-bucket"
TABLE = "prompt-state"
CLIENT_ID = "stack-watcher"
SAVE_ID = "aa5001e0-e7a3-4f42-a12c-f2f26746c0e6"  # history_id_success_save: one output file
HOOK = "https://hooks.example.com/comfy"


def saved_entry() -> dict[str, Any]:
    entry = copy.deepcopy(recording("history_id_success_save"))[SAVE_ID]
    entry["prompt"][3] = {"client_id": CLIENT_ID, "comfy_serverless": {
        "workflow": "empty_save", "job_id": "order-1", "trigger": "sqs", "webhook_url": HOOK}}
    return entry


@pytest.fixture
def comfy(monkeypatch: pytest.MonkeyPatch) -> StreamingComfy:
    session = StreamingComfy(history={SAVE_ID: saved_entry()})
    session.files[("output", "", "harness_save_00001_.png")] = recorded_file("view_output.png")
    session.routes[("GET", "/queue")] = (200, {"queue_running": [], "queue_pending": []})
    use_session(monkeypatch, session)
    return session


@pytest.fixture
def hooks(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, dict[str, Any]]]:
    sent: list[tuple[str, str, dict[str, Any]]] = []
    monkeypatch.setattr(webhooks, "deliver", lambda url, kind, detail, settings=None: sent.append(
        (url, kind, detail)) or True)
    return sent


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch, comfy: StreamingComfy) -> Any:
    monkeypatch.setenv("IMAGE_BUCKET", BUCKET)
    monkeypatch.setenv("PROMPT_STATE_TABLE", TABLE)
    monkeypatch.setenv("WATCHER_CLIENT_ID", CLIENT_ID)
    get_settings.cache_clear()
    with mock_aws():
        s3_client().create_bucket(Bucket=BUCKET)
        create_prompt_state_table(TABLE)
        yield capture_events({"source": ["comfy-serverless-api"]})


def detail_types(events: list[dict[str, Any]]) -> list[str]:
    return sorted(item["detail-type"] for item in events)


# -- exactly once ------------------------------------------------------------------------------
def test_two_archivers_finishing_the_same_prompt_at_once_announce_it_once(
        aws: str, hooks: list, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both passed the "no manifest yet" check (as a watcher and a sweep can): both copy the
    files and write the manifest, one announces.

    DynamoDB applies conditional writes to one item one at a time; moto's in-process
    backend, shared by two threads, does not, and let both claims through once in a loaded
    run. The claim call is serialised here to give moto DynamoDB's own guarantee."""
    atomic = threading.Lock()
    claim = prompt_state.claim_announcement

    def serialised(*args: Any, **kwargs: Any) -> bool:
        with atomic:
            return claim(*args, **kwargs)

    monkeypatch.setattr(prompt_state, "claim_announcement", serialised)
    start = threading.Barrier(2)
    results: list[archive.PromptResult] = []

    def archiver() -> None:
        start.wait()
        results.append(archive.archive_prompt(SAVE_ID, saved_entry()))

    threads = [threading.Thread(target=archiver) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [r.status for r in results] == ["archived", "archived"]
    assert detail_types(events_in(aws)) == ["ComfyUI Images Archived", "ComfyUI Prompt Completed"]
    assert len(hooks) == 1
    assert isinstance(prompt_state.load(SAVE_ID)["announced"], float)


def test_an_archiver_that_comes_later_finds_the_claim_and_stays_silent(aws: str, hooks: list) -> None:
    archive.archive_prompt(SAVE_ID, saved_entry())
    events_in(aws)
    again = archive.archive_prompt(SAVE_ID, saved_entry())  # e.g. the manifest check raced
    assert again.status == "archived" and not again.event_sent
    assert events_in(aws) == [] and len(hooks) == 1


def test_without_the_state_table_announcing_is_as_before(aws: str, hooks: list,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMPT_STATE_TABLE", "")
    get_settings.cache_clear()
    archive.archive_prompt(SAVE_ID, saved_entry())
    assert detail_types(events_in(aws)) == ["ComfyUI Images Archived", "ComfyUI Prompt Completed"]
    assert archive.archive_one(SAVE_ID)["status"] == "already_archived"  # the manifest still guards
    assert events_in(aws) == [] and len(hooks) == 1


def test_a_successful_run_time_feeds_the_workflows_eta(aws: str, hooks: list) -> None:
    archive.archive_prompt(SAVE_ID, saved_entry())
    durations = prompt_state.recent_durations("empty_save")
    assert durations == [archive.execution_time(saved_entry())]


# -- the watcher function ------------------------------------------------------------------------
class ReplaySocket:
    """ws_success_preview's messages, re-addressed to the recorded saved prompt."""

    def __init__(self) -> None:
        recorded = recording("ws_success_preview")
        text = json.dumps(recorded["messages"]).replace(recorded["post_prompt_response"]["prompt_id"], SAVE_ID)
        self.frames = [json.dumps(message) for message in json.loads(text)]
        self.connected = False

    def connect(self) -> None:
        self.connected = True

    def receive(self, timeout: float) -> str | None:
        if self.frames:
            return self.frames.pop(0)
        time.sleep(min(timeout, 0.05))
        return None

    def close(self) -> None:
        self.connected = False


class ShortContext(FakeLambdaContext):
    """A Lambda with a few seconds left beyond the watcher's shutdown margin."""

    def __init__(self) -> None:
        super().__init__(function_name="watcher")
        self.end = time.monotonic() + watcher.SHUTDOWN_MARGIN + 1.0

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.end - time.monotonic()) * 1000))


def test_the_watcher_archives_and_announces_a_prompt_from_its_socket(aws: str, hooks: list,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(watcher.Watcher, "_new_socket", lambda self: ReplaySocket())
    summary = watcher_handler(event("watcher_scheduled"), ShortContext())
    assert summary["status"] == "handed_over" and summary["connects"] == 1
    assert summary["prompts_started"] == 1
    assert summary["prompts_archived"] + summary["prompts_already_archived"] == 1
    assert archive.load_manifest(SAVE_ID)["files"][0]["archived"] is True
    assert detail_types(events_in(aws)) == ["ComfyUI Images Archived", "ComfyUI Prompt Completed"]
    assert [kind for _, kind, _ in hooks] == ["ComfyUI Prompt Completed"]
    state = prompt_state.load(SAVE_ID)
    assert (state["status"], state["backend"], state["progress"]["fraction"]) == ("success", "default", 1.0)
    assert prompt_state.load("lease#default") is None  # released for the next one


def test_a_second_watcher_exits_at_once(aws: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from comfy_core.live.lease import LeaseStore
    LeaseStore(get_settings()).acquire("default", "the-running-one", release_at=prompt_state.now() + 600)
    monkeypatch.setattr(watcher.Watcher, "_new_socket", lambda self: pytest.fail("must not connect"))
    summary = watcher_handler(event("watcher_scheduled"), ShortContext())
    assert summary["status"] == "lease_held"


def test_comfyui_down_the_whole_time_ends_cleanly(aws: str, monkeypatch: pytest.MonkeyPatch) -> None:
    class Refused(ReplaySocket):
        def connect(self) -> None:
            raise SocketClosedError("connection refused")

    monkeypatch.setattr(watcher.Watcher, "_new_socket", lambda self: Refused())
    summary = watcher_handler(event("watcher_scheduled"), ShortContext())
    assert summary["connects"] == 0 and summary["errors"]
    assert prompt_state.load("lease#default") is None


# -- what task_status answers --------------------------------------------------------------------
def test_a_running_prompt_answers_its_progress_from_one_item(aws: str, comfy: StreamingComfy) -> None:
    running = "0c0ffee0-0000-4000-8000-000000000001"
    comfy.routes[("GET", "/queue")] = (200, {"queue_running": [[1, running, {}, {}, []]], "queue_pending": []})
    prompt_state.record_duration("text_label", 10.0)
    started = prompt_state.now() - 4.0
    prompt_state.save_progress(running, status="running", workflow="text_label", started_at=started,
                               expected_end=started + 10.0,
                               progress={"fraction": 0.5, "nodes_done": 3, "nodes_total": 6, "node": "7",
                                         "step": 4, "steps": 20})
    answer = task_status(event("task_status", pathParameters={"prompt_id": running}), FakeLambdaContext())
    body = json.loads(answer["body"])
    assert body["status"] == "running" and body["execution_info"] == {"prompt_id": running}
    progress = body["progress"]
    eta = progress.pop("eta_seconds")
    assert progress == {"fraction": 0.5, "nodes_done": 3, "nodes_total": 6, "node": "7", "step": 4, "steps": 20}
    assert 5.0 <= eta <= 6.0


def test_a_running_prompt_without_progress_yet_says_null(aws: str, comfy: StreamingComfy) -> None:
    running = "0c0ffee0-0000-4000-8000-000000000002"
    comfy.routes[("GET", "/queue")] = (200, {"queue_running": [[1, running, {}, {}, []]], "queue_pending": []})
    body = json.loads(task_status(event("task_status", pathParameters={"prompt_id": running}),
                                  FakeLambdaContext())["body"])
    assert body["status"] == "running" and body["progress"] is None


def test_the_first_completed_answer_says_the_copy_is_under_way(aws: str, hooks: list) -> None:
    evt = event("task_status", pathParameters={"prompt_id": SAVE_ID})
    first = task_status(evt, FakeLambdaContext())
    body = json.loads(first["body"])
    assert body["status"] == "completed" and body["images"][0]["download_url"] is None
    assert body["archive"] == {"status": "copying", "retry_after": 2}
    assert first["headers"]["Retry-After"] == "2"
    archive.archive_one(SAVE_ID)
    later = task_status(evt, FakeLambdaContext())
    body = json.loads(later["body"])
    assert body["archive"] == {"status": "archived", "retry_after": None}
    assert body["images"][0]["download_url"] and "Retry-After" not in later["headers"]
