"""comfy_core.announce.events.put_event never raises: an event reports work already done."""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from comfy_core.announce import events


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


def test_an_oversized_detail_is_sent_cut_not_dropped(monkeypatch) -> None:
    """A failed prompt with a very long error used to be dropped after its manifest was
    written: never announced. Now it is sent, cut and marked."""
    client = RecordingClient()
    use(monkeypatch, client)
    detail = {"prompt_id": "p1", "status": "error",
              "error": {"exception_message": "boom " * 100_000, "node_id": "4"},
              "keys": [f"images/p1/2/{n:05d}.png" for n in range(20_000)]}
    assert events.put_event("ComfyUI Prompt Failed", detail, "default") is True
    [entry] = client.entries
    assert len(entry["Detail"].encode()) <= 256 * 1024  # PutEvents' limit per entry
    sent = json.loads(entry["Detail"])
    assert sent["prompt_id"] == "p1" and sent["status"] == "error" and sent["error"]["node_id"] == "4"
    assert sent["detail_truncated"] is True
    assert sent["error"]["exception_message"].startswith("boom boom")
    assert "[truncated" in sent["error"]["exception_message"]
    assert 0 < len(sent["keys"]) < 20_000 and sent["keys"][0] == "images/p1/2/00000.png"


def test_a_detail_that_fits_is_sent_unchanged(monkeypatch) -> None:
    client = RecordingClient()
    use(monkeypatch, client)
    detail = {"prompt_id": "p1", "message": "m" * 10_000}
    assert events.put_event("x", detail, "default") is True
    assert json.loads(client.entries[0]["Detail"]) == detail
