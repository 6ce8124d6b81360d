"""An HTTP peer on a raw socket whose answer is a script: a receiver that trickles its
headers or body, floods, redirects, or answers normally; optionally over TLS.

http.server cannot trickle a status line or stop half-way through a header, and these
tests are about exactly that. Each connection's request (head, and a Content-Length body)
is recorded, and so is how its script ended: "finished" when it wrote everything,
"client left" when the client hung up first. Every script is bounded in time.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Self

# A trickle gives up after this long, so a test against code that never hangs up ends too.
TRICKLE_SECONDS = 10.0


@dataclass
class Request:
    method: str
    target: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    server_name: str | None = None  # TLS SNI, when served over TLS


@dataclass
class Connection:
    sock: socket.socket
    request: Request
    sent: int = 0  # bytes written by the script

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)
        self.sent += len(data)


Script = Callable[[Connection], None]


@dataclass
class RawServer:
    script: Script
    host: str = "127.0.0.1"
    tls: ssl.SSLContext | None = None
    requests: list[Request] = field(default_factory=list)
    outcomes: list[str] = field(default_factory=list)
    sent: list[int] = field(default_factory=list)  # bytes the script wrote, per connection

    def __post_init__(self) -> None:
        self._listener = socket.create_server((self.host, 0))
        self._listener.settimeout(0.05)
        self.port: int = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="raw-http", daemon=True)

    def url(self, path: str = "/hook", host: str | None = None) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{host or self.host}:{self.port}{path}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self._listener.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._serve, args=(sock,), name="raw-http-conn", daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        sock.settimeout(TRICKLE_SECONDS)
        server_name: list[str | None] = [None]
        try:
            if self.tls is not None:
                self.tls.sni_callback = lambda tls_sock, name, context: server_name.__setitem__(0, name)
                sock = self.tls.wrap_socket(sock, server_side=True)
            request = _read_request(sock)
        except (OSError, ValueError):
            sock.close()
            return
        request.server_name = server_name[0]
        self.requests.append(request)
        connection = Connection(sock, request)
        try:
            self.script(connection)
            outcome = "finished"
        except OSError:  # broken pipe, reset: the client hung up
            outcome = "client left"
        finally:
            sock.close()
        self.sent.append(connection.sent)
        self.outcomes.append(outcome)


def _read_request(sock: socket.socket) -> Request:
    stream = sock.makefile("rb")
    method, target, _ = stream.readline(65537).decode("latin-1").split(" ", 2)
    headers: dict[str, str] = {}
    while (line := stream.readline(65537)) not in (b"\r\n", b"\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    body = stream.read(int(headers.get("content-length", "0")))
    return Request(method, target, headers, body)


# -- scripts -----------------------------------------------------------------------------
def answer(status: int = 200, headers: dict[str, str] | None = None, body: bytes = b"") -> Script:
    def script(connection: Connection) -> None:
        head = f"HTTP/1.1 {status} Answer\r\nContent-Length: {len(body)}\r\nConnection: close\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
        connection.send(head.encode() + b"\r\n" + body)

    return script


def trickle_headers(interval: float = 0.2) -> Script:
    """A status line, then a header one byte per `interval`: never a read timeout."""

    def script(connection: Connection) -> None:
        connection.send(b"HTTP/1.1 200 OK\r\nX-Slow: ")
        _trickle(connection, interval)
        connection.send(b"\r\nContent-Length: 0\r\n\r\n")

    return script


def trickle_body(interval: float = 0.2, declared: int = 100_000_000) -> Script:
    """Headers at once, declaring `declared` bytes, then the body one byte per `interval`."""

    def script(connection: Connection) -> None:
        connection.send(f"HTTP/1.1 200 OK\r\nContent-Length: {declared}\r\n\r\n".encode())
        _trickle(connection, interval)

    return script


def flood(total: int, declare: bool = True) -> Script:
    """`total` bytes as fast as the client takes them; no Content-Length when not `declare`."""

    def script(connection: Connection) -> None:
        length = f"Content-Length: {total}\r\n" if declare else "Connection: close\r\n"
        connection.send(f"HTTP/1.1 200 OK\r\n{length}\r\n".encode())
        block = b"\0" * 65536
        while connection.sent < total:
            connection.send(block)

    return script


def _trickle(connection: Connection, interval: float) -> None:
    ends = time.monotonic() + TRICKLE_SECONDS
    while time.monotonic() < ends:
        connection.send(b"a")
        time.sleep(interval)
