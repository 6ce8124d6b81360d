"""run_watcher in front of a fleet (issue 13), its loop faked: one Watcher per backend, each
with its backend's client, lease name and the invocation's one handover time; the summary's
totals; one backend's failure. And aligned_release, which keeps two invocations in step."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from comfy_core import reset_container_state
from comfy_core.config import get_settings
from comfy_core.live import state as prompt_state
from comfy_core.live import watcher as watcher_module
from comfy_core.live.lease import Lease
from comfy_core.live.watcher import HANDOVER_WAIT, Watcher, WatchSummary, aligned_release, run_watcher

NOW = 1_700_000_000.0


@pytest.fixture
def fleet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMFYUI_BASE_URL", "a=http://gpu-a.test:8188,b=http://gpu-b.test:8188")
    monkeypatch.setenv("WATCHER_CLIENT_ID", "stack-watcher")
    monkeypatch.setenv("IMAGE_BUCKET", "images")
    monkeypatch.setattr(prompt_state, "now", lambda: NOW)
    reset_container_state()


class Runs:
    """Watcher.run replaced: records what each watcher was built with, answers a summary."""

    def __init__(self, statuses: dict[str, str], fail: str | None = None) -> None:
        self.statuses, self.fail = statuses, fail
        self.seen: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(Watcher, "run", lambda watcher: self.run(watcher))

    def run(self, watcher: Watcher) -> dict[str, Any]:
        with self.lock:
            self.seen[watcher.backend] = {"client": watcher.client.backend, "url": watcher.client.base_url,
                                          "release_at": watcher._release_at, "pool": watcher._shared_pool,
                                          "holder": watcher.holder}
        if watcher.backend == self.fail:
            raise RuntimeError("DynamoDB is down")
        summary = WatchSummary(status=self.statuses[watcher.backend], holder=watcher.holder, connects=1,
                               prompts_archived=2, connected_seconds=1.5, errors=["ComfyUI went away"])
        return summary.as_dict()


def test_each_backend_gets_a_watcher_of_its_own_with_one_handover_time(
        fleet: None, monkeypatch: pytest.MonkeyPatch) -> None:
    runs = Runs({"a": "handed_over", "b": "handed_over"})
    runs.install(monkeypatch)
    summary = run_watcher("request-1", lambda: 900.0)
    assert runs.seen["a"]["client"] == "a" and runs.seen["a"]["url"] == "http://gpu-a.test:8188"
    assert runs.seen["b"]["client"] == "b" and runs.seen["b"]["url"] == "http://gpu-b.test:8188"
    assert runs.seen["a"]["release_at"] == runs.seen["b"]["release_at"] is not None
    assert runs.seen["a"]["pool"] is runs.seen["b"]["pool"] is not None  # one archive pool for all
    assert {seen["holder"] for seen in runs.seen.values()} == {"request-1"}
    assert summary["status"] == "handed_over" and summary["holder"] == "request-1"
    assert (summary["connects"], summary["prompts_archived"], summary["connected_seconds"]) == (2, 4, 3.0)
    assert sorted(summary["errors"]) == ["a: ComfyUI went away", "b: ComfyUI went away"]
    assert set(summary["backends"]) == {"a", "b"} and summary["backends"]["b"]["connects"] == 1


@pytest.mark.parametrize(("statuses", "worst"), [
    ({"a": "handed_over", "b": "lease_held"}, "handed_over"),
    ({"a": "lease_held", "b": "lease_held"}, "lease_held"),
    ({"a": "handed_over", "b": "stopped"}, "stopped"),
    ({"a": "lease_lost", "b": "stopped"}, "lease_lost"),
])
def test_the_invocations_status_is_the_worst_of_its_backends(
        fleet: None, monkeypatch: pytest.MonkeyPatch, statuses: dict[str, str], worst: str) -> None:
    Runs(statuses).install(monkeypatch)
    assert run_watcher("request-1", lambda: 900.0)["status"] == worst


def test_one_watcher_failing_lets_the_other_run_its_course_then_fails_the_invocation(
        fleet: None, monkeypatch: pytest.MonkeyPatch) -> None:
    runs = Runs({"a": "handed_over"}, fail="b")
    runs.install(monkeypatch)
    with pytest.raises(RuntimeError, match="DynamoDB is down"):
        run_watcher("request-1", lambda: 900.0)
    assert set(runs.seen) == {"a", "b"}


def test_a_lone_server_runs_one_watcher_as_before(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHER_CLIENT_ID", "stack-watcher")
    monkeypatch.setenv("IMAGE_BUCKET", "images")
    reset_container_state()
    runs = Runs({"default": "handed_over"})
    runs.install(monkeypatch)
    summary = run_watcher("request-1", lambda: 900.0)
    assert list(runs.seen) == ["default"]
    assert runs.seen["default"]["release_at"] is None and runs.seen["default"]["pool"] is None
    assert "backends" not in summary and summary["connects"] == 1


def test_the_fleet_refuses_to_start_without_its_client_id(fleet: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHER_CLIENT_ID", "")
    get_settings.cache_clear()
    reset_container_state()
    from comfy_core.errors import ConfigurationError

    monkeypatch.setattr(Watcher, "run", lambda self: pytest.fail("no watcher may start"))
    with pytest.raises(ConfigurationError):
        run_watcher("request-1", lambda: 900.0)


# -- keeping two invocations in step ---------------------------------------------------------
class Leases:
    def __init__(self, held: dict[str, Lease]) -> None:
        self.held = held

    def current(self, name: str) -> Lease | None:
        return self.held.get(name)


def test_a_newcomer_lets_go_when_the_invocation_holding_the_others_does(fleet: None) -> None:
    own = NOW + 845
    leases = Leases({"a": Lease("a", "older", NOW + 60, NOW + 305)})  # b: added since, free
    assert aligned_release(leases, ["a", "b"], "me", own) == NOW + 305  # type: ignore[arg-type]


@pytest.mark.parametrize("lease", [
    Lease("a", "older", NOW + 60, NOW + HANDOVER_WAIT - 1),  # handing over now: waited for instead
    Lease("a", "me", NOW + 60, NOW + 305),  # our own
    Lease("a", "older", NOW - 1, NOW + 305),  # lapsed: its holder died
    Lease("a", "older", NOW + 60, NOW + 900),  # lets go after us anyway
])
def test_release_is_not_aligned_otherwise(fleet: None, lease: Lease) -> None:
    own = NOW + 845
    assert aligned_release(Leases({"a": lease}), ["a", "b"], "me", own) == own  # type: ignore[arg-type]


def test_an_unreadable_lease_leaves_the_release_as_it_was(fleet: None) -> None:
    class Broken:
        def current(self, name: str) -> Lease | None:
            raise RuntimeError("throttled")

    assert aligned_release(Broken(), ["a"], "me", NOW + 845) == NOW + 845  # type: ignore[arg-type]


def test_the_fleet_runner_passes_the_aligned_time_to_every_watcher(
        fleet: None, monkeypatch: pytest.MonkeyPatch) -> None:
    runs = Runs({"a": "lease_held", "b": "handed_over"})
    runs.install(monkeypatch)
    monkeypatch.setattr(watcher_module.LeaseStore, "current",
                        lambda self, name: Lease(name, "older", NOW + 60, NOW + 305) if name == "a" else None)
    run_watcher("request-1", lambda: 900.0)
    assert runs.seen["a"]["release_at"] == runs.seen["b"]["release_at"] == NOW + 305
