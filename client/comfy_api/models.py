"""The API's answers as dataclasses. Each keeps the answer it came from in `raw` (what
`--json` prints), so a field the API adds later is never lost on the way through."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Task states (GET /api/task_status) after which nothing changes any more.
FINISHED = frozenset({"completed", "error", "cancelled", "not_found"})


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


@dataclass(frozen=True)
class Submitted:
    """POST /api/workflow/{name}: the prompt is queued in ComfyUI."""

    prompt_id: str
    number: float | None
    node_errors: dict[str, Any]
    client_id: str | None
    raw: dict[str, Any] = field(repr=False, compare=False)
    backend: str | None = None  # the ComfyUI server of a fleet that got it ("default" with one)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Submitted":
        return cls(
            prompt_id=str(data["prompt_id"]),
            number=_number(data.get("number")),
            node_errors=_dict(data.get("node_errors")),
            client_id=_str(data.get("client_id")),
            raw=data,
            backend=_str(data.get("backend")),
        )


@dataclass(frozen=True)
class Upload:
    """POST /api/uploads: where to PUT an input image, and the id to name it by."""

    upload_id: str
    upload_url: str
    method: str
    headers: dict[str, str]
    expires_in: int | None
    max_bytes: int | None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Upload":
        return cls(
            upload_id=str(data["upload_id"]),
            upload_url=str(data["upload_url"]),
            method=str(data.get("method") or "PUT"),
            headers={str(k): str(v) for k, v in _dict(data.get("headers")).items()},
            expires_in=_int(data.get("expires_in")),
            max_bytes=_int(data.get("max_bytes")),
        )


@dataclass(frozen=True)
class Progress:
    """A running prompt's progress, as the live watcher last wrote it."""

    fraction: float | None
    nodes_done: int
    nodes_total: int | None
    node: str | None
    step: int | None
    steps: int | None
    eta_seconds: float | None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Progress":
        return cls(
            fraction=_number(data.get("fraction")),
            nodes_done=_int(data.get("nodes_done")) or 0,
            nodes_total=_int(data.get("nodes_total")),
            node=_str(data.get("node")),
            step=_int(data.get("step")),
            steps=_int(data.get("steps")),
            eta_seconds=_number(data.get("eta_seconds")),
        )


@dataclass(frozen=True)
class Image:
    """One output file of a prompt. `download_url` is the archived copy in S3 (null until
    it is copied); `size` is only known when the answer says it."""

    filename: str
    subfolder: str
    type: str | None
    node_id: str
    url: str | None
    archived: bool
    s3_key: str | None
    download_url: str | None
    lost: bool = False
    size: int | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Image":
        return cls(
            filename=str(data.get("filename") or ""),
            subfolder=str(data.get("subfolder") or ""),
            type=_str(data.get("type")),
            node_id=str(data.get("node_id") or ""),
            url=_str(data.get("url")),
            archived=bool(data.get("archived")),
            s3_key=_str(data.get("s3_key")),
            download_url=_str(data.get("download_url")),
            lost=bool(data.get("lost")),
            size=_int(data.get("size")),
        )

    @property
    def path(self) -> str:
        """subfolder/filename, as ComfyUI names it."""
        return f"{self.subfolder}/{self.filename}" if self.subfolder else self.filename


@dataclass(frozen=True)
class Failure:
    """Why a prompt failed (an `error` status)."""

    type: str | None
    node_id: str | None
    node_type: str | None
    exception_type: str | None
    exception_message: str | None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Failure":
        return cls(*(_str(data.get(name)) for name in
                     ("type", "node_id", "node_type", "exception_type", "exception_message")))

    def describe(self) -> str:
        where = " ".join(part for part in (
            f"node {self.node_id}" if self.node_id else "",
            f"({self.node_type})" if self.node_type else "") if part)
        what = ": ".join(part for part in (self.exception_type, self.exception_message) if part)
        if not what:
            what = self.type or "failed"
        return " ".join(f"{where}: {what}".split()) if where else " ".join(what.split())


@dataclass(frozen=True)
class TaskStatus:
    """GET /api/task_status/{prompt_id}. `retry_after` is the answer's Retry-After header:
    sent while a finished prompt's files are still being copied to S3."""

    status: str
    prompt_id: str
    message: str
    queue_position: int | None = None
    progress: Progress | None = None
    images: tuple[Image, ...] = ()
    execution_time: float | None = None
    archive_status: str | None = None
    failure: Failure | None = None
    cancelled_at: float | None = None
    retry_after: float | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: dict[str, Any], retry_after: float | None = None) -> "TaskStatus":
        progress = data.get("progress")
        failure = data.get("error")
        return cls(
            status=str(data.get("status")),
            prompt_id=str(data.get("prompt_id")),
            message=str(data.get("message") or ""),
            queue_position=_int(data.get("queue_position")),
            progress=Progress.from_json(progress) if isinstance(progress, dict) else None,
            images=tuple(Image.from_json(i) for i in data.get("images") or [] if isinstance(i, dict)),
            execution_time=_number(data.get("execution_time")),
            archive_status=_str(_dict(data.get("archive")).get("status")),
            failure=Failure.from_json(failure) if isinstance(failure, dict) else None,
            cancelled_at=_number(data.get("cancelled_at")),
            retry_after=retry_after,
            raw=data,
        )

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @property
    def copying(self) -> bool:
        """Finished, but its files are not in S3 yet: ask again for their download_url."""
        return self.archive_status == "copying"


@dataclass(frozen=True)
class QueueItem:
    prompt_id: str
    number: float | None
    position: int | None  # 1-based among the pending (of its backend); None for the running one
    backend: str | None = None  # with a fleet: the server whose queue it is in


@dataclass(frozen=True)
class Queue:
    """GET /api/queue."""

    running: tuple[QueueItem, ...]
    pending: tuple[QueueItem, ...]
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Queue":
        def items(key: str) -> tuple[QueueItem, ...]:
            return tuple(
                QueueItem(str(i.get("prompt_id")), _number(i.get("number")), _int(i.get("position")),
                          _str(i.get("backend")))
                for i in data.get(key) or [] if isinstance(i, dict))
        return cls(running=items("queue_running"), pending=items("queue_pending"), raw=data)


@dataclass(frozen=True)
class Cancelled:
    """DELETE /api/task/{prompt_id}: `cancelled` (was pending), `interrupting` (was running)
    or `finished` (nothing to do)."""

    status: str
    prompt_id: str
    was: str | None
    message: str
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Cancelled":
        return cls(str(data.get("status")), str(data.get("prompt_id")), _str(data.get("was")),
                   str(data.get("message") or ""), raw=data)


@dataclass(frozen=True)
class HistoryItem:
    """One entry of GET /api/history, summed up: its ComfyUI status, how many files it
    produced, and when it started and ended (epoch seconds, from ComfyUI's messages)."""

    prompt_id: str
    status: str | None
    outputs: int
    started_at: float | None
    ended_at: float | None

    @classmethod
    def from_json(cls, prompt_id: str, entry: dict[str, Any]) -> "HistoryItem":
        state = _dict(entry.get("status"))
        outputs = sum(
            len(files) for node in _dict(entry.get("outputs")).values() if isinstance(node, dict)
            for key, files in node.items() if key in ("images", "gifs", "audio", "video") and isinstance(files, list))
        times: dict[str, float] = {}
        for message in state.get("messages") or []:
            if isinstance(message, list) and len(message) == 2 and isinstance(message[1], dict):
                stamp = _number(message[1].get("timestamp"))
                if stamp is not None:
                    times[str(message[0])] = stamp / 1000  # ComfyUI writes milliseconds
        ended = next((times[k] for k in ("execution_success", "execution_error", "execution_interrupted")
                      if k in times), None)
        return cls(prompt_id, _str(state.get("status_str")), outputs, times.get("execution_start"), ended)


@dataclass(frozen=True)
class HistoryPage:
    """GET /api/history: entries oldest first; `truncated` when the API left some out to
    stay under Lambda's answer limit (`next_offset` says where to go on, with --offset)."""

    items: tuple[HistoryItem, ...]
    truncated: bool
    next_offset: int | None
    raw: dict[str, Any] = field(repr=False, compare=False)
