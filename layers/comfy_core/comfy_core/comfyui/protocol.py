"""ComfyUI's WebSocket messages, read into what the watcher acts on. Pure: no I/O.

Facts from the recordings (tests/fixtures/comfyui/ws_*, NOTES.md "WebSocket"):
- `status` (queue_remaining = running + pending) goes to every socket; every other message
  about a prompt only to the socket whose clientId is the prompt's client_id, except
  `progress_state` and `execution_interrupted` of prompts without a client_id, which go to
  all. So a prompt this tracker has not seen start (execution_start on our socket) or been
  told about (`adopt`, after a reconnect) is someone else's: its messages are ignored.
- Per prompt: execution_start, execution_cached, then per node progress_state (running),
  executing {node}, [progress {value, max} per step], [executed], progress_state
  (finished); then execution_success | execution_error | execution_interrupted, status,
  and last `executing` with node null. ComfyUI writes the history entry between the end
  event and that last message, so the entry is only sure to exist after `executing` null.
- A socket that connects mid-run first gets `executing {node}` without a prompt_id.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

END_EVENTS = {
    "execution_success": "success",
    "execution_error": "error",
    "execution_interrupted": "interrupted",
}


@dataclass(frozen=True)
class Started:
    prompt_id: str


@dataclass(frozen=True)
class Progressed:
    prompt_id: str


@dataclass(frozen=True)
class Ended:
    """The outcome is known (execution_success/error/interrupted); history may lag."""

    prompt_id: str
    outcome: str


@dataclass(frozen=True)
class Done:
    """`executing` with node null: the prompt's history entry is written."""

    prompt_id: str


@dataclass(frozen=True)
class QueueStatus:
    queue_remaining: int


Event = Started | Progressed | Ended | Done | QueueStatus


@dataclass
class PromptProgress:
    """What the socket told about one running prompt."""

    prompt_id: str
    started_at: float | None = None  # epoch seconds (execution_start's timestamp)
    nodes_total: int | None = None  # nodes that will run (graph needed by the outputs, less cached)
    cached: set[str] = field(default_factory=set)
    finished: set[str] = field(default_factory=set)
    node: str | None = None
    step: int | None = None
    steps: int | None = None
    outcome: str | None = None

    def snapshot(self) -> dict[str, Any]:
        """The stored `progress` object: node-level from progress_state, step-level from
        progress. `fraction` counts the running node's steps as part of a node."""
        done = len(self.finished - self.cached)
        total = self.nodes_total
        if total is not None and total < done:
            total = done  # a graph we could not read fully: never above 1
        partial = 0.0
        if self.node is not None and self.steps and self.step is not None and self.node not in self.finished:
            partial = min(1.0, max(0.0, self.step / self.steps))
        if self.outcome == "success":
            fraction: float | None = 1.0
        elif total:
            fraction = round(min(1.0, (done + partial) / total), 3)
        else:
            fraction = None
        return {
            "fraction": fraction,
            "nodes_done": done,
            "nodes_total": total,
            "node": self.node,
            "step": self.step,
            "steps": self.steps,
        }


def nodes_to_run(graph: Any, outputs: Any, cached: set[str] | None = None) -> int | None:
    """How many nodes a prompt will execute: everything the output nodes need, less what
    ComfyUI answered from its cache. None when the graph cannot be read."""
    if not isinstance(graph, dict) or not isinstance(outputs, list):
        return None
    needed: set[str] = set()
    stack = [str(node) for node in outputs]
    while stack:
        node_id = stack.pop()
        if node_id in needed or node_id not in graph:
            continue
        needed.add(node_id)
        node = graph[node_id]
        inputs = node.get("inputs") if isinstance(node, dict) else None
        for value in (inputs or {}).values() if isinstance(inputs, dict) else ():
            if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
                stack.append(value[0])
    return len(needed - (cached or set()))


class Tracker:
    """Reads messages one at a time; keeps the progress of the prompts that are ours."""

    def __init__(self) -> None:
        self.prompts: dict[str, PromptProgress] = {}
        self.queue_remaining: int | None = None

    def adopt(self, prompt_id: str, nodes_total: int | None = None) -> PromptProgress:
        """Start tracking a prompt known to be ours (found running after a reconnect, or
        learnt from the queue)."""
        progress = self.prompts.get(prompt_id)
        if progress is None:
            progress = self.prompts[prompt_id] = PromptProgress(prompt_id)
        if nodes_total is not None and progress.nodes_total is None:
            progress.nodes_total = nodes_total
        return progress

    def forget(self, prompt_id: str) -> None:
        self.prompts.pop(prompt_id, None)

    def read(self, raw: str | bytes) -> list[Event]:
        """The events in one frame. Binary frames (previews of SaveImageWebsocket) and
        anything that is not a JSON object with a `type` are skipped."""
        if isinstance(raw, (bytes, bytearray)):
            return []
        try:
            message = json.loads(raw)
        except ValueError:
            return []
        if not isinstance(message, dict) or not isinstance(message.get("data"), dict):
            return []
        return self.handle(str(message.get("type")), message["data"])

    def handle(self, kind: str, data: dict[str, Any]) -> list[Event]:
        if kind == "status":
            return self._status(data)
        prompt_id = data.get("prompt_id")
        if not isinstance(prompt_id, str):
            return []  # the mid-run replay `executing {node}` has no id: nothing to pin it on
        if kind == "execution_start":
            progress = self.adopt(prompt_id)
            timestamp = data.get("timestamp")
            if isinstance(timestamp, (int, float)):
                progress.started_at = timestamp / 1000.0
            return [Started(prompt_id)]
        progress = self.prompts.get(prompt_id)
        if progress is None:
            return []  # not ours (broadcast of a prompt without client_id), or long gone
        if kind == "execution_cached":
            nodes = data.get("nodes")
            if isinstance(nodes, list):
                progress.cached |= {str(node) for node in nodes}
            return [Progressed(prompt_id)]
        if kind == "executing":
            node = data.get("node")
            if node is None:
                return [Done(prompt_id)]
            progress.node, progress.step, progress.steps = str(node), None, None
            return [Progressed(prompt_id)]
        if kind == "progress_state":
            return self._progress_state(progress, data)
        if kind == "progress":
            value, maximum = data.get("value"), data.get("max")
            if isinstance(value, (int, float)) and isinstance(maximum, (int, float)) and maximum > 0:
                progress.step, progress.steps = int(value), int(maximum)
                if isinstance(data.get("node"), str):
                    progress.node = data["node"]
                return [Progressed(prompt_id)]
            return []
        if kind in END_EVENTS:
            progress.outcome = END_EVENTS[kind]
            progress.node = None
            return [Ended(prompt_id, END_EVENTS[kind])]
        return []  # executed, feature_flags...: nothing the watcher needs

    def _status(self, data: dict[str, Any]) -> list[Event]:
        try:
            remaining = int(data["status"]["exec_info"]["queue_remaining"])
        except (KeyError, TypeError, ValueError):
            return []
        self.queue_remaining = remaining
        return [QueueStatus(remaining)]

    @staticmethod
    def _progress_state(progress: PromptProgress, data: dict[str, Any]) -> list[Event]:
        nodes = data.get("nodes")
        if not isinstance(nodes, dict):
            return []
        running = None
        for node_id, state in nodes.items():
            if not isinstance(state, dict):
                continue
            if state.get("state") == "finished":
                progress.finished.add(str(node_id))
            elif state.get("state") == "running":
                running = str(node_id)
                value, maximum = state.get("value"), state.get("max")
                # A node that reports steps (a sampler) has max > 1; plain nodes say 0 of 1.
                if isinstance(value, (int, float)) and isinstance(maximum, (int, float)) and maximum > 1:
                    progress.step, progress.steps = int(value), int(maximum)
        if running is not None:
            progress.node = running
        elif progress.node in progress.finished:
            progress.node = None
        return [Progressed(progress.prompt_id)]


class Throttle:
    """At most one write per prompt per `interval` seconds; the latest state is written
    when the interval has passed (`due`), so a burst of messages ends in one write."""

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self._last: dict[str, float] = {}
        self._pending: set[str] = set()

    def offer(self, prompt_id: str, at: float) -> bool:
        """Whether to write now; if not, the prompt is remembered for `due`."""
        last = self._last.get(prompt_id)
        if last is None or at - last >= self.interval:
            self._last[prompt_id] = at
            self._pending.discard(prompt_id)
            return True
        self._pending.add(prompt_id)
        return False

    def due(self, at: float) -> list[str]:
        """Prompts with a held-back change whose interval has passed (now marked written)."""
        ready = [pid for pid in self._pending if at - self._last.get(pid, 0.0) >= self.interval]
        for prompt_id in ready:
            self._pending.discard(prompt_id)
            self._last[prompt_id] = at
        return ready

    def forget(self, prompt_id: str) -> None:
        self._last.pop(prompt_id, None)
        self._pending.discard(prompt_id)
