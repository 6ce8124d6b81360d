"""AWS pieces of event-driven jobs for tests, in moto: the idempotency table, queues, and
an EventBridge rule that copies events to a queue so a test reads what was published."""

from __future__ import annotations

import json
from typing import Any

import boto3

REGION = "us-east-1"
IDEMPOTENCY_TABLE = "idempotency"
SECRET_NAME = "/comfy/webhook-secret"
SECRET = "whsec-test-0123456789abcdef"


def create_prompt_state_table(name: str) -> None:
    """The prompt-state table as the template declares it: key `prompt_id`, TTL on
    `expires_at` (progress, announcement claims, the watcher's lease, cancellations)."""
    dynamodb = boto3.client("dynamodb", region_name=REGION)
    dynamodb.create_table(
        TableName=name,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "prompt_id", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "prompt_id", "KeyType": "HASH"}],
    )
    dynamodb.update_time_to_live(
        TableName=name, TimeToLiveSpecification={"AttributeName": "expires_at", "Enabled": True}
    )


def create_idempotency_table(name: str = IDEMPOTENCY_TABLE) -> None:
    """The table as the template declares it: key `id`, TTL on `expiration`."""
    dynamodb = boto3.client("dynamodb", region_name=REGION)
    dynamodb.create_table(
        TableName=name,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
    )
    dynamodb.update_time_to_live(
        TableName=name, TimeToLiveSpecification={"AttributeName": "expiration", "Enabled": True}
    )


def create_queue(name: str) -> str:
    return boto3.client("sqs", region_name=REGION).create_queue(QueueName=name)["QueueUrl"]


def capture_events(pattern: dict[str, Any], name: str = "captured") -> str:
    """A rule on the default bus sending matching events to a new queue; its URL."""
    sqs, bus = boto3.client("sqs", region_name=REGION), boto3.client("events", region_name=REGION)
    url = create_queue(name)
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    bus.put_rule(Name=name, EventPattern=json.dumps(pattern))
    bus.put_targets(Rule=name, Targets=[{"Id": "queue", "Arn": arn}])
    return url


def drain(url: str) -> list[dict[str, Any]]:
    """Every message waiting in the queue (removed), bodies decoded, attributes kept."""
    sqs = boto3.client("sqs", region_name=REGION)
    found: list[dict[str, Any]] = []
    while True:
        answer = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"])
        messages = answer.get("Messages") or []
        if not messages:
            return found
        for message in messages:
            found.append({"body": message["Body"], "attributes": message.get("MessageAttributes") or {}})
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])


def events_in(url: str) -> list[dict[str, Any]]:
    """The EventBridge events a capture queue received."""
    return [json.loads(message["body"]) for message in drain(url)]


def put_secret(name: str = SECRET_NAME, value: str = SECRET) -> None:
    boto3.client("ssm", region_name=REGION).put_parameter(Name=name, Value=value, Type="SecureString")
