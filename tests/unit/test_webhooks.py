"""comfy_core.announce.webhooks alone: which addresses a webhook may go to, the signature, and
delivery with bounded retries. No sockets: DNS is `socket.getaddrinfo` patched, the
receiver a fake `netguard.open_url`, the secret a stub (SSM, real sockets, slow receivers
and DNS rebinding are covered in tests/e2e)."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import ipaddress
import json
import socket
import types
from collections.abc import Iterator
from typing import Any

import pytest

from comfy_core import netguard
from comfy_core.announce import webhooks
from comfy_core.config import get_settings
from comfy_core.errors import BadRequestError, FetchError, FetchTimeoutError
from comfy_core.observability import metrics

SECRET = "whsec-unit-0123456789"
PUBLIC = "93.184.215.14"
DNS = {
    "hooks.example.com": [PUBLIC],
    "internal.example.com": ["10.0.3.7"],
    "mixed.example.com": [PUBLIC, "192.168.1.20"],  # one private answer is enough to refuse
    "metadata.example.com": ["169.254.169.254"],
    "v6.example.com": ["2606:2800:220:1:248:1893:25c8:1946"],
    # What a DNS64 resolver answers for a public IPv4-only host (an IPv6-only subnet).
    "dns64.example.com": ["64:ff9b::5db8:d70e"],
    # The same resolver's answer for a name pointing at the metadata service / a VPC host.
    "nat64-metadata.example.com": ["64:ff9b::a9fe:a9fe"],
    "compat.example.com": ["::10.0.3.7"],
}


@pytest.fixture(autouse=True)
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBHOOK_SECRET_PARAMETER", "comfy/webhook-secret")
    get_settings.cache_clear()
    metrics.clear_metrics()

    def resolve(host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        try:
            addresses = DNS[host] if host in DNS else [str(ipaddress.ip_address(host))]
        except ValueError as exc:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known") from exc
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
                for a in addresses]

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    monkeypatch.setattr(webhooks, "signing_secret", lambda settings: SECRET)
    monkeypatch.setattr(webhooks, "BACKOFF_SECONDS", 0.0)


def metric(name: str) -> float:
    return sum(metrics.metric_set.get(name, {}).get("Value", []))


# -- which URLs -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.com/comfy",
        "https://hooks.example.com:8443/comfy?token=abc",
        f"https://{PUBLIC}/hook",
        "https://v6.example.com/hook",
        "https://dns64.example.com/hook",  # NAT64 of a public address is public
        "https://[64:ff9b::5db8:d70e]/hook",
    ],
)
def test_public_https_urls_are_accepted(url: str) -> None:
    assert webhooks.validate_url(url) == url


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://127.0.0.1/hook", "private"),
        ("https://10.1.2.3/hook", "private"),
        ("https://169.254.169.254/latest/meta-data/", "private"),
        ("https://[::1]/hook", "private"),
        ("https://[::ffff:127.0.0.1]/hook", "private"),
        ("https://[fe80::1]/hook", "private"),
        ("https://100.64.0.1/hook", "private"),  # carrier-grade NAT: not on the internet either
        ("https://0.0.0.0/hook", "private"),
        ("https://internal.example.com/hook", "private"),  # a public name for a private address
        ("https://metadata.example.com/hook", "private"),
        ("https://mixed.example.com/hook", "private"),
        # IPv6 spellings of private IPv4 addresses: judged by the address inside.
        ("https://[64:ff9b::7f00:1]/hook", "private"),  # NAT64 of 127.0.0.1
        ("https://[64:ff9b::a9fe:a9fe]/hook", "private"),  # NAT64 of 169.254.169.254
        ("https://[64:ff9b::a00:307]/hook", "private"),  # NAT64 of 10.0.3.7
        ("https://[64:ff9b:1::a00:307]/hook", "private"),  # local-use NAT64
        ("https://[::127.0.0.1]/hook", "private"),  # IPv4-compatible
        ("https://[::a9fe:a9fe]/hook", "private"),
        ("https://[::ffff:0:7f00:1]/hook", "private"),  # IPv4-translated (RFC 2765)
        ("https://[2002:a9fe:a9fe::1]/hook", "private"),  # 6to4 of 169.254.169.254
        ("https://[2001:0:4136:e378:8000:63bf:f5ff:fcf8]/hook", "private"),  # Teredo client 10.0.3.7
        ("https://nat64-metadata.example.com/hook", "private"),
        ("https://compat.example.com/hook", "private"),
        ("http://hooks.example.com/hook", "https"),
        ("ftp://hooks.example.com/hook", "https"),
        ("https://user:pass@hooks.example.com/hook", "credentials"),
        ("https:///no-host", "no host"),
        ("https://nowhere.invalid/hook", "does not resolve"),
        ("https://hooks.example.com:99999/hook", "not a valid URL"),
        ("https://hooks.example.com/" + "a" * 2100, "at most 2048"),
        (42, "must be a URL"),
    ],
)
def test_refused_urls(url: Any, reason: str) -> None:
    with pytest.raises(BadRequestError) as refused:
        webhooks.validate_url(url)
    assert reason in refused.value.message


def test_without_a_signing_secret_webhooks_are_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WEBHOOK_SECRET_PARAMETER")
    get_settings.cache_clear()
    with pytest.raises(BadRequestError, match="not enabled"):
        webhooks.validate_url("https://hooks.example.com/comfy")


def test_private_addresses_and_http_only_when_switched_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBHOOK_ALLOW_PRIVATE", "true")
    get_settings.cache_clear()
    assert webhooks.validate_url("https://10.1.2.3/hook")
    with pytest.raises(BadRequestError, match="https"):  # private allowed, plain http still not
        webhooks.validate_url("http://10.1.2.3/hook")
    monkeypatch.setenv("WEBHOOK_ALLOW_HTTP", "true")
    get_settings.cache_clear()
    assert webhooks.validate_url("http://127.0.0.1:8080/hook")


def test_production_defaults_refuse_private_and_http() -> None:
    settings = get_settings()
    assert (settings.webhook_allow_private, settings.webhook_allow_http) == (False, False)


# -- the signature ----------------------------------------------------------------------
def test_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    body = json.dumps({"prompt_id": "p1"})
    expected = hmac.new(SECRET.encode(), f"1795544969.{body}".encode(), hashlib.sha256).hexdigest()
    assert webhooks.sign(SECRET, "1795544969", body) == f"v1={expected}"


def test_verify_refuses_tampering_other_secrets_and_old_deliveries() -> None:
    body, now = '{"prompt_id":"p1"}', 1_795_544_969
    signature = webhooks.sign(SECRET, str(now), body)
    assert webhooks.verify(SECRET, str(now), body, signature, now=now + 10)
    assert not webhooks.verify(SECRET, str(now), body.replace("p1", "p2"), signature, now=now)
    assert not webhooks.verify("other-secret", str(now), body, signature, now=now)
    assert not webhooks.verify(SECRET, str(now), body, signature, now=now + 301)  # a replay
    assert not webhooks.verify(SECRET, "not-a-time", body, signature, now=now)


# -- delivery ---------------------------------------------------------------------------
class Receiver:
    """Stands in for `netguard.open_url`: answers with the scripted statuses (or raises the
    scripted FetchErrors), recording each attempt."""

    def __init__(self, *answers: int | Exception) -> None:
        self.answers = list(answers)
        self.attempts: list[dict[str, Any]] = []

    @contextlib.contextmanager
    def open_url(self, checked: netguard.CheckedUrl, method: str = "GET", **kwargs: Any) -> Iterator[Any]:
        self.attempts.append({"checked": checked, "method": method, **kwargs})
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        yield types.SimpleNamespace(status=answer)


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Any:
    def install(*answers: int | Exception) -> Receiver:
        fake = Receiver(*answers)
        monkeypatch.setattr(netguard, "open_url", fake.open_url)
        return fake

    return install


DETAIL = {"prompt_id": "p1", "status": "success", "keys": ["images/p1/9/a.png"]}


def test_delivery_is_signed_and_verifiable(receiver: Any) -> None:
    session = receiver(204)
    assert webhooks.deliver("https://hooks.example.com/comfy?token=abc", "ComfyUI Prompt Completed", DETAIL)
    (attempt,) = session.attempts
    headers, body = attempt["headers"], attempt["body"].decode()
    assert attempt["method"] == "POST" and attempt["checked"].target == "/comfy?token=abc"
    assert json.loads(body) == DETAIL
    assert headers["X-Comfy-Event"] == "ComfyUI Prompt Completed"
    assert webhooks.verify(SECRET, headers["X-Comfy-Timestamp"], body, headers["X-Comfy-Signature"])
    assert metric("WebhookDelivered") == 1


def test_a_delivery_verifies_with_the_standard_webhooks_package(receiver: Any) -> None:
    """Receivers verify with a stock library (here Python's `standardwebhooks`), given the
    secret in the spec's `whsec_` form."""
    from standardwebhooks.webhooks import Webhook

    session = receiver(500, 204)
    assert webhooks.deliver("https://hooks.example.com/comfy", "ComfyUI Prompt Completed", DETAIL)
    first, second = session.attempts
    assert first["headers"]["webhook-id"] == second["headers"]["webhook-id"]  # one id per delivery
    for attempt in (first, second):
        payload = Webhook(webhooks.standard_secret(SECRET)).verify(attempt["body"], attempt["headers"])
        assert payload == DETAIL


def test_an_attempt_connects_to_the_addresses_its_own_lookup_checked(receiver: Any) -> None:
    session = receiver(200)
    assert webhooks.deliver("https://mixed.example.com/hook", "ComfyUI Prompt Completed", DETAIL) is False
    assert session.attempts == []  # one private answer: nothing sent
    assert webhooks.deliver("https://hooks.example.com:8443/hook", "ComfyUI Prompt Completed", DETAIL)
    (attempt,) = session.attempts
    assert attempt["checked"].addresses == ((socket.AF_INET, (PUBLIC, 8443)),)
    assert attempt["checked"].host_header == "hooks.example.com:8443"


def test_one_deadline_per_attempt_from_webhook_timeout(receiver: Any, monkeypatch) -> None:
    monkeypatch.setenv("WEBHOOK_TIMEOUT", "2.5")
    get_settings.cache_clear()
    session = receiver(200)
    before = netguard.Deadline.after(2.5).at
    assert webhooks.deliver("https://hooks.example.com/comfy", "ComfyUI Prompt Completed", DETAIL)
    deadline = session.attempts[0]["deadline"]
    assert before <= deadline.at <= netguard.Deadline.after(2.5).at


def test_receiver_trouble_is_retried_with_backoff_then_succeeds(receiver: Any, monkeypatch) -> None:
    monkeypatch.setattr(webhooks, "BACKOFF_SECONDS", 0.25)
    waits: list[float] = []
    monkeypatch.setattr(webhooks.time, "sleep", waits.append)
    session = receiver(503, FetchTimeoutError("hooks.example.com did not answer within the deadline"), 200)
    assert webhooks.deliver("https://hooks.example.com/comfy", "ComfyUI Prompt Completed", DETAIL)
    assert len(session.attempts) == 3 and waits == [0.25, 0.5]  # exponential
    ids = {a["headers"]["X-Comfy-Delivery"] for a in session.attempts}
    assert len(ids) == 1  # one delivery id across attempts: receivers can drop repeats
    assert len({a["deadline"] for a in session.attempts}) == 3  # each attempt its own deadline


def test_delivery_gives_up_after_the_bounded_attempts_with_a_metric(receiver: Any, monkeypatch) -> None:
    monkeypatch.setenv("WEBHOOK_MAX_ATTEMPTS", "4")
    get_settings.cache_clear()
    session = receiver(500, FetchError("hooks.example.com could not be reached or did not answer HTTP"))
    assert not webhooks.deliver("https://hooks.example.com/comfy", "ComfyUI Prompt Failed", DETAIL)
    assert len(session.attempts) == 4
    assert metric("WebhookFailed") == 1 and metric("WebhookDelivered") == 0


@pytest.mark.parametrize("status", [400, 401, 404, 302])
def test_a_refusal_is_not_retried(receiver: Any, status: int) -> None:
    session = receiver(status)
    assert not webhooks.deliver("https://hooks.example.com/comfy", "ComfyUI Prompt Failed", DETAIL)
    assert len(session.attempts) == 1 and metric("WebhookFailed") == 1


def test_address_checked_again_at_delivery(receiver: Any) -> None:
    # Accepted earlier, or recorded in extra_data by another client of the same ComfyUI.
    session = receiver(200)
    assert not webhooks.deliver("https://internal.example.com/hook", "ComfyUI Prompt Completed", DETAIL)
    assert session.attempts == [] and metric("WebhookFailed") == 1


def test_a_retry_resolves_again_and_is_checked_again(receiver: Any, monkeypatch) -> None:
    """Between attempts the name moved to a private address: the retry is not sent."""
    answers = iter([[PUBLIC], ["10.0.3.7"]])

    def resolve(host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in next(answers)]

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    session = receiver(503)
    assert not webhooks.deliver("https://moving.example.com/hook", "ComfyUI Prompt Completed", DETAIL)
    assert len(session.attempts) == 1 and metric("WebhookFailed") == 1


def test_unreadable_secret_gives_up_without_sending(receiver: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from comfy_core.errors import ConfigurationError

    def missing(settings: Any) -> str:
        raise ConfigurationError("Secret parameter /comfy/webhook-secret could not be read")

    monkeypatch.setattr(webhooks, "signing_secret", missing)
    session = receiver(200)
    assert not webhooks.deliver("https://hooks.example.com/comfy", "ComfyUI Prompt Completed", DETAIL)
    assert session.attempts == [] and metric("WebhookFailed") == 1
