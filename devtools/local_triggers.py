"""The template's event sources in a local stack: what Lambda and EventBridge do between
an AWS service and a function, so a message, a job file or a `put-events` runs the real
handler as it would deployed.

- ``QueuePoller``: an SQS event source mapping (Lambda's poller). Batches of up to
  BatchSize messages in Lambda's SQS event shape; with ReportBatchItemFailures only the
  reported messages stay on the queue, a function error keeps the whole batch. A message
  left on the queue comes back after the queue's visibility timeout (or ``retry_seconds``),
  and the queue's own redrive policy moves it to the dead-letter queue after
  maxReceiveCount receives (moto applies it on receive, as SQS does).
- ``RuleDelivery``: the template's EventBridgeRule events. Each becomes a real rule on
  moto's bus with the template's pattern (moto matches it: exact values, prefix, wildcard,
  anything-but...), whose target is a delivery queue polled here; each event is an
  asynchronous invocation, retried MaximumRetryAttempts times, then sent to the
  EventInvokeConfig's SQS on-failure destination. S3's "Object Created" events come from
  moto itself once a bucket has EventBridge notifications on (dev.py applies the template's).

Handlers run through the stack's ``Invoker``, one at a time like every local invocation.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import threading
import time
import traceback
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

from devtools.template import (
    REGION, STACK_NAME, AsyncConfig, EventRule, QueueMapping, Template, lambda_arn,
    queue_arn, queue_url,
)

log = logging.getLogger("local_triggers")

# Between two empty receives: short, so a message sent in a test runs at once, and cheap
# (moto is in memory).
POLL_SECONDS = 0.2
# SQS hands out at most ten messages per receive, whatever the mapping's BatchSize.
SQS_MAX_MESSAGES = 10

Invoke = Callable[[str, Any], Any]  # (function logical id, event) -> the handler's answer
ClientFactory = Callable[[str], Any]  # service name -> a boto3 client of the stack's moto


# --------------------------------------------------------------------------
# SQS event source mapping
# --------------------------------------------------------------------------


def sqs_record(message: dict[str, Any], queue_name: str) -> dict[str, Any]:
    """One record of the event Lambda's SQS poller sends, from a ReceiveMessage message."""
    attributes = message.get("Attributes") or {}
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": {
            name: attributes[name]
            for name in ("ApproximateReceiveCount", "SentTimestamp", "SenderId",
                         "ApproximateFirstReceiveTimestamp")
            if name in attributes
        },
        "messageAttributes": {
            name: _lambda_message_attribute(value)
            for name, value in (message.get("MessageAttributes") or {}).items()
        },
        "md5OfBody": message.get("MD5OfBody") or hashlib.md5(message["Body"].encode()).hexdigest(),  # noqa: S324
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn(queue_name),
        "awsRegion": REGION,
    }


def _lambda_message_attribute(value: dict[str, Any]) -> dict[str, Any]:
    # ReceiveMessage's StringValue/BinaryValue become Lambda's camelCase fields.
    shaped: dict[str, Any] = {"stringListValues": [], "binaryListValues": [], "dataType": value["DataType"]}
    if "StringValue" in value:
        shaped["stringValue"] = value["StringValue"]
    if "BinaryValue" in value:
        shaped["binaryValue"] = base64.b64encode(value["BinaryValue"]).decode("ascii")
    return shaped


def failed_message_ids(answer: Any, message_ids: list[str], report_batch_item_failures: bool) -> list[str]:
    """The messages of a batch that stay on the queue after the function answered.

    Without ReportBatchItemFailures a successful invocation consumes the whole batch. With
    it, the reported `batchItemFailures` stay; an answer Lambda cannot read as a partial
    response (an identifier missing or not of this batch) fails the whole batch, as in AWS.
    """
    if not report_batch_item_failures or not isinstance(answer, dict):
        return []
    failures = answer.get("batchItemFailures") or []
    if not isinstance(failures, list):
        return list(message_ids)
    failed = []
    for failure in failures:
        identifier = failure.get("itemIdentifier") if isinstance(failure, dict) else None
        if identifier not in message_ids:
            return list(message_ids)
        failed.append(identifier)
    return failed


class _Poller:
    """A background loop: `poll_once()` until stopped, waiting `poll_seconds` after a poll
    that found nothing to do. A failed poll is logged and the loop goes on, as Lambda's
    pollers outlive a service's hiccups."""

    poll_seconds: float

    def __init__(self, name: str) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def poll_once(self) -> Any:
        raise NotImplementedError

    def start(self) -> Any:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                busy = self.poll_once()
            except Exception:  # noqa: BLE001 - the loop outlives moto hiccups, as Lambda's does
                log.error("%s failed:\n%s", self._thread.name, traceback.format_exc())
                busy = False
            if not busy:
                self._stop.wait(self.poll_seconds)


class QueuePoller(_Poller):
    """Lambda's SQS poller for one event source mapping, on its own thread."""

    def __init__(
        self,
        mapping: QueueMapping,
        invoke: Invoke,
        sqs: Any,
        *,
        retry_seconds: float | None = None,
        poll_seconds: float = POLL_SECONDS,
    ) -> None:
        self.mapping = mapping
        self.invoke = invoke
        self.sqs = sqs
        self.url = queue_url(mapping.queue_name)
        # None: a failed message waits for the queue's VisibilityTimeout, as in AWS.
        self.retry_seconds = retry_seconds
        self.poll_seconds = poll_seconds
        super().__init__(f"sqs-{mapping.queue_name}")

    def poll_once(self) -> int:
        """Receive one batch and run it; the number of messages it had."""
        answer = self.sqs.receive_message(
            QueueUrl=self.url,
            MaxNumberOfMessages=min(self.mapping.batch_size, SQS_MAX_MESSAGES),
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        messages = answer.get("Messages") or []
        if not messages:
            return 0
        event = {"Records": [sqs_record(message, self.mapping.queue_name) for message in messages]}
        ids = [message["MessageId"] for message in messages]
        started = time.monotonic()
        try:
            result = self.invoke(self.mapping.function_id, event)
            failed = failed_message_ids(result, ids, self.mapping.report_batch_item_failures)
        except Exception:  # noqa: BLE001 - a function error: the whole batch comes back
            log.error("sqs %s failed:\n%s", self.mapping.function_id, traceback.format_exc())
            failed = list(ids)
        log.info("sqs %s -> %s %d message(s), %d failed (%.0f ms)", self.mapping.queue_name,
                 self.mapping.function_id, len(ids), len(failed), (time.monotonic() - started) * 1000)
        for message in messages:
            if message["MessageId"] not in failed:
                self.sqs.delete_message(QueueUrl=self.url, ReceiptHandle=message["ReceiptHandle"])
            elif self.retry_seconds is not None:
                self.sqs.change_message_visibility(
                    QueueUrl=self.url, ReceiptHandle=message["ReceiptHandle"],
                    VisibilityTimeout=int(self.retry_seconds),
                )
        return len(messages)


# --------------------------------------------------------------------------
# EventBridge rules -> asynchronous invocations
# --------------------------------------------------------------------------


def rule_name(rule: EventRule, template: Template) -> str:
    """The name SAM gives the rule: function name and event name (at most 64 characters)."""
    return f"{template.function(rule.function_id).name}-{rule.event_name}"[:64]


def delivery_queue_name(rule: EventRule) -> str:
    """The local queue between the rule and the function (stands for Lambda's own)."""
    return f"{STACK_NAME}-deliver-{rule.function_id}-{rule.event_name}"[:80]


@dataclass
class _Pending:
    rule: EventRule
    event: dict[str, Any]
    attempt: int  # invocations so far
    due: float  # time.monotonic() of the next attempt
    request_id: str


class RuleDelivery(_Poller):
    """Puts the template's EventBridge rules on moto's buses and runs their events as
    asynchronous invocations (retries, then the on-failure destination)."""

    def __init__(
        self,
        template: Template,
        invoke: Invoke,
        client: ClientFactory,
        *,
        retry_seconds: float | None = None,
        poll_seconds: float = POLL_SECONDS,
    ) -> None:
        self.template = template
        self.rules = template.event_rules()
        self.invoke = invoke
        self.sqs = client("sqs")
        self.events = client("events")
        # Lambda waits about a minute, then two, between attempts; None keeps those.
        self.retry_seconds = retry_seconds
        self.poll_seconds = poll_seconds
        self._pending: list[_Pending] = []
        super().__init__("eventbridge-rules")

    def create(self) -> "RuleDelivery":
        """Each rule on its bus with the template's pattern, targeting its delivery queue."""
        for rule in self.rules:
            if rule.bus != "default":
                try:
                    self.events.create_event_bus(Name=rule.bus)
                except self.events.exceptions.ResourceAlreadyExistsException:
                    pass  # a second stack in the same process
            queue = delivery_queue_name(rule)
            self.sqs.create_queue(QueueName=queue)
            name = rule_name(rule, self.template)
            self.events.put_rule(Name=name, EventBusName=rule.bus, EventPattern=json.dumps(rule.pattern))
            self.events.put_targets(Rule=name, EventBusName=rule.bus,
                                    Targets=[{"Id": "local-invoke", "Arn": queue_arn(queue)}])
        return self

    def start(self) -> "RuleDelivery":
        if self.rules:  # no rule: no thread to poll an empty queue
            super().start()
        return self

    def poll_once(self) -> bool:
        """Take the events the rules matched since the last call, run what is due; whether
        anything ran."""
        for rule in self.rules:
            url = queue_url(delivery_queue_name(rule))
            answer = self.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=SQS_MAX_MESSAGES)
            for message in answer.get("Messages") or []:
                # Handed over to "Lambda": the invocation's fate is decided below, not by SQS.
                self.sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
                self._pending.append(_Pending(rule, json.loads(message["Body"]), 0, 0.0, str(uuid.uuid4())))
        now = time.monotonic()
        due = [item for item in self._pending if item.due <= now]
        for item in due:
            self._pending.remove(item)
            self._attempt(item)
        return bool(due)

    def _attempt(self, item: _Pending) -> None:
        config = self.template.async_config(item.rule.function_id)
        item.attempt += 1
        started = time.monotonic()
        try:
            result = self.invoke(item.rule.function_id, item.event)
        except Exception as error:  # noqa: BLE001 - retried, then the destination, as in Lambda
            log.error("event %s -> %s failed (attempt %d of %d):\n%s", item.rule.event_name,
                      item.rule.function_id, item.attempt, config.max_retries + 1, traceback.format_exc())
            if item.attempt <= config.max_retries:
                item.due = time.monotonic() + self._retry_delay(item.attempt)
                self._pending.append(item)
            else:
                self._send_to_destination(item, config, error)
            return
        log.info("event %s -> %s %.200s (%.0f ms)", item.rule.event_name, item.rule.function_id,
                 json.dumps(result, default=str), (time.monotonic() - started) * 1000)

    def _retry_delay(self, attempt: int) -> float:
        return self.retry_seconds if self.retry_seconds is not None else 60.0 * attempt

    def _send_to_destination(self, item: _Pending, config: AsyncConfig, error: Exception) -> None:
        """Lambda's on-failure record for an SQS destination."""
        if config.on_failure_queue is None:
            log.error("event %s dropped: retries exhausted and no on-failure destination", item.rule.event_name)
            return
        function = self.template.function(item.rule.function_id)
        record = {
            "version": "1.0",
            "timestamp": datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "requestContext": {
                "requestId": item.request_id,
                "functionArn": f"{lambda_arn(function.name)}:$LATEST",
                "condition": "RetriesExhausted",
                "approximateInvokeCount": item.attempt,
            },
            "requestPayload": item.event,
            "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
            "responsePayload": {"errorMessage": str(error), "errorType": type(error).__name__},
        }
        self.sqs.send_message(QueueUrl=queue_url(config.on_failure_queue), MessageBody=json.dumps(record))


# --------------------------------------------------------------------------
# All of them
# --------------------------------------------------------------------------


class LocalTriggers:
    """Every queue mapping and EventBridge rule of the template, started and stopped as one."""

    def __init__(
        self,
        template: Template,
        invoke: Invoke,
        client: ClientFactory,
        *,
        retry_seconds: float | None = None,
        poll_seconds: float = POLL_SECONDS,
    ) -> None:
        self.pollers = [
            QueuePoller(mapping, invoke, client("sqs"), retry_seconds=retry_seconds, poll_seconds=poll_seconds)
            for mapping in template.queue_mappings()
        ]
        self.rules = RuleDelivery(template, invoke, client, retry_seconds=retry_seconds,
                                  poll_seconds=poll_seconds)

    def start(self) -> "LocalTriggers":
        self.rules.create().start()
        for poller in self.pollers:
            poller.start()
        return self

    def stop(self) -> None:
        for poller in self.pollers:
            poller.stop()
        self.rules.stop()

    def describe(self) -> str:
        """For the banner: what feeds which function."""
        parts = [f"{poller.mapping.queue_name} -> {poller.mapping.function_id}" for poller in self.pollers]
        parts += [f"{rule.bus} bus {rule.event_name} -> {rule.function_id}" for rule in self.rules.rules]
        return ", ".join(parts) or "none"

