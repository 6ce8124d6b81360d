"""comfy_core.webhooks alone: which addresses a webhook may go to, the signature, and
delivery with bounded retries. No sockets: DNS is `socket.getaddrinfo` patched, the
receiver a fake `requests.Session`, the secret a stub (SSM is covered in tests/e2e)."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import socket
from typing import Any

import pytest
import requests

from comfy_core import webhooks
from comfy_core.config import get_settings
from comfy_core.errors import BadRequestError
from comfy_core.observability import metrics

SECRET = "whsec-unit-0123456789"
PUBLIC = "93.184.215.14"
DNS = {
    "hooks.example.com": [PUBLIC],
    "internal.example.com": ["10.0.3.7"],
    "mixed.example.com": [PUBLIC, "192.168.1.20"],  # one private answer is enough to refuse
    "metadata.example.com": ["169.254.169.254"],
    "v6.example.com": ["2606:2800:220:1:248:1893:25c8:1946"],
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

    monkeypatch.setattr(webhooks.socket, "getaddrinfo", resolve)
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
class Receiver(requests.Session):
    """Answers POSTs with the scripted statuses (or exceptions), recording each attempt."""

    def __init__(self, *answers: int | Exception) -> None:
        super().__init__()
        self.answers = list(answers)
        self.attempts: list[dict[str, Any]] = []

    def post(self, url: str, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        self.attempts.append({"url": url, **kwargs})
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        response = requests.Response()
        response.status_code = answer
        response._content, response._content_consumed = b"", True
        return response


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Any:
    def install(*answers: int | Exception) -> Receiver:
        fake = Receiver(*answers)
        # The module's own Session (cleared after the test), its POST answered by the fake.
        monkeypatch.setattr(webhooks._session(), "post", fake.post)
        return fake

    return install


DETAIL = {"prompt_id": "p1", "status": "success", "keys": ["images/p1/9/a.png"]}


def test_delivery_is_signed_and_verifiable(receiver: Any) -> None:
    session = receiver(204)
    assert webhooks.deliver("https://hooks.example.com/comfy", "ComfyUI Prompt Completed", DETAIL)
    (attempt,) = session.attempts
    headers, body = attempt["headers"], attempt["data"].decode()
    assert json.loads(body) == DETAIL
    assert headers["X-Comfy-Event"] == "ComfyUI Prompt Completed"
    assert webhooks.verify(SECRET, headers["X-Comfy-Timestamp"], body, headers["X-Comfy-Signature"])
    assert attempt["allow_redirects"] is False  # a redirect could point anywhere
    assert metric("WebhookDelivered") == 1


def test_receiver_trouble_is_retried_with_backoff_then_succeeds(receiver: Any, monkeypatch) -> None:
    monkeypatch.setattr(webhooks, "BACKOFF_SECONDS", 0.25)
    waits: list[float] = []
    monkeypatch.setattr(webhooks.time, "sleep", waits.append)
    session = receiver(503, requests.exceptions.ConnectionError("reset"), 200)
    assert webhooks.deliver("https://hooks.example.com/comfy", "ComfyUI Prompt Completed", DETAIL)
    assert len(session.attempts) == 3 and waits == [0.25, 0.5]  # exponential
    ids = {a["headers"]["X-Comfy-Delivery"] for a in session.attempts}
    assert len(ids) == 1  # one delivery id across attempts: receivers can drop repeats


def test_delivery_gives_up_after_the_bounded_attempts_with_a_metric(receiver: Any, monkeypatch) -> None:
    monkeypatch.setenv("WEBHOOK_MAX_ATTEMPTS", "4")
    get_settings.cache_clear()
    session = receiver(500)
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


def test_unreadable_secret_gives_up_without_sending(receiver: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from comfy_core.errors import ConfigurationError

    def missing(settings: Any) -> str:
        raise ConfigurationError("Secret parameter /comfy/webhook-secret could not be read")

    monkeypatch.setattr(webhooks, "signing_secret", missing)
    session = receiver(200)
    assert not webhooks.deliver("https://hooks.example.com/comfy", "ComfyUI Prompt Completed", DETAIL)
    assert session.attempts == [] and metric("WebhookFailed") == 1
