"""Use cases that read ComfyUI's state: task status, images, history, queue, cancel."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from . import answers
from .comfyui.client import ComfyUIClient
from .errors import BadRequestError, ComfyUIBadResponseError, NotFoundError
from .live import state as prompt_state

# Events in a history entry's `status.messages` that end a prompt.
_END_EVENTS = ("execution_success", "execution_error", "execution_interrupted")


# -- outputs ---------------------------------------------------------------------------
def iter_file_outputs(outputs: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    """(node_id, file) for every file a prompt produced: `images`, `gifs`, video, audio...
    Anything listed with filename and type is a file; `text` and `animated` are not."""
    if not isinstance(outputs, dict):
        return
    for node_id, node_output in outputs.items():
        if not isinstance(node_output, dict):
            continue
        for items in node_output.values():
            if not isinstance(items, list):
                continue
            for item in items:
                if isinstance(item, dict) and "filename" in item and "type" in item:
                    yield str(node_id), item


def describe_images(client: ComfyUIClient, entry: dict[str, Any]) -> list[dict[str, Any]]:
    """The seed's image objects: url, filename, subfolder and the type ComfyUI reported."""
    images = []
    for node_id, item in iter_file_outputs(entry.get("outputs")):
        image = {
            "filename": item["filename"],
            "subfolder": item.get("subfolder", ""),
            "type": item["type"],
            "node_id": node_id,
        }
        image["url"] = client.view_url(image)
        images.append(image)
    return images


# -- history entries -------------------------------------------------------------------
def _messages(entry: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    status = entry.get("status") or {}
    result = []
    for message in status.get("messages") or []:
        if isinstance(message, list) and len(message) == 2 and isinstance(message[1], dict):
            result.append((str(message[0]), message[1]))
    return result


def started_at(entry: dict[str, Any]) -> float | None:
    """ComfyUI's timestamp (ms) of the prompt's execution_start, or None."""
    for event, data in _messages(entry):
        if event == "execution_start" and isinstance(data.get("timestamp"), (int, float)):
            return float(data["timestamp"])
    return None


def execution_time(entry: dict[str, Any]) -> float | None:
    """Seconds from execution_start to the event that ended the prompt."""
    start = end = None
    for event, data in _messages(entry):
        timestamp = data.get("timestamp")
        if not isinstance(timestamp, (int, float)):
            continue
        if event == "execution_start":
            start = timestamp
        elif event in _END_EVENTS:
            end = timestamp
    if start is None or end is None:
        return None
    return round((end - start) / 1000.0, 3)


def failed(entry: dict[str, Any]) -> bool:
    """Whether a finished prompt failed (execution error or interrupt). The one definition
    the API, the archiver's manifest and the prompt events share."""
    status = entry.get("status") if isinstance(entry.get("status"), dict) else {}
    if "status_str" in status:
        return status.get("status_str") != "success"
    return status.get("completed") is False  # entries without status_str: ComfyUI before 0.2


def failure_details(entry: dict[str, Any]) -> dict[str, Any]:
    for event, data in reversed(_messages(entry)):
        if event == "execution_error":
            return {
                "type": "execution_error",
                "node_id": data.get("node_id"),
                "node_type": data.get("node_type"),
                "exception_type": answers.error_text(data.get("exception_type")),
                # Cut and without server paths: it goes to clients, manifests and events.
                "exception_message": answers.error_text(data.get("exception_message")),
            }
        if event == "execution_interrupted":
            return {
                "type": "interrupted",
                "node_id": data.get("node_id"),
                "node_type": data.get("node_type"),
                "exception_type": None,
                "exception_message": "Execution was interrupted",
            }
    return {
        "type": "unknown",
        "node_id": None,
        "node_type": None,
        "exception_type": None,
        "exception_message": "ComfyUI reported the prompt as failed",
    }


def finished_status(client: ComfyUIClient, prompt_id: str, entry: dict[str, Any]) -> dict[str, Any]:
    images = describe_images(client, entry)
    base = {
        "prompt_id": prompt_id,
        "images": images,
        "execution_time": execution_time(entry),
        "node_errors": {},
    }
    if failed(entry):
        failure = failure_details(entry)
        message = (
            "Task was interrupted"
            if failure["type"] == "interrupted"
            else f"Task failed in node {failure['node_id']} ({failure['node_type']})"
        )
        return {"status": "error", "message": message, "error": failure, **base}
    # A finished prompt with no file outputs is still completed (with an empty list):
    # no answer may leave a polling client waiting for images that will never come.
    message = "Image generation completed" if images else "Completed without image outputs"
    return {"status": "completed", "message": message, **base}


# -- queue -----------------------------------------------------------------------------
def _queue_items(queue: dict[str, Any], key: str) -> list[list[Any]]:
    items = queue.get(key)
    if not isinstance(items, list):
        raise ComfyUIBadResponseError("ComfyUI queue has an unexpected shape")
    # Items are 5-element arrays [number, prompt_id, prompt, extra_data, outputs].
    return [item for item in items if isinstance(item, list) and len(item) >= 2]


def queue_summary(queue: dict[str, Any]) -> dict[str, Any]:
    """Running and pending prompt ids with 1-based positions in execution order.
    `queue_pending` comes in heap order: sort by the queue number (item[0])."""
    running = _queue_items(queue, "queue_running")
    pending = sorted(_queue_items(queue, "queue_pending"), key=lambda item: item[0])
    return {
        "queue_running": [{"prompt_id": item[1], "number": item[0]} for item in running],
        "queue_pending": [
            {"prompt_id": item[1], "number": item[0], "position": position}
            for position, item in enumerate(pending, start=1)
        ],
        "running_count": len(running),
        "pending_count": len(pending),
    }


def _locate(client: ComfyUIClient, prompt_id: str) -> tuple[str, int | None]:
    """('running' | 'pending' | 'absent', position) from one GET /queue."""
    summary = queue_summary(client.queue())
    if any(item["prompt_id"] == prompt_id for item in summary["queue_running"]):
        return "running", None
    for item in summary["queue_pending"]:
        if item["prompt_id"] == prompt_id:
            return "pending", item["position"]
    return "absent", None


def held_item(client: ComfyUIClient, prompt_id: str) -> list[Any] | None:
    """ComfyUI's item of a prompt it holds (queued, running or finished):
    [number, prompt_id, graph, extra_data, ...], `[]` for a history entry without one;
    None when it does not hold the prompt.

    Queue first, then history: a prompt that finishes between the two calls is still found
    (the other order could miss it, and a keyed submission would send it again)."""
    queue = client.queue()
    for key in ("queue_running", "queue_pending"):
        for item in queue.get(key) or []:
            if isinstance(item, list) and len(item) >= 2 and item[1] == prompt_id:
                return item
    entry = client.history_entry(prompt_id)
    if entry is None:
        return None
    item = entry.get("prompt")
    return item if isinstance(item, list) else []


# -- use cases -------------------------------------------------------------------------
def queue_status(client: ComfyUIClient, prompt_id: str) -> dict[str, Any]:
    """pending, running or not_found, for a prompt ComfyUI's history does not hold."""
    where, position = _locate(client, prompt_id)
    if where == "running":
        return {
            "status": "running",
            "message": "Task is currently running",
            "prompt_id": prompt_id,
            "execution_info": {"prompt_id": prompt_id},
        }
    if where == "pending":
        return {
            "status": "pending",
            "message": "Task is waiting in queue",
            "prompt_id": prompt_id,
            "queue_position": position,
        }
    return {"status": "not_found", "message": "Task not found", "prompt_id": prompt_id}


def task_status(client: ComfyUIClient, prompt_id: str) -> dict[str, Any]:
    """A finished prompt costs one ComfyUI request (history); otherwise a second (queue)."""
    entry = client.history_entry(prompt_id)
    if entry is not None:
        return finished_status(client, prompt_id, entry)
    return queue_status(client, prompt_id)


def images(client: ComfyUIClient, prompt_id: str) -> dict[str, Any]:
    entry = client.history_entry(prompt_id)
    found = describe_images(client, entry) if entry is not None else []
    if not found:
        raise NotFoundError(f"No images found for prompt {prompt_id}")
    return {"status": "success", "prompt_id": prompt_id, "images": found}


def _count(raw: str | None, name: str, low: int, high: int) -> int | None:
    """An optional integer query parameter; ASCII digits only (int() would also take
    "１", "1_0", " 5" and "+5")."""
    if raw is None or raw == "":
        return None
    value = int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 9 else -1
    if not low <= value <= high:
        raise BadRequestError(f"'{name}' must be an integer from {low} to {high}")
    return value


def _flag(raw: str | None, name: str) -> bool:
    if raw is None or raw.lower() in ("", "false", "0"):
        return False
    if raw.lower() in ("true", "1"):
        return True
    raise BadRequestError(f"'{name}' must be true or false")


@dataclass
class HistoryPage:
    """An answer of GET /api/history: ComfyUI's shape `{prompt_id: entry}` in `body`; what
    was left out to stay within the response size limit in `headers`."""

    body: dict[str, Any]
    headers: dict[str, str]


MAX_OFFSET = 10_000_000


def history_query(query: dict[str, str], default: int, limit: int) -> tuple[int, int | None, bool]:
    """(max_items, offset, include_prompt) of a GET /api/history query, checked."""
    count = _count(query.get("max_items"), "max_items", 1, limit) or default
    offset = _count(query.get("offset"), "offset", 0, MAX_OFFSET)
    return count, offset, _flag(query.get("include_prompt"), "include_prompt")


def history(client: ComfyUIClient, query: dict[str, str], default: int, limit: int,
            budget: int = answers.ANSWER_BUDGET_BYTES) -> HistoryPage:
    """Recent history, always bounded: by count (`max_items`, default `default`, at most
    `limit`), by content (no workflow graphs unless `include_prompt=true`, long strings
    cut) and by size (`budget` bytes).

    Without `offset` (the newest `max_items`) a page over the budget keeps the newest
    entries; with `offset` (counted from the oldest, as ComfyUI does) it keeps the first
    ones and `X-Next-Offset` says where the next page starts. Either way `X-Truncated:
    true` marks a page that left entries out."""
    count, offset, include_prompt = history_query(query, default, limit)
    entries = ((prompt_id, answers.public_entry(entry, include_prompt=include_prompt))
               for prompt_id, entry in client.history_items(count, offset))
    return page(entries, offset, budget)


def page(entries: Iterable[tuple[str, Any]], offset: int | None,
         budget: int = answers.ANSWER_BUDGET_BYTES) -> HistoryPage:
    """A history page of public entries, oldest first, within `budget` bytes (see history)."""
    kept: deque[tuple[str, Any, int]] = deque()
    total, omitted, next_offset = 2, 0, None
    for index, (prompt_id, entry) in enumerate(entries):
        size = answers.size_of({prompt_id: entry})  # its braces stand for the ", " between entries
        if size + 2 > budget:
            omitted += 1  # one entry alone over the limit: never sendable
            continue
        if offset is not None and total + size > budget:
            next_offset = offset + index
            break
        kept.append((prompt_id, entry, size))
        total += size
        while total > budget:  # newest first: drop the oldest kept
            total -= kept.popleft()[2]
            omitted += 1
    headers: dict[str, str] = {}
    if omitted or next_offset is not None:
        headers["X-Truncated"] = "true"
    if next_offset is not None:
        headers["X-Next-Offset"] = str(next_offset)
    return HistoryPage({prompt_id: entry for prompt_id, entry, _ in kept}, headers)


def history_entry(client: ComfyUIClient, prompt_id: str) -> dict[str, Any]:
    entry = client.history_entry(prompt_id)
    if entry is None:
        raise NotFoundError(f"No history for prompt {prompt_id}")
    return {prompt_id: answers.public_entry(entry)}


def cancel(client: ComfyUIClient, prompt_id: str) -> dict[str, Any]:
    """Remove a pending prompt or interrupt it if it is the one running. Repeating is
    harmless: a finished prompt is reported as such and nothing else is touched."""
    where, _ = _locate(client, prompt_id)
    if where == "pending":
        client.delete_pending(prompt_id)
        # ComfyUI forgets a dequeued prompt at once: the record keeps task_status truthful.
        prompt_state.record_cancelled(prompt_id)
        return {"status": "cancelled", "prompt_id": prompt_id, "was": "pending",
                "message": "Task removed from the queue"}
    if where == "running":
        client.interrupt(prompt_id)
        return {"status": "interrupting", "prompt_id": prompt_id, "was": "running",
                "message": "Interrupt sent; the task stops when its current node finishes"}
    entry = client.history_entry(prompt_id)
    if entry is not None:
        state = finished_status(client, prompt_id, entry)["status"]
        return {"status": "finished", "prompt_id": prompt_id, "was": state,
                "message": "Task had already finished; nothing to cancel"}
    raise NotFoundError(f"Task {prompt_id} not found")
