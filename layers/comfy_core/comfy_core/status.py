"""Use cases that read ComfyUI's state: task status, images, history, queue, cancel."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .client import ComfyUIClient
from .errors import BadRequestError, ComfyUIBadResponseError, NotFoundError

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
                "exception_type": data.get("exception_type"),
                "exception_message": data.get("exception_message"),
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


def history(client: ComfyUIClient, max_items: str | None, default: int, limit: int) -> dict[str, Any]:
    """Recent history, always bounded: the full history can be megabytes."""
    if max_items is None or max_items == "":
        count = default
    else:
        # ASCII digits only: int() would also take "１", "1_0", " 5" and "+5".
        count = int(max_items) if max_items.isascii() and max_items.isdigit() and len(max_items) <= 6 else 0
        if not 1 <= count <= limit:
            raise BadRequestError(f"'max_items' must be an integer from 1 to {limit}")
    return client.history(count)


def history_entry(client: ComfyUIClient, prompt_id: str) -> dict[str, Any]:
    entry = client.history_entry(prompt_id)
    if entry is None:
        raise NotFoundError(f"No history for prompt {prompt_id}")
    return {prompt_id: entry}


def cancel(client: ComfyUIClient, prompt_id: str) -> dict[str, Any]:
    """Remove a pending prompt or interrupt it if it is the one running. Repeating is
    harmless: a finished prompt is reported as such and nothing else is touched."""
    where, _ = _locate(client, prompt_id)
    if where == "pending":
        client.delete_pending(prompt_id)
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
