"""Signed webhooks: a job's `webhook_url` is POSTed the prompt's outcome.

Signed per the Standard Webhooks spec (standardwebhooks.com), so receivers verify with a
stock library in their language:

    webhook-id: <delivery id, the same on every attempt>
    webhook-timestamp: <unix seconds>
    webhook-signature: v1,<base64 HMAC-SHA256(key, f"{id}.{timestamp}.{body}")>

The key is the secret's bytes; a secret written as `whsec_<base64>` (the spec's form) is
that base64 decoded. Receivers construct their verifier with `whsec_` + base64(key)
(`standard_secret`). The first release's own headers are sent too, for receivers written
against it:

    X-Comfy-Timestamp: <unix seconds>
    X-Comfy-Signature: v1=<hex HMAC-SHA256(secret, f"{timestamp}.{body}")>

The secret is an SSM SecureString (WEBHOOK_SECRET_PARAMETER, read through Powertools
parameters); its value never sits in the environment or a log line.

A webhook is a request our Lambda sends to an address a client chose, so it goes through
`netguard`: the URL is checked when the job is accepted (a bad one is a 400-class job error)
and again at each attempt, since DNS may have changed and a prompt's extra_data can come
from any client of the same ComfyUI. Only https, and only public addresses (every address
the host resolves to, IPv4 inside IPv6 forms included); each attempt resolves the name once
and connects to the address it checked, so a DNS answer that changes in between is not
followed. WEBHOOK_ALLOW_PRIVATE lifts the address check (receivers inside a VPC);
WEBHOOK_ALLOW_HTTP allows plain http (tests and local runs only; the template never sets
it). Redirects are never followed: a 3xx could point anywhere.

WEBHOOK_TIMEOUT is the whole of one attempt (DNS, connecting, TLS, sending, the receiver's
status line and headers), however slowly the receiver trickles them; its body is never
read. So a delivery takes at most WEBHOOK_MAX_ATTEMPTS x WEBHOOK_TIMEOUT plus the backoff.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
import uuid
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from aws_lambda_powertools.metrics import MetricUnit

from .. import deadline as invocation
from ..config import Settings, get_settings
from ..errors import BadRequestError, ComfyCoreError, FetchError
from ..observability import logger, metrics

if TYPE_CHECKING:  # imported where a URL is checked or called: most runs have no webhook
    from .. import netguard

TIMESTAMP_HEADER = "X-Comfy-Timestamp"
SIGNATURE_HEADER = "X-Comfy-Signature"
EVENT_HEADER = "X-Comfy-Event"
# The same id on every attempt of one delivery: receivers can drop repeats.
DELIVERY_HEADER = "X-Comfy-Delivery"
SIGNATURE_VERSION = "v1"
# First retry after 1 s, then 2 s, 4 s...: a receiver that blips recovers, and the
# archiver's sweep (which delivers) is not held up for long by one that is down.
BACKOFF_SECONDS = 1.0
# Receiver answers worth another attempt: timeouts, throttling, its own server errors.
_RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
USER_AGENT = "comfy-serverless-api-webhooks"


# -- the address -------------------------------------------------------------------------
def _rules(settings: Settings) -> netguard.Rules:
    from .. import netguard

    return netguard.Rules(
        allow_http=settings.webhook_allow_http, allow_private=settings.webhook_allow_private
    )


def _require_enabled(settings: Settings) -> None:
    if not settings.webhook_secret_parameter:
        raise BadRequestError("Webhooks are not enabled on this deployment (no signing secret)")


def check(url: Any, settings: Settings, deadline: netguard.Deadline | None = None) -> netguard.CheckedUrl:
    """The URL resolved and checked, what an attempt connects to; BadRequestError saying why
    a webhook may not be sent to it."""
    _require_enabled(settings)
    from .. import netguard

    return netguard.check_url(url, _rules(settings), field="webhook_url", deadline=deadline)


def validate_url(url: Any, settings: Settings | None = None) -> str:
    """The URL when a webhook may be sent to it; BadRequestError saying why not otherwise."""
    return check(url, settings or get_settings()).url


def describe(url: str) -> str:
    """Scheme, host and path only, for logs: a query string may carry the receiver's token."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}{parts.path}"


# -- the signature -----------------------------------------------------------------------
STANDARD_PREFIX = "whsec_"


def signing_key(secret: str) -> bytes:
    """The HMAC key of the Standard Webhooks signature: `whsec_<base64>` decoded, or the
    secret's own bytes (a secret made with `openssl rand -hex 32`)."""
    if secret.startswith(STANDARD_PREFIX):
        try:
            return base64.b64decode(secret[len(STANDARD_PREFIX):], validate=True)
        except (binascii.Error, ValueError):
            pass  # not base64 after all: the whole string is the key
    return secret.encode("utf-8")


def standard_secret(secret: str) -> str:
    """The secret in the form Standard Webhooks libraries take: give this to receivers."""
    return STANDARD_PREFIX + base64.b64encode(signing_key(secret)).decode("ascii")


def sign_standard(secret: str, delivery_id: str, timestamp: str, body: str) -> str:
    """The `webhook-signature` header value (Standard Webhooks, version v1)."""
    signed = f"{delivery_id}.{timestamp}.{body}".encode("utf-8")
    digest = hmac.new(signing_key(secret), signed, hashlib.sha256).digest()
    return f"v1,{base64.b64encode(digest).decode('ascii')}"


def sign(secret: str, timestamp: str, body: str) -> str:
    """The first release's `X-Comfy-Signature` value."""
    digest = hmac.new(secret.encode("utf-8"), f"{timestamp}.{body}".encode("utf-8"), hashlib.sha256)
    return f"{SIGNATURE_VERSION}={digest.hexdigest()}"


def verify(
    secret: str, timestamp: str, body: str, signature: str, *, tolerance: int = 300, now: float | None = None
) -> bool:
    """What a receiver does: the signature matches and the timestamp is recent (replays of
    an old delivery are refused). Constant-time comparison."""
    try:
        age = abs((time.time() if now is None else now) - int(timestamp))
    except ValueError:
        return False
    return age <= tolerance and hmac.compare_digest(sign(secret, timestamp, body), signature)


def signing_secret(settings: Settings) -> str:
    from ..secrets import ssm_secret  # Powertools parameters (and boto3): only when delivering

    return ssm_secret(settings.webhook_secret_parameter)


# -- delivery ----------------------------------------------------------------------------
def _attempt(url: str, body: bytes, headers: dict[str, str], settings: Settings) -> str:
    """'ok', 'retry' or 'fail' for one POST, all of it within WEBHOOK_TIMEOUT; BadRequestError
    when the address is refused. Each attempt resolves the name once, checks what it got and
    connects to that: a retry follows DNS changes, and is checked for them."""
    from .. import netguard

    deadline = netguard.Deadline.after(invocation.bounded(settings.webhook_timeout))
    try:
        checked = check(url, settings, deadline)
        with netguard.open_url(checked, "POST", deadline=deadline, body=body, headers=headers) as response:
            status = response.status  # the body is never read: the status is the answer
    except FetchError as exc:  # timeouts (DNS included), refused connections, broken TLS or HTTP
        logger.info("Webhook attempt failed", extra={"url": describe(url), "error": type(exc).__name__})
        return "retry"
    if 200 <= status < 300:
        return "ok"
    logger.info("Webhook refused", extra={"url": describe(url), "status_code": status})
    return "retry" if status in _RETRY_STATUSES else "fail"


def _give_up(url: str, event_type: str, reason: str) -> bool:
    metrics.add_metric(name="WebhookFailed", unit=MetricUnit.Count, value=1)
    logger.warning("Webhook given up", extra={"url": describe(url), "event": event_type, "reason": reason})
    return False


def deliver(url: str, event_type: str, detail: dict[str, Any], settings: Settings | None = None) -> bool:
    """POST `detail` signed to `url`, up to WEBHOOK_MAX_ATTEMPTS times with exponential
    backoff; True once the receiver answered 2xx. Never raises: the prompt's outcome is
    already stored and announced on EventBridge; a webhook that cannot be delivered is
    counted (WebhookFailed) and logged."""
    settings = settings or get_settings()
    try:
        _require_enabled(settings)
        secret = signing_secret(settings)
    except ComfyCoreError as exc:
        return _give_up(url, event_type, exc.message)
    body = json.dumps(detail, ensure_ascii=False, default=str, separators=(",", ":"))
    raw = body.encode("utf-8")
    delivery = str(uuid.uuid4())
    for attempt in range(1, settings.webhook_max_attempts + 1):
        timestamp = str(int(time.time()))  # signed per attempt: a late retry is still fresh
        headers = {
            "User-Agent": USER_AGENT,
            "Content-Type": "application/json",
            "webhook-id": delivery,
            "webhook-timestamp": timestamp,
            "webhook-signature": sign_standard(secret, delivery, timestamp, body),
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign(secret, timestamp, body),
            EVENT_HEADER: event_type,
            DELIVERY_HEADER: delivery,
        }
        try:
            outcome = _attempt(url, raw, headers, settings)
        except BadRequestError as exc:  # refused now, whatever it was when the job came in
            return _give_up(url, event_type, exc.message)
        if outcome == "ok":
            metrics.add_metric(name="WebhookDelivered", unit=MetricUnit.Count, value=1)
            return True
        if outcome == "fail":
            return _give_up(url, event_type, "receiver refused the delivery")
        if attempt < settings.webhook_max_attempts:
            time.sleep(BACKOFF_SECONDS * 2 ** (attempt - 1))
    return _give_up(url, event_type, f"no success after {settings.webhook_max_attempts} attempts")
