"""One WebSocket to ComfyUI (`GET /ws?clientId=...`), through websocket-client.

Blocking with a short receive timeout: the watcher's loop wakes at least twice a second to
renew its lease, flush progress and watch the clock, whether or not ComfyUI says anything.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import websocket

from ..errors import ComfyUIUnreachableError

# Close frame wait: ComfyUI answers a close at once; a dead peer must not hold up a handover.
CLOSE_TIMEOUT_SECONDS = 1.0


class SocketClosedError(ComfyUIUnreachableError):
    """ComfyUI closed the socket or the connection broke (restart, network)."""


def socket_url(base_url: str, client_id: str) -> str:
    """ws(s)://host[:port][/prefix]/ws?clientId=... for an http(s) base URL."""
    parts = urlsplit(base_url)
    scheme = "wss" if parts.scheme == "https" else "ws"
    path = parts.path.rstrip("/") + "/ws"
    return urlunsplit((scheme, parts.netloc, path, f"clientId={quote(client_id, safe='')}", ""))


class ComfySocket:
    """Connect, receive (None when nothing came within the timeout), close."""

    def __init__(self, url: str, headers: dict[str, str], connect_timeout: float) -> None:
        self.url = url
        self.headers = headers
        self.connect_timeout = connect_timeout
        self._ws: Any = None

    @property
    def connected(self) -> bool:
        return self._ws is not None and bool(self._ws.connected)

    def connect(self) -> None:
        ws = websocket.WebSocket(enable_multithread=False)
        try:
            # No Origin header: ComfyUI refuses an Origin that does not match its host.
            ws.connect(self.url, header=[f"{name}: {value}" for name, value in self.headers.items()],
                       timeout=self.connect_timeout, suppress_origin=True)
        except (websocket.WebSocketException, OSError) as exc:
            ws.shutdown()
            raise ComfyUIUnreachableError("ComfyUI's WebSocket is unreachable") from exc
        self._ws = ws

    def receive(self, timeout: float) -> str | bytes | None:
        """One text (str) or binary (bytes) message, or None after `timeout` seconds."""
        if self._ws is None:
            raise SocketClosedError("Not connected")
        self._ws.settimeout(timeout)
        try:
            opcode, data = self._ws.recv_data()
        except websocket.WebSocketTimeoutException:
            return None
        except (websocket.WebSocketException, OSError) as exc:
            raise SocketClosedError("ComfyUI's WebSocket broke off") from exc
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            raise SocketClosedError("ComfyUI closed the WebSocket")
        if opcode == websocket.ABNF.OPCODE_TEXT:
            return data.decode("utf-8", "replace")
        return bytes(data)

    def close(self) -> None:
        """Close and wait briefly for ComfyUI's answer: once this returns, ComfyUI has
        dropped the socket (or the connection is gone), so a successor may connect with
        the same clientId without the old socket later unregistering it."""
        ws, self._ws = self._ws, None
        if ws is None:
            return
        try:
            ws.close(timeout=CLOSE_TIMEOUT_SECONDS)
        except (websocket.WebSocketException, OSError):
            ws.shutdown()
