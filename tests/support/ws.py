"""A WebSocket listener for tests: connects to a ComfyUI stand-in's /ws and keeps every
message it receives, on a thread of its own."""

from __future__ import annotations

import json
import threading
from typing import Any

import websocket

from tests.support.waiting import wait_for

TIMEOUT = 10.0


class Listener:
    def __init__(self, base_url: str, client_id: str | None, first: dict[str, Any] | None = None) -> None:
        url = base_url.replace("http://", "ws://", 1) + "/ws"
        if client_id is not None:
            url += f"?clientId={client_id}"
        self.ws = websocket.create_connection(url, timeout=TIMEOUT, suppress_origin=True)
        if first is not None:
            self.ws.send(json.dumps(first))
        self.messages: list[Any] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while True:
            try:
                opcode, data = self.ws.recv_data()
            except (websocket.WebSocketException, OSError):
                return
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                return
            with self._lock:
                self.messages.append(json.loads(data) if opcode == websocket.ABNF.OPCODE_TEXT
                                     else {"binary": True, "length": len(data)})

    def snapshot(self) -> list[Any]:
        with self._lock:
            return list(self.messages)

    def wait_for_done(self, prompt_id: str) -> list[Any]:
        """Every message until `executing` null of that prompt has arrived."""
        def done() -> list[Any] | None:
            got = self.snapshot()
            return got if any(m.get("type") == "executing" and m["data"].get("node") is None
                              and m["data"].get("prompt_id") == prompt_id for m in got) else None
        return wait_for(done, timeout=TIMEOUT, what=f"executing null of {prompt_id}")

    def wait_for_count(self, count: int) -> list[Any]:
        def enough() -> list[Any] | None:
            got = self.snapshot()
            return got if len(got) >= count else None
        return wait_for(enough, timeout=TIMEOUT, what=f"{count} messages")

    def close(self) -> None:
        self.ws.close(timeout=2)
        self._thread.join(timeout=TIMEOUT)
