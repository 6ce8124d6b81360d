"""The ComfyUI stand-in's WebSocket (`GET /ws?clientId=X`), speaking what ComfyUI 0.3.64 was
recorded saying (tests/fixtures/comfyui/ws_*, NOTES.md "WebSocket"):

- On connect: `status` with `sid` (the clientId, or a made-up 32-hex id without one). A
  first message `feature_flags` is answered with the server's flags; a later one is not.
  A socket that connects with the running prompt's client id also gets `executing {node}`
  without a prompt id (the node running now).
- `status` (queue_remaining = running + pending) goes to every registered socket: when a
  prompt is queued, when it starts and when it finishes.
- For a prompt with client_id C, every other message goes only to the socket registered as
  C: execution_start, execution_cached, per node progress_state (running), executing,
  [progress], [executed], progress_state (finished), then the end event, status, and last
  `executing` with node null. A prompt without client_id sends the other sockets only
  progress_state and execution_interrupted.
- One socket per clientId (ComfyUI's dict `sockets[sid]`): a newer socket with the same id
  takes the registration, the older one goes silent; when any socket with that id closes,
  the id is unregistered and the newer one, though open, receives nothing.

The HTTP server is the stand-in's stdlib one: a GET /ws with `Upgrade: websocket` is taken
over here on the handler's thread (the sans-I/O protocol of `websockets` frames the bytes).
"""

from __future__ import annotations

import json
import socket
import threading
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.datastructures import Headers
from websockets.frames import Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol

WS_PATHS = ("/ws", "/api/ws")
SERVER_FEATURES = {"supports_preview_metadata": True, "max_upload_size": 104857600}
READ_CHUNK = 65536


class _Socket:
    """One accepted connection: the protocol state and the bytes out, under one lock
    (messages are sent from the worker thread while the handler thread reads)."""

    def __init__(self, connection: socket.socket, reader: Any, protocol: ServerProtocol, sid: str) -> None:
        self.connection = connection
        # The handler's buffered reader: it may already hold the client's first frame,
        # read ahead with the upgrade request's headers.
        self.reader = reader
        self.protocol = protocol
        self.sid = sid
        self.lock = threading.Lock()
        self.first_message = True

    def send_json(self, message: dict[str, Any]) -> None:
        with self.lock:
            if self.protocol.state is not State.OPEN:
                return
            self.protocol.send_text(json.dumps(message).encode())
            self._flush()

    def _flush(self) -> None:
        for chunk in self.protocol.data_to_send():
            try:
                if chunk:
                    self.connection.sendall(chunk)
                else:  # the protocol's end of stream: half-close
                    self.connection.shutdown(socket.SHUT_WR)
            except OSError:
                return  # the peer is gone; the reading side notices and cleans up

    def receive(self, data: bytes) -> list[str]:
        """Feed bytes in; the text messages they completed."""
        with self.lock:
            if data:
                self.protocol.receive_data(data)
            else:
                self.protocol.receive_eof()
            texts = [frame.data.decode("utf-8", "replace")
                     for frame in self.protocol.events_received() if frame.opcode is Opcode.TEXT]
            self._flush()  # pongs and the close handshake's answer
            return texts

    @property
    def closed(self) -> bool:
        return self.protocol.state is State.CLOSED

    def kill(self) -> None:
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class WebSocketHub:
    """ComfyUI's socket registry and the messages a prompt's execution sends."""

    def __init__(self) -> None:
        # Running + pending, for `status`; the stand-in points it at its queue.
        self.queue_size: Callable[[], int] = lambda: 0
        # `progress` messages per prompt's work (its `delay`), as a sampler sends per step.
        # 0, the default, sends none: the core image and text nodes in the recordings do not.
        self.progress_steps = 0
        self._lock = threading.RLock()
        self._sockets: dict[str, _Socket] = {}
        self._open: set[_Socket] = set()
        # ComfyUI's server.client_id / last_node_id: the running prompt's client and node.
        self.client_id: str | None = None
        self.last_node_id: str | None = None
        self._prompt_id: str | None = None
        self._nodes: dict[str, dict[str, Any]] = {}
        self._step = -1
        # The stand-in computes a node at once and does its prompt's "work" (the delay) just
        # before the first output node: the node before it is the one "running" meanwhile,
        # as ComfyUI's slow node is. So a node is reported finished when the next one starts
        # (or the prompt ends), not when its function returned.
        self._unfinished: tuple[str, str, bool] | None = None

    # -- connections ----------------------------------------------------------------------
    def upgrade(self, handler: Any) -> bool:
        """Serve `handler`'s request as a WebSocket if it is one; False to let HTTP answer."""
        parts = urlsplit(handler.path)
        if parts.path not in WS_PATHS or handler.command != "GET" \
                or handler.headers.get("Upgrade", "").lower() != "websocket":
            return False
        handler.close_connection = True
        protocol = ServerProtocol(max_size=1 << 20)
        request = Request(handler.path, Headers(list(handler.headers.items())))
        response = protocol.accept(request)
        protocol.send_response(response)
        for chunk in protocol.data_to_send():
            handler.connection.sendall(chunk)
        if response.status_code != 101:
            return True
        # The handshake protocol's parser still waits for request bytes it never got (the
        # HTTP server parsed the request): frames go through a protocol that starts open.
        protocol = ServerProtocol(state=State.OPEN, max_size=1 << 20)
        client_id = (parse_qs(parts.query).get("clientId") or [""])[0]
        sid = client_id or uuid.uuid4().hex
        ws = _Socket(handler.connection, handler.rfile, protocol, sid)
        self._register(ws)
        try:
            self._serve(ws)
        finally:
            self._unregister(ws)
        return True

    def _register(self, ws: _Socket) -> None:
        with self._lock:
            self._sockets[ws.sid] = ws  # a newer socket with the same id takes its place
            self._open.add(ws)
            ws.send_json({"type": "status", "data": {**self._status(), "sid": ws.sid}})
            if self.client_id == ws.sid and self.last_node_id is not None:
                ws.send_json({"type": "executing", "data": {"node": self.last_node_id}})

    def _unregister(self, ws: _Socket) -> None:
        with self._lock:
            self._open.discard(ws)
            # ComfyUI pops the id whichever socket with it closed: the newer one goes silent.
            self._sockets.pop(ws.sid, None)

    def _serve(self, ws: _Socket) -> None:
        while not ws.closed:
            try:
                data = ws.reader.read1(READ_CHUNK)
            except OSError:
                return
            for text in ws.receive(data):
                self._on_message(ws, text)
            if not data:
                return

    def _on_message(self, ws: _Socket, text: str) -> None:
        first, ws.first_message = ws.first_message, False
        try:
            message = json.loads(text)
        except ValueError:
            return
        if first and isinstance(message, dict) and message.get("type") == "feature_flags":
            ws.send_json({"type": "feature_flags", "data": dict(SERVER_FEATURES)})

    def close_all(self) -> None:
        """ComfyUI going away: every connection drops."""
        with self._lock:
            sockets = list(self._open)
        for ws in sockets:
            ws.kill()

    def connected(self, sid: str) -> bool:
        with self._lock:
            return sid in self._sockets

    # -- sending --------------------------------------------------------------------------
    def _status(self) -> dict[str, Any]:
        return {"status": {"exec_info": {"queue_remaining": self.queue_size()}}}

    def send(self, kind: str, data: dict[str, Any], sid: str | None) -> None:
        """ComfyUI's send_sync: to one registered socket, or to all when `sid` is None."""
        message = {"type": kind, "data": data}
        with self._lock:
            targets = list(self._sockets.values()) if sid is None else \
                [ws for ws in (self._sockets.get(sid),) if ws is not None]
        for ws in targets:
            ws.send_json(message)

    def queue_changed(self) -> None:
        self.send("status", self._status(), None)

    def _to_client(self, kind: str, data: dict[str, Any]) -> None:
        """Messages ComfyUI sends only when the prompt has a client id."""
        if self.client_id is not None:
            self.send(kind, data, self.client_id)

    # -- hooks called by the stand-in's worker ------------------------------------------------
    def prompt_started(self, item: tuple[Any, ...]) -> None:
        extra = item[3] if len(item) > 3 and isinstance(item[3], dict) else {}
        client_id = extra.get("client_id")
        with self._lock:
            self.client_id = client_id if isinstance(client_id, str) else None
            self.last_node_id = None
            self._prompt_id = str(item[1])
            self._nodes = {}
            self._step = -1
            self._unfinished = None
        self.queue_changed()

    def history_message(self, kind: str, data: dict[str, Any]) -> None:
        """execution_start / _cached / _success / _error / _interrupted, as kept in history."""
        if kind == "execution_success":
            self._finish_last()
        if kind == "execution_interrupted":
            self.send(kind, dict(data), self.client_id)  # broadcast when there is no client
        else:
            self._to_client(kind, dict(data))

    def _progress_state(self, prompt_id: str, node_id: str, state: str, value: float, maximum: float) -> None:
        self._nodes[node_id] = {
            "value": value, "max": maximum, "state": state, "node_id": node_id, "prompt_id": prompt_id,
            "display_node_id": node_id, "parent_node_id": None, "real_node_id": node_id,
        }
        # Sent to the prompt's client, or to everyone when it has none (like ComfyUI).
        self.send("progress_state", {"prompt_id": prompt_id, "nodes": json.loads(json.dumps(self._nodes))},
                  self.client_id)

    def node_started(self, prompt_id: str, node_id: str, cached: bool) -> None:
        self._finish_last()
        if cached:
            return  # a cached node is not executed: only its output is replayed (node_finished)
        self._step = -1
        self._progress_state(prompt_id, node_id, "running", 0.0, 1.0)
        self.last_node_id = node_id
        self._to_client("executing", {"node": node_id, "display_node": node_id, "prompt_id": prompt_id})

    def working(self, elapsed: float, total: float) -> None:
        """Called while the prompt's work (its delay) goes on: `progress` per step."""
        node, prompt_id = self.last_node_id, self._prompt_id
        if not self.progress_steps or node is None or prompt_id is None or total <= 0:
            return
        step = min(self.progress_steps - 1, int(elapsed / total * self.progress_steps))
        if step <= self._step:
            return
        self._step = step
        self._progress_state(prompt_id, node, "running", step, self.progress_steps)
        self.send("progress", {"value": step, "max": self.progress_steps, "prompt_id": prompt_id, "node": node},
                  self.client_id)

    def node_finished(self, prompt_id: str, node_id: str, ui: dict[str, Any] | None, cached: bool) -> None:
        """The node's function returned: its output now, its finished state later."""
        if ui is not None:
            self._to_client("executed", {"node": node_id, "display_node": node_id, "output": ui,
                                         "prompt_id": prompt_id})
        if not cached or ui is not None:
            self._unfinished = (prompt_id, node_id, cached)

    def _finish_last(self) -> None:
        if self._unfinished is None:
            return
        prompt_id, node_id, cached = self._unfinished
        self._unfinished = None
        if cached:
            self._progress_state(prompt_id, node_id, "finished", 1, 1)  # ints, as recorded
        else:
            self._progress_state(prompt_id, node_id, "finished", 1.0, 1.0)

    def prompt_finished(self, item: tuple[Any, ...]) -> None:
        """After history is written: status, then `executing` null to the prompt's client."""
        self.queue_changed()
        self._to_client("executing", {"node": None, "prompt_id": str(item[1])})
        with self._lock:
            self.last_node_id = None
            self._prompt_id = None
