"""The webhook signature against known answers: what a receiver written in any language must
compute, so the expected values are not produced by the code under test.

The hex digests below were computed once outside Python, with OpenSSL:

    printf '%s' '<timestamp>.<body>' | openssl dgst -sha256 -hmac '<secret>' -hex

(the body as UTF-8 bytes), and written down here.
"""

from __future__ import annotations

import pytest

from comfy_core.announce import webhooks

SECRET = "whsec-test-5f1c0b7e"
KNOWN_ANSWERS = [
    pytest.param(
        "1795544969",
        '{"detail-type":"Prompt Succeeded","prompt_id":"aa5001e0-e7a3-4f42-a12c-f2f26746c0e6"}',
        "v1=b099b2cebfb9392852c4734e2c17552ad6bd3a1d302274cc89005301595e2d81",
        id="ascii-body",
    ),
    pytest.param(
        "1795545023",
        '{"prompt":"\u00fcn\u00efcode \u2603"}',  # signed as UTF-8: c3 bc 6e c3 af ... e2 98 83
        "v1=b4a895e0f5e94d69b80bc455e9d133ce4af38e8a2be6c297c5319bf501e62d8b",
        id="utf8-body",
    ),
]


@pytest.mark.parametrize(("timestamp", "body", "signature"), KNOWN_ANSWERS)
def test_signature_matches_the_known_answer(timestamp: str, body: str, signature: str) -> None:
    assert webhooks.sign(SECRET, timestamp, body) == signature


@pytest.mark.parametrize(("timestamp", "body", "signature"), KNOWN_ANSWERS)
def test_verify_accepts_the_known_answer_and_nothing_near_it(
    timestamp: str, body: str, signature: str
) -> None:
    now = int(timestamp)
    assert webhooks.verify(SECRET, timestamp, body, signature, now=now)
    assert not webhooks.verify(SECRET, timestamp, body, signature.upper(), now=now)
    assert not webhooks.verify(SECRET, timestamp, body, signature.removeprefix("v1="), now=now)
    assert not webhooks.verify(SECRET, str(now + 1), body, signature, now=now)
    assert not webhooks.verify(SECRET, timestamp, body + " ", signature, now=now)


# -- Standard Webhooks (standardwebhooks.com) ------------------------------------------------
# Computed with OpenSSL, base64 of the raw HMAC:
#   printf '%s' '<id>.<timestamp>.<body>' | openssl dgst -sha256 -hmac '<secret>' -binary | base64
# and, for a `whsec_` secret, with the key given as hex of its base64-decoded bytes:
#   ... | openssl dgst -sha256 -mac HMAC -macopt hexkey:7365637265742d6b65792d6279746573 -binary | base64
STANDARD_ANSWERS = [
    pytest.param(SECRET, "v1,gWdAqm9infCCI4F2tkcMR7IIq0NL4psdZ83On9PPxhI=", id="plain-secret"),
    pytest.param("whsec_c2VjcmV0LWtleS1ieXRlcw==", "v1,KtzdONRMEcPnDYuUypfRMZEC45aFrBdueprA39o8dhs=",
                 id="whsec-secret"),
]


@pytest.mark.parametrize(("secret", "signature"), STANDARD_ANSWERS)
def test_standard_signature_matches_the_known_answer(secret: str, signature: str) -> None:
    assert webhooks.sign_standard(secret, "msg_2f1c", "1795544969", '{"prompt_id":"aa5001e0"}') == signature


@pytest.mark.parametrize(("secret", "signature"), STANDARD_ANSWERS)
def test_the_stock_library_signs_the_same(secret: str, signature: str) -> None:
    """The `standardwebhooks` package, given `standard_secret`, computes the same signature
    (its verify() also checks the clock: a live delivery is verified in test_webhooks)."""
    from datetime import datetime, timezone

    from standardwebhooks.webhooks import Webhook

    at = datetime.fromtimestamp(1795544969, tz=timezone.utc)
    library = Webhook(webhooks.standard_secret(secret)).sign("msg_2f1c", at, '{"prompt_id":"aa5001e0"}')
    assert library == signature
