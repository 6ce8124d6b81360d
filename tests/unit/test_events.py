"""comfy_core.events.put_event never raises: an event reports work already done."""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from comfy_core import events


class RecordingClient:
    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []

    def put_events(self, Entries: list[dict[str, Any]]) -> dict[str, Any]:  # noqa: N803 - boto3's name
        self.entries.extend(Entries)
        return {"FailedEntryCount": 0, "Entries": [{"EventId": "1"}]}


def use(monkeypatch, client: RecordingClient) -> None:
    # Still an lru_cache: the autouse fixture clears the container's caches afterwards.
    monkeypatch.setattr(events, "events_client", lru_cache(maxsize=1)(lambda: client))


def test_lone_surrogate_from_comfyui_is_sent_escaped_not_raised(monkeypatch) -> None:
    client = RecordingClient()
    use(monkeypatch, client)
    detail = {"exception_message": "bad \ud800 text", "workflow": "café"}
    assert events.put_event("ComfyUI Prompt Failed", detail, "default") is True
    body = client.entries[0]["Detail"]
    body.encode("utf-8")  # valid UTF-8 for EventBridge
    assert json.loads(body) == detail  # nothing lost: the escapes decode to the same strings


def test_oversized_detail_is_not_sent(monkeypatch) -> None:
    client = RecordingClient()
    use(monkeypatch, client)
    assert events.put_event("x", {"blob": "a" * (events.MAX_DETAIL_BYTES + 1)}, "default") is False
    assert client.entries == []
