"""Signed webhooks: a job's `webhook_url` is POSTed the prompt's outcome.

Signature (what a receiver checks, see `verify`):

    X-Comfy-Timestamp: <unix seconds>
    X-Comfy-Signature: v1=<hex HMAC-SHA256(secret, f"{timestamp}.{body}")>

The secret is an SSM SecureString (WEBHOOK_SECRET_PARAMETER, read through Powertools
parameters); its value never sits in the environment or a log line.

A webhook is a request our Lambda sends to an address a client chose, so the address is
checked twice: when the job is accepted (a bad one is a 400-class job error) and again
right before each delivery, since DNS may have changed and a prompt's extra_data can come
from any client of the same ComfyUI. Only https, and only public addresses: every address
the host resolves to must be global (no private, loopback, link-local - 169.254.169.254
is the instance metadata service - or reserved ranges). WEBHOOK_ALLOW_PRIVATE lifts the
address check (receivers inside a VPC); WEBHOOK_ALLOW_HTTP allows plain http (tests and
local runs only; the template never sets it). Redirects are never followed: a 3xx could
point anywhere. A residual risk remains: the host is resolved again when connecting, so a
DNS answer that changes within that instant is not caught.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import socket
import time
import uuid
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

import requests
from aws_lambda_powertools.metrics import MetricUnit

from .config import Settings, get_settings
from .errors import BadRequestError, ComfyCoreError
from .observability import logger, metrics

TIMESTAMP_HEADER = "X-Comfy-Timestamp"
SIGNATURE_HEADER = "X-Comfy-Signature"
EVENT_HEADER = "X-Comfy-Event"
# The same id on every attempt of one delivery: receivers can drop repeats.
DELIVERY_HEADER = "X-Comfy-Delivery"
SIGNATURE_VERSION = "v1"
MAX_URL_LENGTH = 2048
# First retry after 1 s, then 2 s, 4 s...: a receiver that blips recovers, and the
# archiver's sweep (which delivers) is not held up for long by one that is down.
BACKOFF_SECONDS = 1.0
# Receiver answers worth another attempt: timeouts, throttling, its own server errors.
_RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
USER_AGENT = "comfy-serverless-api-webhooks"


# -- the address -------------------------------------------------------------------------
def _is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is loopback, whatever its spelling
    return ip.is_global and not ip.is_multicast


def _resolve(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, OSError) as exc:
        raise BadRequestError("webhook_url host does not resolve") from exc
    return sorted({str(info[4][0]) for info in infos})


def validate_url(url: Any, settings: Settings | None = None) -> str:
    """The URL when a webhook may be sent to it; BadRequestError saying why not otherwise."""
    settings = settings or get_settings()
    if not isinstance(url, str) or not url or len(url) > MAX_URL_LENGTH:
        raise BadRequestError(f"'webhook_url' must be a URL of at most {MAX_URL_LENGTH} characters")
    if not settings.webhook_secret_parameter:
        raise BadRequestError("Webhooks are not enabled on this deployment (no signing secret)")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise BadRequestError("'webhook_url' is not a valid URL") from exc
    allowed = ("https", "http") if settings.webhook_allow_http else ("https",)
    if parts.scheme not in allowed:
        raise BadRequestError("'webhook_url' must use https")
    if not parts.hostname:
        raise BadRequestError("'webhook_url' has no host")
    if parts.username is not None or parts.password is not None:
        raise BadRequestError("'webhook_url' must not carry credentials")
    if settings.webhook_allow_private:
        return url
    addresses = _resolve(parts.hostname, port or (443 if parts.scheme == "https" else 80))
    if not addresses or not all(_is_public(a) for a in addresses):
        raise BadRequestError("'webhook_url' points to a private, loopback or link-local address")
    return url


def describe(url: str) -> str:
    """Scheme, host and path only, for logs: a query string may carry the receiver's token."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}{parts.path}"


# -- the signature -----------------------------------------------------------------------
def sign(secret: str, timestamp: str, body: str) -> str:
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
    from .secrets import ssm_secret  # Powertools parameters (and boto3): only when delivering

    return ssm_secret(settings.webhook_secret_parameter)


# -- delivery ----------------------------------------------------------------------------
@lru_cache(maxsize=1)
def _session() -> requests.Session:
    """Its own Session, not ComfyUI's: other headers, other pool. trust_env off: no proxy
    or .netrc credentials from the environment are ever sent to a client's address."""
    session = requests.Session()
    session.trust_env = False
    session.headers["User-Agent"] = USER_AGENT
    return session


def _attempt(url: str, body: bytes, headers: dict[str, str], settings: Settings) -> str:
    """'ok', 'retry' or 'fail' for one POST."""
    try:
        response = _session().post(
            url,
            data=body,
            headers=headers,
            timeout=(3.05, settings.webhook_timeout),
            allow_redirects=False,
        )
    except requests.exceptions.RequestException as exc:
        logger.info("Webhook attempt failed", extra={"url": describe(url), "error": type(exc).__name__})
        return "retry"
    response.close()
    if 200 <= response.status_code < 300:
        return "ok"
    logger.info("Webhook refused", extra={"url": describe(url), "status_code": response.status_code})
    return "retry" if response.status_code in _RETRY_STATUSES else "fail"


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
        validate_url(url, settings)
        secret = signing_secret(settings)
    except ComfyCoreError as exc:
        return _give_up(url, event_type, exc.message)
    body = json.dumps(detail, ensure_ascii=False, default=str, separators=(",", ":"))
    raw = body.encode("utf-8")
    delivery = str(uuid.uuid4())
    for attempt in range(1, settings.webhook_max_attempts + 1):
        timestamp = str(int(time.time()))  # signed per attempt: a late retry is still fresh
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign(secret, timestamp, body),
            EVENT_HEADER: event_type,
            DELIVERY_HEADER: delivery,
        }
        outcome = _attempt(url, raw, headers, settings)
        if outcome == "ok":
            metrics.add_metric(name="WebhookDelivered", unit=MetricUnit.Count, value=1)
            return True
        if outcome == "fail":
            return _give_up(url, event_type, "receiver refused the delivery")
        if attempt < settings.webhook_max_attempts:
            time.sleep(BACKOFF_SECONDS * 2 ** (attempt - 1))
    return _give_up(url, event_type, f"no success after {settings.webhook_max_attempts} attempts")
