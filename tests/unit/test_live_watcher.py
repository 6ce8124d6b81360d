"""The live watcher's loop (comfy_core.live.watcher) with everything around it faked: a
socket that replays recorded messages, a ComfyUI client answering /queue, an archiver that
counts calls, an in-memory lease, and a clock that only moves when the watcher waits.
And the lease itself (comfy_core.live.lease) against DynamoDB (moto, in process)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from moto import mock_aws

from comfy_core.live import state as prompt_state
from comfy_core.config import get_settings
from comfy_core.live import lease as lease_module
from comfy_core.live.lease import Lease, LeaseLostError, LeaseStore
from comfy_core.comfyui.socket import SocketClosedError, socket_url
from comfy_core.live.watcher import HANDOVER_GRACE, SHUTDOWN_MARGIN, Watcher, handover_time
from tests.support.jobs import create_prompt_state_table
from tests.support.recordings import recording

CLIENT_ID = "stack-watcher"
TABLE = "prompt-state"


class Clock:
    """Monotonic and wall clock in one; moves only when someone waits."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        with self.lock:
            self.now += seconds


class ScriptedSocket:
    """Gives the script's frames one per receive, then silence (or a close, `then_close`)."""

    def __init__(self, clock: Clock, frames: list[str], then_close: bool = False) -> None:
        self.clock, self.frames, self.then_close = clock, list(frames), then_close
        self.connected = False
        self.opened = self.closed = 0

    def connect(self) -> None:
        self.connected = True
        self.opened += 1

    def receive(self, timeout: float) -> str | None:
        if self.frames:
            self.clock.advance(0.001)
            return self.frames.pop(0)
        if self.then_close:
            raise SocketClosedError("ComfyUI went away")
        self.clock.advance(timeout)
        return None

    def close(self) -> None:
        self.connected = False
        self.closed += 1


class FakeComfy:
    base_url = "http://comfy.test:8188"

    def __init__(self, queue: dict[str, Any] | None = None) -> None:
        self.queue_answer = queue or {"queue_running": [], "queue_pending": []}
        self.queue_calls = 0

    def queue(self) -> dict[str, Any]:
        self.queue_calls += 1
        return self.queue_answer

    def queue_remaining(self) -> int:
        return 0

    def _auth_headers(self) -> dict[str, str]:
        return {}


class MemoryLeases:
    """The lease's contract without DynamoDB (the DynamoDB one is tested below)."""

    def __init__(self, clock: Clock, holder: Lease | None = None) -> None:
        self.clock, self.lease = clock, holder
        self.released: list[str] = []

    def acquire(self, name: str, holder: str, release_at: float) -> Lease | None:
        if self.lease is not None and self.lease.holder != holder and self.lease.lease_until >= self.clock():
            return None
        self.lease = Lease(name, holder, self.clock() + 60, release_at)
        return self.lease

    def current(self, name: str) -> Lease | None:
        return self.lease

    def renew(self, lease: Lease) -> None:
        if self.lease is None or self.lease.holder != lease.holder:
            raise LeaseLostError(lease.name)
        self.lease.lease_until = self.clock() + 60

    def release(self, lease: Lease) -> None:
        if self.lease is not None and self.lease.holder == lease.holder:
            self.released.append(lease.holder)
            self.lease = None


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(prompt_state, "now", clock)
    monkeypatch.setenv("WATCHER_CLIENT_ID", CLIENT_ID)
    monkeypatch.setenv("IMAGE_BUCKET", "images")
    get_settings.cache_clear()
    return clock


@pytest.fixture
def saved(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Progress writes the watcher made (the table itself is tested in test_prompt_state)."""
    writes: list[dict[str, Any]] = []
    monkeypatch.setattr(prompt_state, "save_progress",
                        lambda prompt_id, **fields: writes.append({"prompt_id": prompt_id, **fields}) or True)
    return writes


def frames(name: str) -> list[str]:
    return [json.dumps(m) for m in recording(name)["messages"]]


def make(clock: Clock, sockets: list[ScriptedSocket], *, comfy: FakeComfy | None = None,
         leases: Any = None, seconds: float = 60.0) -> tuple[Watcher, list[str], list[int]]:
    archived: list[str] = []
    sweeps: list[int] = []
    start = clock()
    pending = list(sockets)
    watcher = Watcher(
        settings=get_settings(), client=comfy or FakeComfy(), holder="me",
        seconds_left=lambda: seconds - (clock() - start), leases=leases or MemoryLeases(clock),
        socket_factory=lambda: pending.pop(0) if len(pending) > 1 else pending[0],
        archive_one=lambda pid: archived.append(pid) or {"status": "archived"},
        sweep=lambda: sweeps.append(1) or {"status": "ok"},
        clock=clock, sleep=clock.advance,
    )
    return watcher, archived, sweeps


def test_each_prompt_is_archived_once_when_its_last_message_arrives(clock: Clock, saved: list) -> None:
    """ws_fixed_client_multi: success, cached, error and interrupt for our client id; the
    prompts of another client (ws_no_client_id's broadcasts) mixed in are left alone."""
    recorded = recording("ws_fixed_client_multi")
    ours = [item["response"]["prompt_id"] for item in recorded["post_prompt_responses"]]
    script = frames("ws_fixed_client_multi") + frames("ws_no_client_id")
    watcher, archived, sweeps = make(clock, [ScriptedSocket(clock, script)])
    summary = watcher.run()
    assert sorted(archived) == sorted(ours)  # each once (archives run side by side: any order)
    assert summary["status"] == "handed_over" and summary["prompts_started"] == 4
    assert sweeps == [1]  # the catch-up after connecting
    assert {w["prompt_id"] for w in saved} == set(ours)
    outcomes = {w["prompt_id"]: w["status"] for w in saved if w["status"] != "running"}
    assert list(outcomes.values()) == ["success", "success", "error", "interrupted"]


def test_progress_writes_are_throttled_to_one_per_prompt_per_second(clock: Clock, saved: list) -> None:
    recorded = recording("ws_success_text")
    prompt_id = recorded["post_prompt_response"]["prompt_id"]
    watcher, archived, _ = make(clock, [ScriptedSocket(clock, frames("ws_success_text"))])
    watcher.run()
    # 20 messages about the prompt within milliseconds: the first write, then the end.
    assert [w["status"] for w in saved] == ["running", "success"]
    assert archived == [prompt_id]


def test_a_dropped_socket_is_reconnected_and_history_caught_up(clock: Clock, saved: list) -> None:
    recorded = recording("ws_success_preview")
    first = ScriptedSocket(clock, frames("ws_success_preview")[:6], then_close=True)  # dies mid-prompt
    second = ScriptedSocket(clock, [])
    watcher, archived, sweeps = make(clock, [first, second])
    summary = watcher.run()
    assert summary["connects"] == 2 and summary["reconnects"] == 1
    assert sweeps == [1, 1]  # a catch-up after each connect finds what finished meanwhile
    assert archived == []  # the socket never said it was done: the sweep is the one to archive it
    assert first.closed >= 1 and recorded["post_prompt_response"]["prompt_id"] in watcher.tracker.prompts


def test_an_end_event_without_the_final_message_is_archived_after_a_short_wait(clock: Clock, saved: list) -> None:
    recorded = recording("ws_exec_error")
    script = [f for f in frames("ws_exec_error") if '"node": null' not in f]
    watcher, archived, _ = make(clock, [ScriptedSocket(clock, script)])
    watcher.run()
    assert archived == [recorded["post_prompt_response"]["prompt_id"]]


def test_a_second_invocation_exits_at_once_while_the_lease_is_held(clock: Clock) -> None:
    held = Lease("default", "other", clock() + 60, clock() + 600)
    socket = ScriptedSocket(clock, [])
    watcher, _, _ = make(clock, [socket], leases=MemoryLeases(clock, held))
    assert watcher.run()["status"] == "lease_held"
    assert socket.opened == 0


def test_the_next_watcher_waits_for_a_handover_a_few_seconds_away(clock: Clock) -> None:
    leases = MemoryLeases(clock, Lease("default", "other", clock() + 60, clock() + 3))
    original = leases.acquire

    def acquire(name: str, holder: str, release_at: float) -> Lease | None:
        if clock() >= leases.lease.release_at if leases.lease else False:
            leases.release(leases.lease)  # the holder lets go on time
        return original(name, holder, release_at)

    leases.acquire = acquire  # type: ignore[method-assign]
    socket = ScriptedSocket(clock, [])
    watcher, _, _ = make(clock, [socket], leases=leases)
    summary = watcher.run()
    assert summary["status"] == "handed_over" and socket.opened == 1
    assert leases.released == ["other", "me"]  # and it let go in turn at its own end


def test_a_watcher_that_loses_its_lease_stops_without_releasing_it(clock: Clock) -> None:
    leases = MemoryLeases(clock)
    socket = ScriptedSocket(clock, [])
    watcher, _, _ = make(clock, [socket], leases=leases, seconds=120.0)  # renewals at +20, +40...
    original = socket.receive

    def receive(timeout: float) -> str | None:
        if clock() > 1030:
            leases.lease = Lease("default", "thief", clock() + 60, clock() + 900)
        return original(timeout)

    socket.receive = receive  # type: ignore[method-assign]
    assert watcher.run()["status"] == "lease_lost"
    assert leases.lease.holder == "thief" and leases.released == []


def test_handover_time_is_just_after_the_last_tick_that_leaves_the_margin() -> None:
    # Lambda's 900 s, a tick a minute: let go 5 s after the 14th tick (the run of that tick takes over).
    assert handover_time(0.0, 899.0, 60) == 14 * 60 + HANDOVER_GRACE
    assert handover_time(100.0, 899.0, 60) == 100.0 + 14 * 60 + HANDOVER_GRACE
    # Too short for any tick: run until the margin.
    assert handover_time(0.0, 60.0, 60) == 60.0 - SHUTDOWN_MARGIN


def test_socket_url_follows_the_base_url() -> None:
    assert socket_url("http://10.0.0.5:8188", "a b") == "ws://10.0.0.5:8188/ws?clientId=a%20b"
    assert socket_url("https://comfy.example/prefix/", "x") == "wss://comfy.example/prefix/ws?clientId=x"


# -- the lease in DynamoDB ---------------------------------------------------------------------
@pytest.fixture
def table(monkeypatch: pytest.MonkeyPatch, clock: Clock) -> Iterator[LeaseStore]:
    monkeypatch.setenv("PROMPT_STATE_TABLE", TABLE)
    get_settings.cache_clear()
    with mock_aws():
        create_prompt_state_table(TABLE)
        yield LeaseStore(get_settings())


def test_one_holder_at_a_time_until_it_lapses_or_is_released(table: LeaseStore, clock: Clock) -> None:
    first = table.acquire("default", "a", release_at=clock() + 845)
    assert first is not None
    assert table.acquire("default", "b", release_at=clock() + 845) is None
    assert table.current("default").release_at == clock() + 845
    clock.advance(lease_module.LEASE_SECONDS - 1)
    table.renew(first)  # renewed in time: still a's
    clock.advance(lease_module.LEASE_SECONDS - 1)
    assert table.acquire("default", "b", release_at=clock() + 845) is None
    clock.advance(5)  # a died: no renewal, the lease lapses
    second = table.acquire("default", "b", release_at=clock() + 845)
    assert second is not None
    with pytest.raises(LeaseLostError):
        table.renew(first)
    table.release(first)  # not a's any more: nothing happens
    assert table.current("default").holder == "b"
    table.release(second)
    assert table.current("default") is None
    assert table.acquire("default", "c", release_at=clock() + 1) is not None


def test_watcher_refuses_to_run_without_its_client_id(monkeypatch: pytest.MonkeyPatch, clock: Clock) -> None:
    monkeypatch.setenv("WATCHER_CLIENT_ID", "")
    get_settings.cache_clear()
    from comfy_core.errors import ConfigurationError
    with pytest.raises(ConfigurationError):
        Watcher(settings=get_settings(), client=FakeComfy()).run()  # type: ignore[arg-type]


def test_the_watcher_learns_workflow_and_node_count_from_one_queue_read(clock: Clock, saved: list) -> None:
    recorded = recording("ws_success_text")
    prompt_id = recorded["post_prompt_response"]["prompt_id"]
    graph = {"1": {"inputs": {}}, "2": {"inputs": {"x": ["1", 0]}}}
    other = [5, "someone-else", graph, {"client_id": "not-us"}, ["2"]]
    item = [4, prompt_id, graph, {"client_id": CLIENT_ID, "comfy_serverless": {"workflow": "text_label"}}, ["2"]]
    comfy = FakeComfy({"queue_running": [item], "queue_pending": [other]})
    watcher, _, _ = make(clock, [ScriptedSocket(clock, frames("ws_success_text"))], comfy=comfy)
    watcher.run()
    assert {w["workflow"] for w in saved} == {"text_label"}
    assert saved[0]["progress"]["nodes_total"] == 2
    assert comfy.queue_calls == 1  # on connect; the start then finds the prompt known
    assert "someone-else" not in watcher._info



def test_a_failed_renewal_is_retried_while_the_lease_still_holds(clock: Clock) -> None:
    leases = MemoryLeases(clock)
    failures = [RuntimeError("DynamoDB throttled")]
    original = leases.renew

    def renew(lease: Lease) -> None:
        if failures:
            raise failures.pop()
        original(lease)

    leases.renew = renew  # type: ignore[method-assign]
    watcher, _, _ = make(clock, [ScriptedSocket(clock, [])], leases=leases, seconds=120.0)
    assert watcher.run()["status"] == "handed_over"
    assert failures == [] and leases.released == ["me"]


def test_a_workflows_first_recorded_runs_reach_the_eta_within_seconds(monkeypatch) -> None:
    """Run times of a workflow with none yet are asked again after 5 s, not 60: the ETA of a
    fresh deployment's prompts shows as soon as a first run of theirs is recorded."""
    recorded: list[float] = []
    asked: list[str] = []
    monkeypatch.setattr(prompt_state, "recent_durations",
                        lambda workflow, settings=None: asked.append(workflow) or list(recorded))
    now = [0.0]
    watcher = Watcher(settings=get_settings(), client=FakeComfy(), clock=lambda: now[0])  # type: ignore[arg-type]
    assert watcher._recent("w") == []
    recorded.append(2.5)  # the first run finished and was recorded
    now[0] = 4.9
    assert watcher._recent("w") == [] and len(asked) == 1  # still cached
    now[0] = 5.0
    assert watcher._recent("w") == [2.5] and len(asked) == 2
    recorded.append(3.0)
    now[0] = 60.0
    assert watcher._recent("w") == [2.5] and len(asked) == 2  # known runs are kept a minute
