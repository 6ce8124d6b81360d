"""comfy_core.netguard over real sockets on 127.0.0.1: the connection goes to the address
that was checked, TLS keeps the name, one deadline ends a request however slowly the peer
trickles, bodies stop at the byte cap, redirects and proxies are never followed.

Peers are tests.support.raw_http scripts; names are resolved by a patched getaddrinfo.
Loopback is reachable only because these tests set `Rules(allow_private=True)`.
Wall-clock bounds here are ceilings far above the configured deadline (a trickle runs for
TRICKLE_SECONDS), there to show that the request ended at the deadline instead of running
with the peer; how fast is measured nowhere here.
"""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from comfy_core import netguard
from comfy_core.errors import FetchError, FetchTimeoutError, FetchTooLargeError
from comfy_core.netguard import Deadline, Rules
from tests.support.raw_http import TRICKLE_SECONDS, RawServer, answer, flood, trickle_body, trickle_headers
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e

LOOPBACK = Rules(allow_http=True, allow_private=True)
DEADLINE = 0.5  # seconds: a fraction of TRICKLE_SECONDS


class Resolver:
    """getaddrinfo from a table whose answers may change per lookup; IP literals as such."""

    def __init__(self) -> None:
        self.answers: dict[str, list[list[str]]] = {}
        self.lookups: list[str] = []

    def __call__(self, host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        self.lookups.append(host)
        if host in self.answers:
            queue = self.answers[host]
            addresses = queue.pop(0) if len(queue) > 1 else queue[0]
        else:
            addresses = [str(ipaddress.ip_address(host))]
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in addresses]


@pytest.fixture(autouse=True)
def resolver(monkeypatch: pytest.MonkeyPatch) -> Resolver:
    fake = Resolver()
    monkeypatch.setattr(socket, "getaddrinfo", fake)
    return fake


def get(url: str, rules: Rules = LOOPBACK, *, seconds: float = 5.0, max_bytes: int = 1_000_000,
        context: ssl.SSLContext | None = None) -> tuple[int, bytes]:
    deadline = Deadline.after(seconds)
    checked = netguard.check_url(url, rules, deadline=deadline)
    with netguard.open_url(checked, "GET", deadline=deadline, context=context) as response:
        return response.status, response.read(max_bytes)


# -- the address that was checked --------------------------------------------------------
def test_the_connection_goes_to_the_address_that_was_checked(resolver: Resolver) -> None:
    with RawServer(answer(200, body=b"ok")) as server:
        # The name's second answer would be another address: it is never asked for.
        resolver.answers["hooks.rebind.test"] = [["127.0.0.1"], ["127.0.0.2"]]
        deadline = Deadline.after(5)
        checked = netguard.check_url(server.url(host="hooks.rebind.test"), LOOPBACK, deadline=deadline)
        with netguard.open_url(checked, "POST", deadline=deadline, body=b"{}") as response:
            assert (response.status, response.read(10)) == (200, b"ok")
    assert resolver.lookups == ["hooks.rebind.test"]
    (request,) = server.requests
    assert request.headers["host"] == f"hooks.rebind.test:{server.port}"  # the name, not the address
    assert (request.method, request.target, request.body) == ("POST", "/hook", b"{}")


def test_the_next_checked_address_is_tried_when_one_refuses(resolver: Resolver) -> None:
    with RawServer(answer(204)) as server:
        # Nothing listens on 127.0.0.2 at that port (the server holds it on 127.0.0.1).
        resolver.answers["two.test"] = [["127.0.0.2", "127.0.0.1"]]
        assert get(server.url(host="two.test")) == (204, b"")
    assert len(server.requests) == 1


def test_an_unreachable_host_is_a_fetch_error_not_a_timeout() -> None:
    with socket.create_server(("127.0.0.1", 0)) as closed:
        port = closed.getsockname()[1]
    with pytest.raises(FetchError) as failed:
        get(f"http://127.0.0.1:{port}/")
    assert type(failed.value) is FetchError  # refused at once: not a timeout
    assert failed.value.message == "127.0.0.1 could not be reached or did not answer HTTP"


# -- TLS keeps the name ------------------------------------------------------------------
def _certificate(tmp_path: Path, names: list[str]) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server context with a certificate for `names`, client context trusting its CA)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def signed(subject: str, key: Any, issuer: str, issuer_key: Any, *extensions: Any) -> Any:
        now = datetime.datetime.now(datetime.timezone.utc)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), False)
        )
        for extension, critical in extensions:
            builder = builder.add_extension(extension, critical)
        return builder.sign(issuer_key, hashes.SHA256())

    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = signed(
        "netguard test CA", ca_key, "netguard test CA", ca_key,
        (x509.BasicConstraints(ca=True, path_length=None), True),
        (x509.KeyUsage(False, False, False, False, False, True, True, False, False), True),
        (x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False),
    )
    leaf = signed(
        names[0], leaf_key, "netguard test CA", ca_key,
        (x509.SubjectAlternativeName([x509.DNSName(name) for name in names]), False),
    )
    pem = serialization.Encoding.PEM
    (tmp_path / "ca.pem").write_bytes(ca.public_bytes(pem))
    (tmp_path / "leaf.pem").write_bytes(leaf.public_bytes(pem))
    key = leaf_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    (tmp_path / "leaf.key").write_bytes(key)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(tmp_path / "leaf.pem", tmp_path / "leaf.key")
    client = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
    return server, client


def test_tls_sends_the_name_and_verifies_the_certificate_against_it(
    tmp_path: Path, resolver: Resolver
) -> None:
    server_context, client_context = _certificate(tmp_path, ["hooks.tls.test"])
    resolver.answers["hooks.tls.test"] = [["127.0.0.1"]]
    with RawServer(answer(200, body=b"tls"), tls=server_context) as server:
        assert get(server.url(host="hooks.tls.test"), context=client_context) == (200, b"tls")
    (request,) = server.requests
    assert request.server_name == "hooks.tls.test"  # SNI
    assert request.headers["host"] == f"hooks.tls.test:{server.port}"


@pytest.mark.parametrize("host", ["other.tls.test", "127.0.0.1"])
def test_a_certificate_for_another_name_is_refused(tmp_path: Path, resolver: Resolver, host: str) -> None:
    server_context, client_context = _certificate(tmp_path, ["hooks.tls.test"])
    resolver.answers["other.tls.test"] = [["127.0.0.1"]]
    with RawServer(answer(200), tls=server_context) as server:
        with pytest.raises(FetchError, match="TLS certificate that could not be verified"):
            get(server.url(host=host), context=client_context)
    assert server.requests == []  # nothing was sent to a host that is not the one named


# -- one deadline ------------------------------------------------------------------------
@pytest.mark.parametrize("script", [trickle_headers(), trickle_body()], ids=["headers", "body"])
def test_a_trickling_peer_is_cut_off_at_the_deadline(script: Any) -> None:
    with RawServer(script) as server:
        started = time.monotonic()
        with pytest.raises(FetchTimeoutError):
            get(server.url(), seconds=DEADLINE, max_bytes=200_000_000)
        elapsed = time.monotonic() - started
        wait_for(lambda: server.outcomes, timeout=TRICKLE_SECONDS + 5, what="the trickle to end")
    assert server.outcomes == ["client left"]  # it did not get to trickle to the end
    assert elapsed < TRICKLE_SECONDS / 2


def test_the_deadline_covers_the_callers_reading_too() -> None:
    """A body read slowly by the caller ends at the same deadline: it is the request's."""
    with RawServer(flood(5_000_000)) as server:
        deadline = Deadline.after(DEADLINE)
        checked = netguard.check_url(server.url(), LOOPBACK)
        received = 0
        with pytest.raises(FetchTimeoutError):
            with netguard.open_url(checked, deadline=deadline) as response:
                for chunk in response.iter_bytes(10_000_000, chunk_size=1024):
                    received += len(chunk)
                    time.sleep(0.01)  # 100 KB/s at most: 5 MB would take 50 s
    assert received < 1_000_000  # about 50 KB by the deadline; 5 MB if it were not enforced


# -- byte caps ---------------------------------------------------------------------------
def test_a_declared_size_over_the_cap_is_refused_before_reading() -> None:
    with RawServer(flood(50_000_000)) as server:
        with pytest.raises(FetchTooLargeError, match="more than 1000000 bytes"):
            get(server.url(), max_bytes=1_000_000)
        wait_for(lambda: server.outcomes, timeout=TRICKLE_SECONDS + 5, what="the flood to end")
    assert server.outcomes == ["client left"] and server.sent[0] < 50_000_000


def test_an_undeclared_body_is_cut_just_past_the_cap() -> None:
    with RawServer(flood(50_000_000, declare=False)) as server:
        checked = netguard.check_url(server.url(), LOOPBACK)
        received: list[bytes] = []
        with netguard.open_url(checked, deadline=Deadline.after(5)) as response:
            assert response.content_length is None
            with pytest.raises(FetchTooLargeError):
                for chunk in response.iter_bytes(100_000, chunk_size=8192):
                    received.append(chunk)
        wait_for(lambda: server.outcomes, timeout=TRICKLE_SECONDS + 5, what="the flood to end")
    assert sum(map(len, received)) <= 100_000
    assert server.outcomes == ["client left"]


def test_a_body_within_the_cap_is_read_whole() -> None:
    with RawServer(answer(200, body=b"x" * 70_000)) as server:
        assert get(server.url(), max_bytes=70_000) == (200, b"x" * 70_000)


# -- nothing followed --------------------------------------------------------------------
def test_a_redirect_is_an_answer_and_is_not_followed() -> None:
    with RawServer(answer(200, body=b"internal")) as internal:
        with RawServer(answer(302, {"Location": internal.url("/internal")})) as server:
            assert get(server.url()) == (302, b"")
    assert internal.requests == []


@pytest.fixture
def proxy_in_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[RawServer]:
    with RawServer(answer(200, body=b"proxied")) as proxy:
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
            monkeypatch.setenv(name, proxy.url(""))
        yield proxy


def test_a_proxy_from_the_environment_is_never_used(proxy_in_environment: RawServer) -> None:
    with RawServer(answer(200, body=b"direct")) as server:
        assert get(server.url()) == (200, b"direct")
    assert proxy_in_environment.requests == []
