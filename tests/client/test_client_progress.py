"""What --wait shows: on a terminal, a spinner with the queue position, then a bar fed by
the status answer's progress (node, step, the API's ETA); in a pipe, a line per change."""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console

from comfy_api.models import TaskStatus
from comfy_api.progress import BarDisplay, LineDisplay, clock, display_for


def status(state: str, **fields: Any) -> TaskStatus:
    return TaskStatus.from_json({"status": state, "message": "", "prompt_id": "p1", **fields})


def recording() -> Console:
    # Not a terminal: the live display is drawn once, when it stops (as in a log).
    return Console(file=io.StringIO(), force_terminal=False, width=100, color_system=None, record=True)


def shown(display_updates: list[TaskStatus]) -> str:
    console = recording()
    with BarDisplay(console) as display:
        for update in display_updates:
            display.update(update)
    return console.export_text()


RUNNING = status("running", execution_info={"prompt_id": "p1"}, progress={
    "fraction": 0.4, "nodes_done": 2, "nodes_total": 5, "node": "3", "step": 4, "steps": 10, "eta_seconds": 75})


def test_a_queued_prompt_shows_its_position() -> None:
    assert "queued" in shown([status("pending", queue_position=3)])
    assert "#3 in the queue" in shown([status("pending", queue_position=3)])


def test_a_running_prompt_shows_fraction_node_step_and_the_apis_eta() -> None:
    text = shown([status("pending", queue_position=1), RUNNING])
    assert "running" in text and "40%" in text
    assert "node 3 · step 4/10 · 2/5 nodes" in text
    assert "ETA 1:15" in text


def test_a_finished_prompt_fills_the_bar_and_says_how_long() -> None:
    done = status("completed", images=[], execution_time=3.25, archive={"status": "archived", "retry_after": None})
    text = shown([RUNNING, done])
    assert "✓ completed" in text and "100%" in text and "in 3.2 s · 0 outputs" in text
    assert "ETA" not in text


def test_a_failure_is_marked_and_names_the_node() -> None:
    failed = status("error", images=[], error={"node_id": "3", "node_type": "KSampler",
                                               "exception_message": "out of memory"})
    text = shown([RUNNING, failed])
    assert "✗ failed" in text and "node 3 (KSampler): out of memory" in text


def test_lines_in_a_pipe_say_each_change_once() -> None:
    console = recording()
    display = LineDisplay(console)
    for update in [status("pending", queue_position=2), status("pending", queue_position=2),
                   status("pending", queue_position=1), RUNNING, RUNNING,
                   status("completed", images=[], execution_time=1.0)]:
        display.update(update)
    assert console.export_text().splitlines() == [
        "p1: queued (#2 in the queue)", "p1: queued (#1 in the queue)", "p1: running",
        "p1: completed (in 1.0 s · 0 outputs)"]


def test_a_terminal_gets_the_bar_and_a_pipe_the_lines() -> None:
    assert isinstance(display_for(Console(file=io.StringIO(), force_terminal=True)), BarDisplay)
    assert isinstance(display_for(Console(file=io.StringIO(), force_terminal=False)), LineDisplay)


def test_clock() -> None:
    assert [clock(5), clock(75), clock(3725), clock(None)] == ["0:05", "1:15", "1:02:05", ""]
