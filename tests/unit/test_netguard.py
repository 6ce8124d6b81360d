"""comfy_core.netguard alone: which addresses and hosts a guarded request may reach, and
what `check_url` hands to the connection. No sockets: DNS is `socket.getaddrinfo` patched
(connections, TLS, deadlines and byte caps over real sockets are in tests/e2e/test_netguard_sockets.py)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from comfy_core import netguard
from comfy_core.errors import BadRequestError, ConfigurationError, FetchTimeoutError
from comfy_core.netguard import Rules

PUBLIC = "93.184.215.14"
SYSTEM_GETADDRINFO = socket.getaddrinfo
DNS: dict[str, list[str]] = {
    "hooks.example.com": [PUBLIC],
    "cdn.example.com": [PUBLIC, "2606:2800:220:1:248:1893:25c8:1946", PUBLIC],
    "assets.corp.example": ["10.20.0.5"],
    "shared.corp.example": ["10.20.0.6"],
    "assets-v6.corp.example": ["fd12:3456::5"],
    "loop.corp.example": ["127.0.0.1"],
    "metadata.corp.example": ["169.254.169.254"],
    "metadata-v6.corp.example": ["fd00:ec2::254"],
    "nat64.corp.example": ["64:ff9b::a14:5"],  # 10.20.0.5 through the well-known NAT64 prefix
}


class Resolver:
    """socket.getaddrinfo from DNS (IP literals answered as themselves), counting lookups."""

    def __init__(self) -> None:
        self.lookups: list[str] = []

    def __call__(self, host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        self.lookups.append(host)
        try:
            addresses = DNS[host] if host in DNS else [str(netguard.ipaddress.ip_address(host))]
        except ValueError as exc:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known") from exc
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
                for a in addresses]


@pytest.fixture(autouse=True)
def resolver(monkeypatch: pytest.MonkeyPatch) -> Resolver:
    fake = Resolver()
    monkeypatch.setattr(socket, "getaddrinfo", fake)
    return fake


# -- addresses ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "address",
    [PUBLIC, "8.8.8.8", "2606:4700::1111", "64:ff9b::808:808", "::ffff:8.8.8.8", "2002:808:808::1"],
)
def test_public_addresses(address: str) -> None:
    assert netguard.is_public(address)
    assert not netguard.is_private_network(address)


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1", "10.0.0.1", "172.16.5.4", "192.168.1.1", "100.64.0.1", "169.254.169.254",
        "0.0.0.0", "255.255.255.255", "224.0.0.1", "240.0.0.1", "192.0.2.1", "198.18.0.1",
        "::", "::1", "fe80::1", "fe80::1%eth0", "fd00:ec2::254", "fc00::1", "ff02::1", "2001:db8::1",
        "64:ff9b::7f00:1", "64:ff9b::a00:1", "64:ff9b:1::808:808", "::127.0.0.1", "::a00:1",
        "::ffff:127.0.0.1", "::ffff:0:a00:1", "2002:a00:1::1", "2002:7f00:1::",
        "2001:0:4136:e378:8000:63bf:f5ff:fffe",  # Teredo, client 10.0.0.1
        "2001:0:a00:1:8000:63bf:f7f7:f7f7",  # Teredo through a private server (10.0.0.1)
    ],
)
def test_addresses_that_are_not_public(address: str) -> None:
    assert not netguard.is_public(address)


@pytest.mark.parametrize(
    ("address", "private_network"),
    [
        ("10.20.0.5", True), ("172.31.255.1", True), ("192.168.0.9", True), ("100.64.3.3", True),
        ("fd12:3456::5", True), ("64:ff9b::a14:5", True), ("::ffff:10.20.0.5", True),
        # Never, even for a host an allowlist names: loopback (the Lambda runtime API lives
        # there), link-local and the instance services (metadata), the unspecified address.
        ("127.0.0.1", False), ("::1", False), ("169.254.169.254", False), ("fe80::1", False),
        ("fd00:ec2::254", False), ("0.0.0.0", False), ("64:ff9b::a9fe:a9fe", False),
        ("64:ff9b:1::a14:5", False), (PUBLIC, False),
    ],
)
def test_private_networks_an_allowlist_may_name(address: str, private_network: bool) -> None:
    assert netguard.is_private_network(address) is private_network


# -- the allowlist -----------------------------------------------------------------------
def test_allowlist_entries_are_normalised() -> None:
    raw = [" Assets.Corp.Example. ", "*.CDN.example.net", ".media.example.org", "", "10.20.0.5",
           "[FD12:3456:0::5]", "bücher.example"]
    assert netguard.parse_allowlist(raw) == (
        "assets.corp.example", ".cdn.example.net", ".media.example.org", "10.20.0.5", "fd12:3456::5",
        "xn--bcher-kva.example",
    )


@pytest.mark.parametrize("entry", ["https://assets.corp.example", "assets.corp.example/path", "*.10.0.0.1",
                                   "host name", "a..b", "999.1.1.1", "assets.corp.example:8443"])
def test_malformed_allowlist_entries_are_a_configuration_error(entry: str) -> None:
    with pytest.raises(ConfigurationError, match="allowlist entry"):
        netguard.parse_allowlist([entry])


@pytest.mark.parametrize(
    ("host", "match"),
    [
        ("assets.corp.example", "exact"),
        ("img.cdn.example.net", "suffix"),
        ("a.b.cdn.example.net", "suffix"),
        ("cdn.example.net", None),  # a suffix entry covers the hosts under it, not the apex
        ("evilcdn.example.net", None),
        ("assets.corp.example.evil.test", None),
        ("10.20.0.5", "exact"),
        ("other.example", None),
    ],
)
def test_allowlist_match(host: str, match: str | None) -> None:
    allowlist = netguard.parse_allowlist(["assets.corp.example", "*.cdn.example.net", "10.20.0.5"])
    assert netguard.allowlist_match(host, allowlist) == match


ALLOWLIST = netguard.parse_allowlist(
    ["assets.corp.example", "assets-v6.corp.example", "nat64.corp.example", "loop.corp.example",
     "metadata.corp.example", "metadata-v6.corp.example", ".corp.example", "hooks.example.com"]
)


@pytest.mark.parametrize(
    ("url", "refusal"),
    [
        ("https://assets.corp.example/a.png", None),  # named exactly: a private address is fine
        ("https://assets-v6.corp.example/a.png", None),
        ("https://nat64.corp.example/a.png", None),
        ("https://hooks.example.com/a.png", None),
        ("https://shared.corp.example/a.png", "private"),  # only under a suffix: public addresses only
        ("https://loop.corp.example/a.png", "private"),
        ("https://metadata.corp.example/latest/meta-data/", "private"),
        ("https://metadata-v6.corp.example/latest/meta-data/", "private"),
        ("https://cdn.example.com/a.png", "not in the allowlist"),
        ("https://10.20.0.5/a.png", "not in the allowlist"),
    ],
)
def test_an_allowlist_admits_only_its_hosts_and_private_ones_only_by_name(
    url: str, refusal: str | None
) -> None:
    rules = Rules(allowlist=ALLOWLIST)
    if refusal is None:
        assert netguard.check_url(url, rules, field="image.url").url == url
    else:
        with pytest.raises(BadRequestError, match=refusal) as refused:
            netguard.check_url(url, rules, field="image.url")
        assert refused.value.message.startswith("'image.url' ")


def test_without_an_allowlist_private_hosts_are_refused_whatever_their_name() -> None:
    with pytest.raises(BadRequestError, match="private"):
        netguard.check_url("https://assets.corp.example/a.png", Rules())


def test_allow_private_lifts_the_address_check_but_not_the_allowlist() -> None:
    rules = Rules(allow_private=True, allowlist=netguard.parse_allowlist(["loop.corp.example"]))
    assert netguard.check_url("https://loop.corp.example/", rules)
    with pytest.raises(BadRequestError, match="allowlist"):
        netguard.check_url("https://127.0.0.1/", rules)


# -- what check_url hands to the connection ----------------------------------------------
def test_the_host_is_resolved_once_and_every_address_is_kept_in_order(resolver: Resolver) -> None:
    checked = netguard.check_url("https://CDN.example.com./a/b.png?size=2#frag", Rules())
    assert resolver.lookups == ["cdn.example.com"]
    assert checked.addresses == (
        (socket.AF_INET, (PUBLIC, 443)),
        (socket.AF_INET6, ("2606:2800:220:1:248:1893:25c8:1946", 443)),
    )
    assert (checked.host, checked.port, checked.target) == ("cdn.example.com", 443, "/a/b.png?size=2")
    assert checked.host_header == "cdn.example.com"


@pytest.mark.parametrize(
    ("url", "host_header", "target"),
    [
        ("http://hooks.example.com", "hooks.example.com", "/"),
        ("http://hooks.example.com:8080/x", "hooks.example.com:8080", "/x"),
        ("https://hooks.example.com:443/x", "hooks.example.com", "/x"),
        ("https://[2606:4700:0::1111]:8443/x?q", "[2606:4700::1111]:8443", "/x?q"),
    ],
)
def test_host_header_and_request_target(url: str, host_header: str, target: str) -> None:
    checked = netguard.check_url(url, Rules(allow_http=True))
    assert (checked.host_header, checked.target) == (host_header, target)


@pytest.mark.parametrize(
    ("url", "refusal"),
    [
        ("https://hooks.example.com/a b", "not a valid URL"),
        ("https://hooks.example.com/a\r\nX-Injected: 1", "not a valid URL"),
        ("https://hooks.example.com/bild-ä.png", "not a valid URL"),  # percent-encode it
        ("https://hooks.example.com:0/", "not a valid URL"),
        ("http://hooks.example.com/", "must use https"),
        ("file:///etc/passwd", "must use https"),
        ("https://user@hooks.example.com/", "credentials"),
        ("https:///", "no host"),
        ("https://nowhere.invalid/", "does not resolve"),
        ("x" * 2049, "at most 2048"),
        (None, "must be a URL"),
    ],
)
def test_refused_urls_name_the_field(url: Any, refusal: str) -> None:
    with pytest.raises(BadRequestError, match=refusal) as refused:
        netguard.check_url(url, Rules(), field="images.3.url")
    assert refused.value.message.startswith("'images.3.url' ")


def test_numeric_spellings_of_loopback_are_what_the_resolver_makes_of_them(monkeypatch) -> None:
    """The system resolver turns 2130706433, 0x7f.1 and 127.1 into 127.0.0.1; that
    answer is what is checked (and what would be connected to)."""
    monkeypatch.setattr(socket, "getaddrinfo", SYSTEM_GETADDRINFO)  # numeric hosts never reach DNS
    for host in ("2130706433", "0x7f.1", "127.1", "017700000001"):
        with pytest.raises(BadRequestError, match="private"):
            netguard.check_url(f"https://{host}/", Rules())


@pytest.fixture
def stuck_dns(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """A resolver that answers only when released (a name whose DNS servers stall)."""
    release = threading.Event()

    def stall(host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        release.wait(30)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (PUBLIC, port))]

    monkeypatch.setattr(socket, "getaddrinfo", stall)
    yield release
    release.set()


def test_dns_counts_against_the_deadline(stuck_dns: threading.Event) -> None:
    with pytest.raises(FetchTimeoutError):
        netguard.check_url("https://hooks.example.com/", Rules(), deadline=netguard.Deadline.after(0.05))
