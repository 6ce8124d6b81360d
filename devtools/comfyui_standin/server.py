"""The stand-in's HTTP server: ComfyUI's queue and history, its routes, and the command line.

The prompts it queues run in execution.py; uploads and input files are uploads.py's, and a
GET /ws with `Upgrade: websocket` is handed to websocket.py.
"""

from __future__ import annotations

import argparse
import copy
import email.utils
import heapq
import ipaddress
import json
import mimetypes
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import traceback
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qs, unquote, urlparse, urlsplit

from .execution import _Executor
from .nodes import _prompt_error, build_node_specs, validate_prompt
from .uploads import InputFiles

COMFYUI_VERSION = "0.3.64"
# ComfyUI drops the oldest entry only once history is *above* this, so 10,001 stay.
MAXIMUM_HISTORY_SIZE = 10000
# ComfyUI strips these from extra_data before the item is shown in /queue or /history.
SENSITIVE_EXTRA_DATA_KEYS = ("auth_token_comfy_org", "api_key_comfy_org")
SERVER_ERROR_TEXT = "500 Internal Server Error\n\nServer got itself in trouble"
JSON_CONTENT_TYPE = "application/json; charset=utf-8"
TEXT_CONTENT_TYPE = "text/plain; charset=utf-8"
STREAM_CHUNK = 1 << 20


# --------------------------------------------------------------------------------------
# Queue and history (ComfyUI's PromptQueue).
# --------------------------------------------------------------------------------------

class _PromptQueue:
    def __init__(self, history_limit: int) -> None:
        self.mutex = threading.RLock()
        self.not_empty = threading.Condition(self.mutex)
        self.queue: list[tuple[Any, ...]] = []  # a heap, shown as-is (heap order) like ComfyUI
        self.currently_running: dict[int, tuple[Any, ...]] = {}
        self.task_counter = 0
        self.history: dict[str, dict[str, Any]] = {}
        self.history_limit = history_limit
        # Bumped by restart(): work picked up before it must not reach the new history.
        self.epoch = 0

    def put(self, item: tuple[Any, ...]) -> None:
        with self.mutex:
            heapq.heappush(self.queue, item)
            self.not_empty.notify()

    def get(self, timeout: float, on_start: Callable[[], None]) -> tuple[tuple[Any, ...], int, int] | None:
        with self.not_empty:
            if not self.queue:
                self.not_empty.wait(timeout)
            if not self.queue:
                return None
            item = heapq.heappop(self.queue)
            item_id = self.task_counter
            self.currently_running[item_id] = copy.deepcopy(item)
            self.task_counter += 1
            on_start()
            return item, item_id, self.epoch

    def task_done(self, item_id: int, epoch: int, history_result: dict[str, Any],
                  status: dict[str, Any]) -> None:
        with self.mutex:
            prompt = self.currently_running.pop(item_id, None)
            if prompt is None or epoch != self.epoch:
                return
            if len(self.history) > self.history_limit:
                self.history.pop(next(iter(self.history)))
            entry = {"prompt": list(prompt[:5]), "outputs": {}, "status": status}
            entry.update(history_result)
            self.history[prompt[1]] = entry

    def discard(self, item_id: int) -> None:
        with self.mutex:
            self.currently_running.pop(item_id, None)

    def current_queue(self) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        with self.mutex:
            return copy.deepcopy(list(self.currently_running.values())), copy.deepcopy(self.queue)

    def tasks_remaining(self) -> int:
        with self.mutex:
            return len(self.queue) + len(self.currently_running)

    def running_ids(self) -> list[str]:
        with self.mutex:
            return [item[1] for item in self.currently_running.values()]

    def wipe_queue(self) -> None:
        with self.mutex:
            self.queue = []

    def delete_queue_item(self, prompt_id: Any) -> None:
        with self.mutex:
            for index, item in enumerate(self.queue):
                if item[1] == prompt_id:
                    self.queue.pop(index)
                    heapq.heapify(self.queue)
                    return

    def get_history(self, prompt_id: str | None = None, max_items: int | None = None,
                    offset: int = -1) -> dict[str, Any]:
        with self.mutex:
            if prompt_id is not None:
                if prompt_id not in self.history:
                    return {}
                return {prompt_id: copy.deepcopy(self.history[prompt_id])}
            # Same arithmetic as ComfyUI: without an offset, max_items means "the newest N";
            # with offset=0 it means "the oldest N".
            if offset < 0 and max_items is not None:
                offset = len(self.history) - max_items
            out: dict[str, Any] = {}
            for index, key in enumerate(self.history):
                if index >= offset:
                    out[key] = self.history[key]
                    if max_items is not None and len(out) >= max_items:
                        break
            return out

    def wipe_history(self) -> None:
        with self.mutex:
            self.history = {}

    def delete_history_item(self, prompt_id: Any) -> None:
        with self.mutex:
            self.history.pop(prompt_id, None)


# --------------------------------------------------------------------------------------
# HTTP layer.
# --------------------------------------------------------------------------------------

@dataclass
class _Response:
    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    file_path: str | None = None
    file_start: int = 0
    file_length: int = 0
    close: bool = False


# GET /object_info of the real ComfyUI 0.3.64 the recordings come from (496 node classes).
_REPOSITORY = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RECORDED_OBJECT_INFO = os.path.join(_REPOSITORY,
                                    "tests", "fixtures", "comfyui", "object_info_full.json")
_recorded_object_info_cache: list[dict[str, Any]] = []


def _recorded_object_info() -> dict[str, Any]:
    """The recorded node list, read once; empty where the recording is not at hand (the
    stand-in copied out of the repository), and /object_info lists the stand-in's own nodes."""
    if not _recorded_object_info_cache:
        try:
            with open(RECORDED_OBJECT_INFO, encoding="utf-8") as file:
                _recorded_object_info_cache.append(json.load(file))
        except (OSError, ValueError):
            _recorded_object_info_cache.append({})
    return _recorded_object_info_cache[0]


def _json(data: Any, status: int = 200) -> _Response:
    return _Response(status, json.dumps(data).encode(), JSON_CONTENT_TYPE)


def _empty(status: int = 200) -> _Response:
    return _Response(status)


def _text(status: int, text: str, **kwargs: Any) -> _Response:
    return _Response(status, text.encode(), TEXT_CONTENT_TYPE, **kwargs)


def _server_error() -> _Response:
    return _text(500, SERVER_ERROR_TEXT, close=True)


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # ComfyUI resolves names here; a stand-in should not do DNS lookups


def origin_forbidden(host: str | None, origin: str | None) -> bool:
    """ComfyUI's origin_only_middleware: a loopback Host with a different Origin gets 403."""
    if not host or not origin:
        return False
    host_domain: str | None = host.lower()
    parsed = urlparse(origin)
    origin_domain: str | None = parsed.netloc.lower()
    host_parsed = urlsplit("//" + host.lower())
    loopback = _is_loopback(host_parsed.hostname)
    if parsed.port is None:  # compare without ports when either side has none
        host_domain = host_parsed.hostname
    if host_parsed.port is None:
        origin_domain = parsed.hostname
    return bool(loopback and host_domain and origin_domain and host_domain != origin_domain)


def _parse_json_body(body: bytes) -> Any:
    # aiohttp's request.json(): decode and json.loads; failures end up as a 500.
    return json.loads(body.decode("utf-8"))


def _first(query: dict[str, list[str]], name: str, default: str | None = None) -> str | None:
    values = query.get(name)
    return values[0] if values else default


def _byte_range(header: str | None, size: int) -> tuple[int, int] | None | bool:
    """(start, length) for a single 'bytes=' range; None when absent; False when unsatisfiable."""
    if not header or not header.startswith("bytes=") or "," in header:
        return None
    first, _, last = header[6:].strip().partition("-")
    try:
        if first == "":
            suffix = int(last)
            start, end = max(0, size - suffix), size - 1
        else:
            start = int(first)
            end = int(last) if last else size - 1
    except ValueError:
        return None
    end = min(end, size - 1)
    if start >= size or start > end:
        return False
    return start, end - start + 1


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body leave in separate writes; without TCP_NODELAY each keep-alive
    # response waits ~40 ms for the client's delayed ACK.
    disable_nagle_algorithm = True
    server: _Server

    def version_string(self) -> str:
        return f"Python/{sys.version_info[0]}.{sys.version_info[1]} comfyui-standin/{COMFYUI_VERSION}"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        if self.server.standin.verbose:
            super().log_message(format, *args)

    def do_GET(self) -> None:
        self._dispatch()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_GET

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _read_chunked(self) -> bytes:
        parts = []
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(parts)
            parts.append(self.rfile.read(size))
            self.rfile.readline()

    def _dispatch(self) -> None:
        standin = self.server.standin
        standin._record(self.command, self.path)
        if standin.ws.upgrade(self):  # GET /ws: this thread serves the socket until it closes
            return
        try:
            body = self._read_body()
        except (ValueError, OSError):
            self._send(_text(400, "400: Bad Request", close=True))
            return
        try:
            if origin_forbidden(self.headers.get("Host"), self.headers.get("Origin")):
                response = _empty(403)
            elif self.command == "OPTIONS":
                response = _empty(200)
            else:
                response = standin._route(self.command, self.path, body, self.headers)
        except Exception:  # noqa: BLE001 - aiohttp answers any handler crash with a plain 500
            if standin.verbose:
                traceback.print_exc()
            response = _server_error()
        self._send(response)

    def _send(self, response: _Response) -> None:
        self.send_response(response.status)
        if response.content_type:
            self.send_header("Content-Type", response.content_type)
        for name, value in response.headers:
            self.send_header(name, value)
        length = response.file_length if response.file_path else len(response.body)
        self.send_header("Content-Length", str(length))
        if response.close:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command == "HEAD":
            return
        try:
            if response.file_path:
                self._stream_file(response)
            else:
                self.wfile.write(response.body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _stream_file(self, response: _Response) -> None:
        assert response.file_path is not None
        with open(response.file_path, "rb") as handle:
            if response.file_start == 0 and response.file_length == os.fstat(handle.fileno()).st_size:
                shutil.copyfileobj(handle, self.wfile, STREAM_CHUNK)
                return
            handle.seek(response.file_start)
            remaining = response.file_length
            while remaining > 0:
                chunk = handle.read(min(STREAM_CHUNK, remaining))
                if not chunk:
                    break
                self.wfile.write(chunk)
                remaining -= len(chunk)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    standin: ComfyUIStandIn

    def __init__(self, address: tuple[str, int], standin: ComfyUIStandIn) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.standin = standin
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Wake handler threads blocked on idle keep-alive connections so stop() is prompt."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        if self.standin.verbose:
            super().handle_error(request, client_address)


# --------------------------------------------------------------------------------------
# The stand-in.
# --------------------------------------------------------------------------------------

RouteHandler = Callable[[dict[str, list[str]], bytes, Any], _Response]


class ComfyUIStandIn:
    """A fake ComfyUI on a real socket. See the module docstring."""

    def __init__(self, root_dir: str | os.PathLike[str], host: str = "127.0.0.1", port: int = 0,
                 delay: float = 0.0, models: list[str] | None = None, *, verbose: bool = False,
                 cache: bool = True, history_limit: int = MAXIMUM_HISTORY_SIZE) -> None:
        self.root_dir = os.path.abspath(os.fspath(root_dir))
        self.output_dir = os.path.join(self.root_dir, "output")
        self.temp_dir = os.path.join(self.root_dir, "temp")
        self.input_dir = os.path.join(self.root_dir, "input")
        self.host = host
        self.port = port
        self.models = list(models or [])
        self.verbose = verbose
        self.requests: list[tuple[str, str]] = []
        self._requests_lock = threading.Lock()
        self._specs = build_node_specs(self.models)
        self._files = InputFiles(self.input_dir, self.temp_dir, self.output_dir)
        for spec in self._specs.values():
            if spec.validated:
                spec.validate = self._files.validate
        self._queue = _PromptQueue(history_limit)
        self._executor = _Executor(self._specs, self.output_dir, self.temp_dir, delay, cache, self._files)
        self.ws = self._executor.ws
        self.ws.queue_size = self._queue.tasks_remaining
        self._number = 0
        self._number_lock = threading.Lock()
        self._exec_lock = threading.Lock()  # held while a prompt executes; restart() waits on it
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._threads: list[threading.Thread] = []
        self._route_table = self._routes()

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> ComfyUIStandIn:
        if self._server is not None:
            return self
        os.makedirs(self.output_dir, exist_ok=True)
        self._files.prepare()  # input/ with example.png, as a fresh install has
        self._clear_temp()  # ComfyUI deletes its temp folder when it starts
        self._stopping.clear()
        self._server = _Server((self.host, self.port), self)
        self.port = self._server.server_address[1]
        self._threads = [
            threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02},
                             name="comfyui-standin-http", daemon=True),
            threading.Thread(target=self._worker_loop, name="comfyui-standin-worker", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        return self

    @property
    def delay(self) -> float:
        """Seconds each prompt takes; may be changed while running (a prompt already waiting
        waits the new total, so setting 0 lets it finish at once)."""
        return self._executor.delay

    @delay.setter
    def delay(self, seconds: float) -> None:
        self._executor.delay = seconds

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("ComfyUIStandIn is not started")
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.host, self.host)
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    def restart(self) -> None:
        """Like a ComfyUI restart: history, queue, caches and temp files go; output stays."""
        self.ws.close_all()  # a restarting ComfyUI drops every WebSocket
        with self._queue.mutex:
            self._queue.epoch += 1
            self._queue.wipe_queue()
            self._queue.currently_running.clear()
            self._queue.wipe_history()
            self._executor.interrupt.set()  # cut a running prompt short; its result is dropped
        # No second history wipe once the running prompt is done: its epoch is the old one,
        # so task_done drops its result, and prompts queued since then belong to the new run.
        with self._exec_lock:
            with self._queue.mutex:
                self._executor.reset()
            with self._number_lock:
                self._number = 0
            self._clear_temp()

    def stop(self) -> None:
        server = self._server
        if server is None:
            return
        self._stopping.set()
        self._executor.interrupt.set()
        with self._queue.not_empty:
            self._queue.not_empty.notify_all()  # wake an idle worker now rather than at its next poll
        server.shutdown()
        server.close_connections()
        server.server_close()
        for thread in self._threads:
            thread.join(timeout=10)
        self._server = None
        self._threads = []

    def __enter__(self) -> ComfyUIStandIn:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _clear_temp(self) -> None:
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        os.makedirs(self.temp_dir, exist_ok=True)

    def _record(self, method: str, path: str) -> None:
        with self._requests_lock:
            self.requests.append((method, path))

    # -- worker ---------------------------------------------------------------------------

    def _worker_loop(self) -> None:
        while not self._stopping.is_set():
            # The interrupt flag is reset when an item becomes "running" (under the queue lock),
            # so an interrupt sent once /queue shows it running always reaches it.
            got = self._queue.get(0.1, self._executor.interrupt.clear)
            if got is None:
                continue
            item, item_id, epoch = got
            with self._exec_lock:
                if epoch != self._queue.epoch or self._stopping.is_set():
                    self._queue.discard(item_id)
                    continue
                self.ws.prompt_started(item)
                history_result, status = self._executor.execute(item)
            self._queue.task_done(item_id, epoch, history_result, status)
            self.ws.prompt_finished(item)

    # -- routing --------------------------------------------------------------------------

    def _routes(self) -> dict[str, dict[str, RouteHandler]]:
        """The static routes; built once, in __init__."""
        return {
            "/": {"GET": self._get_index},
            "/prompt": {"GET": self._get_prompt, "POST": self._post_prompt},
            "/queue": {"GET": self._get_queue, "POST": self._post_queue},
            "/interrupt": {"POST": self._post_interrupt},
            "/history": {"GET": self._get_history, "POST": self._post_history},
            "/view": {"GET": self._get_view},
            "/upload/image": {"POST": lambda q, b, h: self._post_upload(b, h, self._files.upload_image)},
            "/upload/mask": {"POST": lambda q, b, h: self._post_upload(b, h, self._files.upload_mask)},
            "/system_stats": {"GET": self._get_system_stats},
            "/object_info": {"GET": self._get_object_info},
            "/features": {"GET": lambda q, b, h: _json({"supports_preview_metadata": True,
                                                        "max_upload_size": 104857600})},
            "/free": {"POST": self._post_free},
            "/embeddings": {"GET": lambda q, b, h: _json([])},
            "/extensions": {"GET": lambda q, b, h: _json([])},
            "/models": {"GET": lambda q, b, h: _json(["checkpoints"])},
        }

    def _dynamic_route(self, path: str) -> dict[str, RouteHandler] | None:
        for prefix, handler in (("/history/", self._get_history_item),
                                ("/object_info/", self._get_object_info_item),
                                ("/models/", self._get_models_folder)):
            rest = path[len(prefix):]
            if path.startswith(prefix) and rest and "/" not in rest:
                return {"GET": lambda q, b, h, rest=rest, handler=handler: handler(rest)}
        return None

    def _route(self, method: str, raw_path: str, body: bytes, headers: Any) -> _Response:
        parts = urlsplit(raw_path)
        path = unquote(parts.path)
        if path.startswith("/api/"):  # ComfyUI serves every API route under /api as well
            path = path[4:]
        query = parse_qs(parts.query, keep_blank_values=True)
        methods = self._route_table.get(path) or self._dynamic_route(path)
        if methods is None:
            return _text(404, "404: Not Found")
        lookup = "GET" if method == "HEAD" else method  # aiohttp answers HEAD on every GET route
        handler = methods.get(lookup)
        if handler is None:
            allowed = sorted(set(methods) | ({"HEAD"} if "GET" in methods else set()))
            return _text(405, "405: Method Not Allowed", headers=[("Allow", ",".join(allowed))])
        return handler(query, body, headers)

    # -- handlers -------------------------------------------------------------------------

    def _get_index(self, query: dict[str, list[str]], body: bytes, headers: Any) -> _Response:
        page = "<!doctype html><title>ComfyUI stand-in</title><p>ComfyUI stand-in (no frontend).</p>"
        return _Response(200, page.encode(), "text/html; charset=utf-8")

    def _get_prompt(self, query: dict[str, list[str]], body: bytes, headers: Any) -> _Response:
        return _json({"exec_info": {"queue_remaining": self._queue.tasks_remaining()}})

    def _next_number(self, json_data: Any) -> Any:
        if "number" in json_data:
            return float(json_data["number"])
        with self._number_lock:
            number = self._number
            self._number += 1  # even for prompts that then fail validation, like ComfyUI
        if "front" in json_data and json_data["front"]:
            number = -number
        return number

    def _post_prompt(self, query: dict[str, list[str]], body: bytes, headers: Any) -> _Response:
        json_data = _parse_json_body(body)
        number = self._next_number(json_data)
        if "prompt" not in json_data:
            error = _prompt_error("no_prompt", "No prompt provided", "No prompt provided")
            return _json({"error": error, "node_errors": {}}, 400)
        prompt = json_data["prompt"]
        prompt_id = str(json_data.get("prompt_id", uuid.uuid4()))
        valid, error, outputs, node_errors = validate_prompt(prompt, self._specs,
                                                             json_data.get("partial_execution_targets"))
        extra_data = json_data.get("extra_data", {})
        if "client_id" in json_data:
            extra_data["client_id"] = json_data["client_id"]
        if not valid:
            return _json({"error": error, "node_errors": node_errors}, 400)
        sensitive = {key: extra_data.pop(key) for key in SENSITIVE_EXTRA_DATA_KEYS if key in extra_data}
        self._queue.put((number, prompt_id, prompt, extra_data, outputs, sensitive))
        self.ws.queue_changed()
        return _json({"prompt_id": prompt_id, "number": number, "node_errors": node_errors})

    def _get_queue(self, query: dict[str, list[str]], body: bytes, headers: Any) -> _Response:
        running, pending = self._queue.current_queue()
        return _json({"queue_running": [list(item[:5]) for item in running],
                      "queue_pending": [list(item[:5]) for item in pending]})

    def _post_queue(self, query: dict[str, list[str]], body: bytes, headers: Any) -> _Response:
        json_data = _parse_json_body(body)
        if "clear" in json_data and json_data["clear"]:
            self._queue.wipe_queue()
        if "delete" in json_data:
            for prompt_id in json_data["delete"]:
                self._queue.delete_queue_item(prompt_id)
        self.ws.queue_changed()
        return _empty()

    def _post_interrupt(self, query: dict[str, list[str]], body: bytes, headers: Any) -> _Response:
        try:
            json_data = _parse_json_body(body)
        except json.JSONDecodeError:
            json_data = {}
        prompt_id = json_data.get("prompt_id")
        with self._queue.mutex:  # check and set together: the worker resets the flag under it
            if not prompt_id or prompt_id in self._queue.running_ids():
                self._executor.interrupt.set()
        return _empty()

    def _get_history(self, query: dict[str, list[str]], body: bytes, headers: Any) -> _Response:
        max_items = _first(query, "max_items")
        offset = _first(query, "offset")
        return _json(self._queue.get_history(
            max_items=int(max_items) if max_items is not None else None,
            offset=int(offset) if offset is not None else -1,
        ))

    def _get_history_item(self, prompt_id: str) -> _Response:
        return _json(self._queue.get_history(prompt_id=prompt_id))

    def _post_history(self, query: dict[str, list[str]], body: bytes, headers: Any) -> _Response:
        json_data = _parse_json_body(body)
        if "clear" in json_data and json_data["clear"]:
            self._queue.wipe_history()
        if "delete" in json_data:
            for prompt_id in json_data["delete"]:
                self._queue.delete_history_item(prompt_id)
        return _empty()

    def _post_free(self, query: dict[str, list[str]], body: bytes, headers: Any) -> _Response:
        json_data = _parse_json_body(body)
        json_data.get("unload_models", False)  # parsed like ComfyUI (a list body is a 500); nothing to free
        return _empty()

    def _get_system_stats(self, query: dict[str, list[str]], body: bytes, headers: Any) -> _Response:
        ram_total, ram_free = _memory()
        return _json({
            "system": {
                "os": os.name,
                "ram_total": ram_total,
                "ram_free": ram_free,
                "comfyui_version": COMFYUI_VERSION,
                "required_frontend_version": "1.27.10",
                "installed_templates_version": "0.1.95",
                "required_templates_version": "0.1.95",
                "python_version": sys.version,
                "pytorch_version": "0.0.0+standin",
                "embedded_python": False,
                "argv": ["main.py", "--cpu", "--listen", self.host, "--port", str(self.port),
                         "--disable-auto-launch"],
            },
            "devices": [{
                "name": "cpu", "type": "cpu", "index": None, "vram_total": ram_total, "vram_free": ram_free,
                "torch_vram_total": ram_total, "torch_vram_free": ram_free,
            }],
        })

    def _get_object_info(self, query: dict[str, list[str]], body: bytes, headers: Any) -> _Response:
        # The real server's whole node list (what the UI-format converter reads), with the
        # nodes this stand-in runs described by its own table: the same as recorded, except
        # file lists (LoadImage) that follow this stand-in's folders.
        info = dict(_recorded_object_info())
        info.update((name, spec.object_info()) for name, spec in self._specs.items())
        return _json(self._files.with_file_lists(info))

    def _get_object_info_item(self, class_type: str) -> _Response:
        spec = self._specs.get(class_type)
        return _json(self._files.with_file_lists({class_type: spec.object_info()} if spec else {}))

    def _post_upload(self, body: bytes, headers: Any, upload: Callable[..., Any]) -> _Response:
        """POST /upload/image or /upload/mask: the JSON answer, or an empty 400."""
        status, answer = upload(body, headers.get("Content-Type"))
        return _json(answer) if answer is not None else _empty(status)

    def _get_models_folder(self, folder: str) -> _Response:
        return _json(self.models) if folder == "checkpoints" else _empty(404)

    def _directory_for(self, kind: str) -> str | None:
        return {"output": self.output_dir, "temp": self.temp_dir, "input": self.input_dir}.get(kind)

    def _get_view(self, query: dict[str, list[str]], body: bytes, headers: Any) -> _Response:
        filename = _first(query, "filename")
        if filename is None:
            return _empty(404)
        filename, base_dir = self._annotated_filepath(filename)
        # ComfyUI's guard against arbitrary paths: 400 for a leading "/" or any "..".
        if not filename or filename[0] == "/" or ".." in filename:
            return _empty(400)
        if base_dir is None:
            base_dir = self._directory_for(_first(query, "type", "output") or "")
        if base_dir is None:
            return _empty(400)
        subfolder = _first(query, "subfolder")
        if subfolder is not None:
            full = os.path.join(base_dir, subfolder)
            if os.path.commonpath((os.path.abspath(full), base_dir)) != base_dir:
                return _empty(403)
            base_dir = full
        filename = os.path.basename(filename)
        path = os.path.join(base_dir, filename)
        if not os.path.isfile(path):
            return _empty(404)
        return self._file_response(path, filename, headers)

    def _annotated_filepath(self, name: str) -> tuple[str, str | None]:
        for suffix, kind in (("[output]", "output"), ("[input]", "input"), ("[temp]", "temp")):
            if name.endswith(suffix):
                return name[:-(len(suffix) + 1)], self._directory_for(kind)
        return name, None

    def _file_response(self, path: str, filename: str, headers: Any) -> _Response:
        stat = os.stat(path)
        content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        if content_type in {"text/html", "text/html-sandboxed", "application/xhtml+xml", "text/javascript",
                            "text/css"}:
            content_type = "application/octet-stream"  # ComfyUI forces these to download
        etag = f'"{stat.st_mtime_ns:x}-{stat.st_size:x}"'
        response_headers = [
            ("Content-Disposition", f'filename="{filename}"'),
            ("Etag", etag),
            ("Last-Modified", email.utils.formatdate(stat.st_mtime, usegmt=True)),
            ("Accept-Ranges", "bytes"),
        ]
        if headers.get("If-None-Match") == etag:
            return _Response(304, headers=response_headers)
        byte_range = _byte_range(headers.get("Range"), stat.st_size)
        if byte_range is False:
            return _Response(416, headers=[("Content-Range", f"bytes */{stat.st_size}")])
        if isinstance(byte_range, tuple):
            start, length = byte_range
            response_headers.append(("Content-Range", f"bytes {start}-{start + length - 1}/{stat.st_size}"))
            return _Response(206, content_type=content_type, headers=response_headers, file_path=path,
                             file_start=start, file_length=length)
        return _Response(200, content_type=content_type, headers=response_headers, file_path=path,
                         file_length=stat.st_size)


def _memory() -> tuple[int, int]:
    try:
        page = os.sysconf("SC_PAGE_SIZE")
        return os.sysconf("SC_PHYS_PAGES") * page, os.sysconf("SC_AVPHYS_PAGES") * page
    except (AttributeError, ValueError, OSError):
        return 16 * 1024**3, 8 * 1024**3  # platforms without sysconf: plausible numbers


# --------------------------------------------------------------------------------------
# Command line.
# --------------------------------------------------------------------------------------

def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m devtools.comfyui_standin",
                                     description="Run a ComfyUI stand-in until Ctrl-C.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8188)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds each prompt takes to execute")
    parser.add_argument("--root", default=None,
                        help="folder for output/ and temp/ (default: a new temporary folder)")
    parser.add_argument("--model", "--models", dest="models", action="append", default=[],
                        help="checkpoint name(s) CheckpointLoaderSimple accepts; repeat or comma-separate")
    parser.add_argument("--no-cache", action="store_true",
                        help="run identical prompts again instead of answering from the cache")
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    root = args.root or tempfile.mkdtemp(prefix="comfyui-standin-")
    models = [name.strip() for value in args.models for name in value.split(",") if name.strip()]
    stop_requested = threading.Event()
    received: list[int] = []
    previous: dict[int, Any] = {}

    def on_signal(signum: int, _frame: Any) -> None:
        received.append(signum)
        stop_requested.set()

    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, on_signal)
    standin = ComfyUIStandIn(root, host=args.host, port=args.port, delay=args.delay, models=models,
                             verbose=args.verbose, cache=not args.no_cache).start()
    print(f"ComfyUI stand-in on {standin.base_url} (root {root}, delay {args.delay}s); Ctrl-C to stop",
          flush=True)
    try:
        while not stop_requested.wait(0.5):  # a timed wait keeps signal handling prompt
            pass
    finally:
        standin.stop()
        if signal.SIGINT in received:
            standin._clear_temp()  # ComfyUI empties temp/ on exit after Ctrl-C (not after SIGTERM)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 0


if __name__ == "__main__":
    sys.exit(main())
