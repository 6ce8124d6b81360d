"""A finished job's webhook over a real socket: the archiver's sweep POSTs to a receiver
on 127.0.0.1 that checks the signature with its own HMAC code, the secret read from SSM
(moto in-process) through Powertools. Loopback and plain http are allowed here only
through the test switches; with the production defaults nothing is sent.

Then `deliver` alone against hostile receivers: one that trickles its answer (the attempt
ends at WEBHOOK_TIMEOUT; the wall-clock bound is a ceiling far above it, not a speed
check), and a name that rebinds to an internal address between the check and the
connection (the connection goes where the check said)."""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from comfy_core.archive import sweep as archive
from comfy_core.announce import webhooks
from comfy_core.config import get_settings
from comfy_core.observability import metrics
from comfy_core.storage import s3_client
from moto import mock_aws
from tests.support.fake_comfy import StreamingComfy, use_session
from tests.support.jobs import SECRET, SECRET_NAME, put_secret
from tests.support.raw_http import TRICKLE_SECONDS, RawServer, trickle_body, trickle_headers
from tests.support.recordings import recorded_file, recording
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e

SAVE_ID = "aa5001e0-e7a3-4f42-a12c-f2f26746c0e6"


class Receiver(ThreadingHTTPServer):
    """Answers 503 `failures` times, then 200; keeps what arrived and whether it verified."""

    def __init__(self, failures: int = 0) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.failures = failures
        self.received: list[dict[str, Any]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hooks/comfy"


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers["Content-Length"])).decode("utf-8")
        timestamp, signature = self.headers["X-Comfy-Timestamp"], self.headers["X-Comfy-Signature"]
        # The receiver's side, written independently of comfy_core: what the README shows.
        digest = hmac.new(SECRET.encode(), f"{timestamp}.{body}".encode(), hashlib.sha256).hexdigest()
        expected = f"v1={digest}"
        self.server.received.append({
            "verified": hmac.compare_digest(expected, signature) and abs(time.time() - int(timestamp)) < 300,
            "event": self.headers["X-Comfy-Event"],
            "delivery": self.headers["X-Comfy-Delivery"],
            "detail": json.loads(body),
        })
        status = 503 if len(self.server.received) <= self.server.failures else 200
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def serving(server: Receiver) -> Iterator[Receiver]:
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def receiver(request: pytest.FixtureRequest) -> Iterator[Receiver]:
    with serving(Receiver(failures=getattr(request, "param", 0))) as server:
        yield server


@pytest.fixture
def sweep(monkeypatch: pytest.MonkeyPatch, receiver: Receiver) -> Iterator[Any]:
    """Runs the archiver over one finished job whose webhook_url is the receiver."""
    monkeypatch.setenv("IMAGE_BUCKET", "image-bucket")
    monkeypatch.setenv("WEBHOOK_SECRET_PARAMETER", SECRET_NAME.lstrip("/"))
    monkeypatch.setattr(webhooks, "BACKOFF_SECONDS", 0.0)
    get_settings.cache_clear()
    metrics.clear_metrics()
    history = copy.deepcopy(recording("history_id_success_save"))
    history[SAVE_ID]["prompt"][3] = {"comfy_serverless": {
        "workflow": "empty_save", "job_id": "order-42", "trigger": "sqs", "webhook_url": receiver.url}}
    with mock_aws():
        put_secret()
        s3_client().create_bucket(Bucket="image-bucket")
        session = StreamingComfy()
        session.routes[("GET", "/history")] = (200, history)
        session.routes[("GET", f"/history/{SAVE_ID}")] = (200, {SAVE_ID: history[SAVE_ID]})  # read alone
        session.files[("output", "", "harness_save_00001_.png")] = recorded_file("view_output.png")
        use_session(monkeypatch, session)
        yield lambda: archive.run_sweep()


def allow_loopback_http(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBHOOK_ALLOW_PRIVATE", "true")
    monkeypatch.setenv("WEBHOOK_ALLOW_HTTP", "true")
    get_settings.cache_clear()


def test_receiver_verifies_the_signed_completion(sweep, receiver, monkeypatch):
    allow_loopback_http(monkeypatch)
    sweep()
    sweep()  # announced once: the second sweep finds the manifest
    (delivery,) = receiver.received
    assert delivery["verified"] is True
    assert delivery["event"] == "ComfyUI Prompt Completed"
    assert delivery["detail"]["prompt_id"] == SAVE_ID and delivery["detail"]["job_id"] == "order-42"
    assert delivery["detail"]["keys"] == [f"images/{SAVE_ID}/2/harness_save_00001_.png"]


@pytest.mark.parametrize("receiver", [2], indirect=True)
def test_receiver_down_twice_gets_the_third_attempt(sweep, receiver, monkeypatch):
    allow_loopback_http(monkeypatch)
    sweep()
    assert [r["verified"] for r in receiver.received] == [True, True, True]
    assert len({r["delivery"] for r in receiver.received}) == 1
    assert sum(metrics.metric_set["WebhookDelivered"]["Value"]) == 1


@pytest.mark.parametrize("receiver", [10], indirect=True)
def test_receiver_down_for_good_is_given_up_with_a_metric(sweep, receiver, monkeypatch):
    allow_loopback_http(monkeypatch)
    summary = sweep()
    assert summary["prompts_archived"] == 1  # the archive does not depend on the webhook
    assert len(receiver.received) == get_settings().webhook_max_attempts == 3
    assert sum(metrics.metric_set["WebhookFailed"]["Value"]) == 1


def test_production_defaults_send_nothing_to_loopback(sweep, receiver):
    summary = sweep()
    assert summary["prompts_archived"] == 1
    assert receiver.received == []
    assert sum(metrics.metric_set["WebhookFailed"]["Value"]) == 1


# -- deliver() against hostile receivers --------------------------------------------------
DETAIL = {"prompt_id": SAVE_ID, "status": "success"}


@pytest.fixture
def deliver_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """One attempt, the secret a stub (reading it from SSM is what the sweeps above show)."""
    monkeypatch.setenv("WEBHOOK_SECRET_PARAMETER", SECRET_NAME.lstrip("/"))
    monkeypatch.setenv("WEBHOOK_MAX_ATTEMPTS", "1")
    monkeypatch.setattr(webhooks, "signing_secret", lambda settings: SECRET)
    get_settings.cache_clear()
    metrics.clear_metrics()


@pytest.mark.parametrize(
    ("script", "delivered_by"),
    [(trickle_headers(), False), (trickle_body(), True)],  # a 200 status line is the answer
    ids=["headers", "body"],
)
def test_a_trickling_receiver_cannot_hold_a_delivery(deliver_alone, monkeypatch, script, delivered_by):
    """It sends a byte every 0.2 s (of a header, or of a body declared 100 MB) for
    TRICKLE_SECONDS: no single read ever times out. The attempt still ends at its 1 s
    deadline (headers), or as soon as the status is in (the body is never read)."""
    monkeypatch.setenv("WEBHOOK_TIMEOUT", "1")
    allow_loopback_http(monkeypatch)
    with RawServer(script) as slow:
        started = time.monotonic()
        delivered = webhooks.deliver(slow.url(), "ComfyUI Prompt Completed", DETAIL)
        elapsed = time.monotonic() - started
        wait_for(lambda: slow.outcomes, timeout=TRICKLE_SECONDS + 5, what="the receiver's trickle to end")
    assert delivered is delivered_by
    assert slow.outcomes == ["client left"]  # we hung up; it never got to trickle to the end
    assert elapsed < TRICKLE_SECONDS / 2


PUBLIC_ADDRESS = "93.184.215.14"
INTERNAL_ADDRESS = "10.0.3.7"


def test_a_delivery_connects_to_the_address_it_checked(deliver_alone, monkeypatch):
    """DNS rebinding: the receiver's name answers a public address when it is checked and an
    internal one a moment later. The delivery goes to the address that was checked, and the
    name is looked up once. Private addresses stay refused (only plain http is switched on,
    to reach the local servers); `socket.connect` plays the network, routing the public
    address to one local server and the internal address to another."""
    monkeypatch.setenv("WEBHOOK_ALLOW_HTTP", "true")
    get_settings.cache_clear()
    system_getaddrinfo, system_connect = socket.getaddrinfo, socket.socket.connect
    lookups: list[str] = []
    connected: list[str] = []

    def resolve(host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        if host != "rebind.example.com":
            return system_getaddrinfo(host, port, *args, **kwargs)
        lookups.append(host)
        address = PUBLIC_ADDRESS if len(lookups) == 1 else INTERNAL_ADDRESS
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    with serving(Receiver()) as public, serving(Receiver()) as internal:
        network = {PUBLIC_ADDRESS: public.server_address, INTERNAL_ADDRESS: internal.server_address}

        def connect(sock: socket.socket, address: Any) -> None:
            if address[0] in network:
                connected.append(address[0])
                address = network[address[0]]
            system_connect(sock, address)

        monkeypatch.setattr(socket, "getaddrinfo", resolve)
        monkeypatch.setattr(socket.socket, "connect", connect)
        url = "http://rebind.example.com/hooks/comfy"
        delivered = webhooks.deliver(url, "ComfyUI Prompt Completed", DETAIL)

    assert internal.received == []
    assert delivered is True and [r["verified"] for r in public.received] == [True]
    assert connected == [PUBLIC_ADDRESS] and lookups == ["rebind.example.com"]
