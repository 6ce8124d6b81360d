"""Requests to addresses a client chose: webhooks now, input images by URL next.

Such a request runs inside our network, so the URL is checked before anything is sent
(`check_url`) and the connection goes to exactly the addresses that were checked
(`open_url`):

* Only https (http when `Rules.allow_http`, for tests and local runs), no credentials in
  the URL, at most MAX_URL_LENGTH characters.
* The host is resolved once, and every address it resolves to must be public: no private,
  loopback, link-local (169.254.169.254 is the instance metadata service), carrier-grade
  NAT, multicast or reserved ranges. An IPv6 address that carries an IPv4 one (mapped
  `::ffff:a.b.c.d`, compatible `::a.b.c.d`, NAT64 `64:ff9b::a.b.c.d`, 6to4, Teredo) is judged
  by the IPv4 address inside, so `[64:ff9b::7f00:1]` is loopback; the local-use NAT64 prefix
  `64:ff9b:1::/48` is never public.
* A non-empty `Rules.allowlist` admits only the hosts it names: `assets.example.com` that
  host, `.example.com` (or `*.example.com`) any host under it. A host named exactly may
  resolve to a private network (10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7: an internal
  asset server); loopback, link-local and the EC2 instance service addresses stay refused.
  A suffix entry admits public addresses only.
* `Rules.allow_private` lifts the address check entirely (receivers inside a VPC; tests).
* The socket connects to a checked address, never to the name: a DNS answer that changes
  between the check and the connection (DNS rebinding) is not followed. The Host header,
  TLS SNI and certificate verification keep the name.
* One deadline covers the whole request: DNS (when `check_url` is given it), connecting,
  TLS, sending, the status line and headers, and any body read. Timeouts of single socket
  operations do not add up to that (a peer that trickles a byte per second never trips a
  5 s read timeout), so a watchdog shuts the socket down when the time is up, whatever the
  request is blocked in.
* Bodies are read only through `GuardedResponse.iter_bytes` / `read`, with a byte cap.
* Redirects are never followed (a 3xx is an answer like any other), no proxy or `.netrc`
  from the environment is used, and no content encoding is asked for (no decompression).

Refusals are BadRequestError (the URL is the client's); network failures are FetchError,
FetchTimeoutError and FetchTooLargeError, each naming only the host.
"""

from __future__ import annotations

import http.client
import ipaddress
import re
import socket
import ssl
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import Message
from functools import lru_cache
from typing import Any, Literal
from urllib.parse import urlsplit

import certifi

from .errors import BadRequestError, ConfigurationError, FetchError, FetchTimeoutError, FetchTooLargeError

MAX_URL_LENGTH = 2048
# Connecting to one address: just over the 3 s TCP retransmission, so one lost SYN is
# survived; the deadline still bounds the sum when a host has several addresses.
CONNECT_TIMEOUT = 3.05
CHUNK_SIZE = 64 * 1024

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# (family, sockaddr) as socket.getaddrinfo gives it: what `open_url` connects to.
Address = tuple[int, tuple[Any, ...]]


# -- which addresses ---------------------------------------------------------------------
# IPv6 forms whose low 32 bits are an IPv4 address the packet ends up at: mapped,
# "IPv4-translated" (RFC 2765), compatible (deprecated, RFC 4291; `::` and `::1` fall in here
# too and are refused through 0.0.0.0 and 0.0.0.1), and the well-known NAT64 prefix (RFC 6052),
# which a DNS64 resolver synthesises for every IPv4-only host: unwrapped, not refused.
_EMBEDS_IPV4_LOW_32 = tuple(
    ipaddress.IPv6Network(net) for net in ("::ffff:0:0/96", "::ffff:0:0:0/96", "::/96", "64:ff9b::/96")
)
# Local-use NAT64 (RFC 8215): where the IPv4 address sits depends on a prefix length only the
# operator knows, so it cannot be judged, and it is never a public destination.
_LOCAL_NAT64 = ipaddress.IPv6Network("64:ff9b:1::/48")
# What "an internal asset server" may be when an allowlist entry names the host exactly.
_PRIVATE_NETWORKS = tuple(
    ipaddress.ip_network(net)
    for net in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7")
)
# EC2's instance metadata, DNS and time services over IPv6: inside fc00::/7, never a target.
_INSTANCE_SERVICES = ipaddress.IPv6Network("fd00:ec2::/32")


def _parse(address: str) -> IPAddress:
    return ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id


def _destinations(ip: IPAddress) -> tuple[IPAddress, ...] | None:
    """The addresses a packet to `ip` reaches: the IPv4 inside an IPv6 form that carries
    one (both ends of a Teredo address), `ip` itself otherwise; None when unjudgeable."""
    if isinstance(ip, ipaddress.IPv4Address):
        return (ip,)
    if ip in _LOCAL_NAT64:
        return None
    if any(ip in net for net in _EMBEDS_IPV4_LOW_32):
        return (ipaddress.IPv4Address(int(ip) & 0xFFFF_FFFF),)
    if ip.sixtofour is not None:
        return (ip.sixtofour,)
    if ip.teredo is not None:
        return ip.teredo  # (server, client), the client already de-obfuscated
    return (ip,)


def _global_unicast(ip: IPAddress) -> bool:
    return ip.is_global and not ip.is_multicast


def is_public(address: str) -> bool:
    """Whether `address` (and any IPv4 address inside it) is a public unicast address."""
    destinations = _destinations(_parse(address))
    return destinations is not None and all(_global_unicast(ip) for ip in destinations)


def is_private_network(address: str) -> bool:
    """Whether `address` is on a private network an allowlist may name: RFC 1918, CGNAT or
    unique-local, but not loopback, link-local or the EC2 instance services."""
    destinations = _destinations(_parse(address))
    return destinations is not None and all(
        any(ip in net for net in _PRIVATE_NETWORKS) and ip not in _INSTANCE_SERVICES for ip in destinations
    )


# -- which hosts -------------------------------------------------------------------------
_LABELS = re.compile(r"[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?)*")


def _normal_host(host: str) -> str:
    """One spelling per host: an IP address in its canonical form; a name in lower case,
    without a trailing dot, IDNA (punycode) when not ASCII. UnicodeError when not a name."""
    host = host.strip().lower().rstrip(".")
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        pass
    return host if host.isascii() else host.encode("idna").decode("ascii")


def parse_allowlist(entries: Iterable[str]) -> tuple[str, ...]:
    """Normalised allowlist entries: `host.example.com` (that host), `.example.com` or
    `*.example.com` (any host under it, not the apex itself), or an IP address.
    ConfigurationError naming a malformed entry: the setting is the operator's."""
    parsed: list[str] = []
    for raw in entries:
        entry = raw.strip()
        if not entry:
            continue
        suffix = entry.startswith(("*.", "."))
        try:
            host = _normal_host(entry.removeprefix("*").removeprefix(".") if suffix else entry)
        except UnicodeError as exc:
            raise ConfigurationError(f"URL allowlist entry {raw!r} is not a host name") from exc
        if ":" in host or re.fullmatch(r"[0-9.]+", host):  # an IP address (a suffix of one means nothing)
            if suffix or not _is_ip(host):
                raise ConfigurationError(f"URL allowlist entry {raw!r} is not a host name or an IP address")
            parsed.append(host)
        elif _LABELS.fullmatch(host):
            parsed.append(f".{host}" if suffix else host)
        else:
            raise ConfigurationError(f"URL allowlist entry {raw!r} is not a host name or a .suffix")
    return tuple(parsed)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def allowlist_match(host: str, allowlist: Iterable[str]) -> Literal["exact", "suffix"] | None:
    """How a normalised `host` is admitted by normalised entries, if at all."""
    entries = tuple(allowlist)
    if host in entries:
        return "exact"
    if any(entry.startswith(".") and host.endswith(entry) for entry in entries):
        return "suffix"
    return None


def _permitted(address: str, named_exactly: bool) -> bool:
    return is_public(address) or (named_exactly and is_private_network(address))


# -- the check ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Rules:
    allow_http: bool = False
    allow_private: bool = False
    allowlist: tuple[str, ...] = ()  # from parse_allowlist; empty: any host


@dataclass(frozen=True)
class Deadline:
    """One point in time every step of a request must finish by."""

    at: float

    @classmethod
    def after(cls, seconds: float) -> "Deadline":
        return cls(time.monotonic() + seconds)

    def remaining(self) -> float:
        return max(0.0, self.at - time.monotonic())


@dataclass(frozen=True)
class CheckedUrl:
    """A URL that passed `check_url`, with the addresses it was checked against."""

    url: str
    scheme: str
    host: str  # normalised (see _normal_host): TLS SNI and the certificate's name
    port: int
    target: str  # path and query, as the request line carries them
    addresses: tuple[Address, ...]  # in the resolver's order of preference

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


_UNSAFE_CHARACTERS = re.compile(r"[\x00-\x20\x7f]")


def check_url(url: Any, rules: Rules, *, field: str = "url", deadline: Deadline | None = None) -> CheckedUrl:
    """The URL resolved and checked against `rules`; BadRequestError saying why not, naming
    `field`. DNS is asked once; FetchTimeoutError if it does not answer before `deadline`."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL_LENGTH:
        raise BadRequestError(f"'{field}' must be a URL of at most {MAX_URL_LENGTH} characters")
    invalid = BadRequestError(f"'{field}' is not a valid URL")
    if _UNSAFE_CHARACTERS.search(url):  # whitespace or control characters: header injection
        raise invalid
    try:
        parts = urlsplit(url)
        port = parts.port
        host = _normal_host(parts.hostname or "")
    except (ValueError, UnicodeError) as exc:
        raise invalid from exc
    if not (parts.path + parts.query).isascii():  # the request line is ASCII: percent-encode
        raise invalid
    allowed = ("https", "http") if rules.allow_http else ("https",)
    if parts.scheme not in allowed:
        raise BadRequestError(f"'{field}' must use https")
    if not host:
        raise BadRequestError(f"'{field}' has no host")
    if not _is_ip(host) and not _LABELS.fullmatch(host):  # '%', '\\', '..': never a real name
        raise invalid
    if parts.username is not None or parts.password is not None:
        raise BadRequestError(f"'{field}' must not carry credentials")
    if port == 0:
        raise invalid
    match = allowlist_match(host, rules.allowlist)
    if rules.allowlist and match is None:
        raise BadRequestError(f"'{field}' host is not in the allowlist")
    port = port or (443 if parts.scheme == "https" else 80)
    addresses = _resolve(host, port, field, deadline)
    if not rules.allow_private:
        if not all(_permitted(str(sockaddr[0]), match == "exact") for _, sockaddr in addresses):
            raise BadRequestError(f"'{field}' points to a private, loopback or link-local address")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return CheckedUrl(url=url, scheme=parts.scheme, host=host, port=port, target=target, addresses=addresses)


def _getaddrinfo(host: str, port: int) -> list[Any]:
    return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)


def _resolve(host: str, port: int, field: str, deadline: Deadline | None) -> tuple[Address, ...]:
    try:
        infos = _getaddrinfo(host, port) if deadline is None else _within(deadline, _getaddrinfo, host, port)
    except (socket.gaierror, UnicodeError, OSError) as exc:
        raise BadRequestError(f"'{field}' host does not resolve") from exc
    addresses: list[Address] = []
    for family, _, _, _, sockaddr in infos:
        if (family, sockaddr) not in addresses and family in (socket.AF_INET, socket.AF_INET6):
            addresses.append((family, sockaddr))
    if not addresses:
        raise BadRequestError(f"'{field}' host does not resolve")
    return tuple(addresses)


def _within(deadline: Deadline, call: Any, *args: Any) -> Any:
    """`call(*args)` on a daemon thread, given up when the deadline passes: the resolver has
    no timeout of its own we control, and a name's own DNS servers may answer slowly on
    purpose. A lookup given up on finishes in the background and is discarded."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append((True, call(*args)))
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            outcome.append((False, exc))

    worker = threading.Thread(target=run, name="netguard-resolve", daemon=True)
    worker.start()
    worker.join(deadline.remaining())
    if not outcome:
        raise FetchTimeoutError("DNS did not answer within the deadline")
    ok, value = outcome[0]
    if not ok:
        raise value
    return value


# -- the request -------------------------------------------------------------------------
@lru_cache(maxsize=1)
def ssl_context() -> ssl.SSLContext:
    """Verifies certificates against certifi's bundle (the one requests uses for ComfyUI),
    checks the host name, TLS 1.2 or later. Built once per container: loading the bundle
    costs milliseconds."""
    context = ssl.create_default_context(cafile=certifi.where())
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


class _Watchdog:
    """Shuts the request's socket down when the deadline passes. A blocked recv or send
    returns at once on shutdown (close from another thread would not wake it)."""

    def __init__(self, deadline: Deadline) -> None:
        self.fired = False
        self._lock = threading.Lock()
        self._stopped = False
        self._sock: socket.socket | None = None
        self._timer = threading.Timer(deadline.remaining(), self._fire)
        self._timer.daemon = True
        self._timer.start()

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._sock = sock
            if self.fired:
                self._shutdown()

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            self._sock = None
        self._timer.cancel()

    def _fire(self) -> None:
        with self._lock:
            if not self._stopped:
                self.fired = True
                self._shutdown()

    def _shutdown(self) -> None:
        if self._sock is None:
            return
        try:
            # The plain socket's shutdown, also for an SSLSocket: SSLSocket.shutdown would
            # drop its TLS state under the thread still reading through it.
            socket.socket.shutdown(self._sock, socket.SHUT_RDWR)
        except OSError:
            pass  # already closed or never connected: nothing left to interrupt


def _failure(exc: BaseException, watchdog: _Watchdog, host: str) -> FetchError:
    if watchdog.fired or isinstance(exc, TimeoutError):
        return FetchTimeoutError(f"{host} did not answer within the deadline")
    if isinstance(exc, ssl.SSLCertVerificationError):
        return FetchError(f"{host} presented a TLS certificate that could not be verified")
    return FetchError(f"{host} could not be reached or did not answer HTTP")


class GuardedResponse:
    """Status and headers of an answer; its body only through a byte cap."""

    def __init__(self, response: http.client.HTTPResponse, watchdog: _Watchdog, host: str) -> None:
        self._response = response
        self._watchdog = watchdog
        self._host = host
        self.status: int = response.status
        self.headers: Message = response.headers
        # The declared body size; None when not declared (chunked, or read to close).
        self.content_length: int | None = response.length

    def iter_bytes(self, max_bytes: int, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        """The body as it arrives. FetchTooLargeError as soon as it is known to exceed
        `max_bytes` (from Content-Length, before reading), never reading past max_bytes + 1."""
        declared = self.content_length
        if declared is not None and declared > max_bytes:
            raise FetchTooLargeError(f"{self._host} answered more than {max_bytes} bytes")
        total = 0
        while True:
            # Checked before every read, not only at EOF: what the kernel already buffered
            # stays readable after the shutdown, and a slow caller would keep draining it.
            if self._watchdog.fired:
                raise FetchTimeoutError(f"{self._host} did not answer within the deadline")
            try:
                chunk = self._response.read1(min(chunk_size, max_bytes + 1 - total))
            except (OSError, http.client.HTTPException) as exc:
                raise _failure(exc, self._watchdog, self._host) from exc
            if not chunk:
                # A body cut by the watchdog ends like one the peer closed: only the flag
                # tells them apart.
                if self._watchdog.fired:
                    raise FetchTimeoutError(f"{self._host} did not answer within the deadline")
                return
            total += len(chunk)
            if total > max_bytes:
                raise FetchTooLargeError(f"{self._host} answered more than {max_bytes} bytes")
            yield chunk

    def read(self, max_bytes: int) -> bytes:
        return b"".join(self.iter_bytes(max_bytes))


def _connect(
    checked: CheckedUrl, deadline: Deadline, watchdog: _Watchdog, context: ssl.SSLContext
) -> socket.socket:
    """A socket to the first checked address that accepts, TLS on top for https."""
    failure: OSError = TimeoutError("deadline passed before connecting")
    for family, sockaddr in checked.addresses:
        if deadline.remaining() <= 0:
            break
        sock = socket.socket(family, socket.SOCK_STREAM)
        watchdog.watch(sock)
        try:
            sock.settimeout(max(min(CONNECT_TIMEOUT, deadline.remaining()), 0.001))
            sock.connect(sockaddr)
        except OSError as exc:
            sock.close()
            failure = exc
            continue
        # Every later operation may wait at most what is left; the watchdog bounds their sum.
        sock.settimeout(max(deadline.remaining(), 0.001))  # 0 would mean non-blocking
        if checked.scheme != "https":
            return sock
        # No handshake inside wrap_socket: the watchdog must hold the TLS socket first,
        # since wrapping detaches the plain one.
        try:
            tls = context.wrap_socket(sock, server_hostname=checked.host, do_handshake_on_connect=False)
        except BaseException:
            sock.close()
            raise
        watchdog.watch(tls)
        try:
            tls.do_handshake()
        except BaseException:
            tls.close()
            raise  # a certificate or protocol failure is the host's, not one address's
        return tls
    raise failure


@contextmanager
def open_url(
    checked: CheckedUrl,
    method: str = "GET",
    *,
    deadline: Deadline,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    context: ssl.SSLContext | None = None,
) -> Iterator[GuardedResponse]:
    """Send one request to a checked address and yield the answer once its status line and
    headers are in. Everything, inside the block too, must finish by `deadline`; the socket
    is closed when the block ends. FetchError (and subclasses) on failure."""
    watchdog = _Watchdog(deadline)
    # http.client only frames the request and parses the answer: the socket is ours, set
    # before its first use, so it never connects (or resolves) by itself.
    connection = http.client.HTTPConnection(checked.host, checked.port)
    # One request per connection; the Host header is the name (http.client would add the
    # port for https, its default being 80).
    sent = {"Host": checked.host_header, "Connection": "close", **(headers or {})}
    try:
        connection.sock = _connect(checked, deadline, watchdog, context or ssl_context())
        connection.request(method, checked.target, body=body, headers=sent)
        response = connection.getresponse()
        if watchdog.fired:  # headers cut short by the shutdown parse as complete ones
            raise TimeoutError
    except BaseException as exc:
        watchdog.stop()
        connection.close()
        if isinstance(exc, (OSError, http.client.HTTPException)):
            raise _failure(exc, watchdog, checked.host) from exc
        raise
    try:
        yield GuardedResponse(response, watchdog, checked.host)
    finally:
        watchdog.stop()
        response.close()
        connection.close()
