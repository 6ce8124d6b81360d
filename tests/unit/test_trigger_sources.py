"""How the local event sources read the template and a function's batch answer (no sockets)."""

from __future__ import annotations

from pathlib import Path

from devtools.local_triggers import failed_message_ids, sqs_record
from devtools.template import Template

ROOT = Path(__file__).resolve().parents[2]
IDS = ["a", "b", "c"]


def template() -> Template:
    return Template.load(ROOT / "template.yaml", {"ComfyUIBaseUrl": "http://comfyui.invalid:8188",
                                                   "JobMaxReceiveCount": "3"})


def test_only_the_reported_messages_stay_on_the_queue() -> None:
    assert failed_message_ids({"batchItemFailures": [{"itemIdentifier": "b"}]}, IDS, True) == ["b"]
    assert failed_message_ids({"batchItemFailures": []}, IDS, True) == []


def test_an_answer_lambda_cannot_read_as_partial_fails_the_whole_batch() -> None:
    assert failed_message_ids({"batchItemFailures": [{"itemIdentifier": "zz"}]}, IDS, True) == IDS
    assert failed_message_ids({"batchItemFailures": [{"itemIdentifier": None}]}, IDS, True) == IDS
    assert failed_message_ids({"batchItemFailures": "b"}, IDS, True) == IDS


def test_without_report_batch_item_failures_a_success_consumes_the_batch() -> None:
    assert failed_message_ids({"batchItemFailures": [{"itemIdentifier": "b"}]}, IDS, False) == []


def test_a_record_has_lambdas_sqs_shape() -> None:
    record = sqs_record({"MessageId": "m", "ReceiptHandle": "r", "Body": "{}", "Attributes": {
        "ApproximateReceiveCount": "2"}, "MessageAttributes": {"reason": {"DataType": "String",
                                                                         "StringValue": "x"}}}, "q")
    assert record["eventSource"] == "aws:sqs" and record["eventSourceARN"].endswith(":q")
    assert record["attributes"] == {"ApproximateReceiveCount": "2"}
    assert record["messageAttributes"]["reason"]["stringValue"] == "x"


def test_the_jobs_queue_mapping_rules_and_redrive_come_from_the_template() -> None:
    stack = template()
    (mapping,) = stack.queue_mappings()
    assert (mapping.function_id, mapping.batch_size, mapping.report_batch_item_failures) == (
        "RunJobFunction", 5, True)
    queues = {queue.logical_id: queue for queue in stack.queues()}
    assert '"maxReceiveCount": "3"' in queues["JobsQueue"].attributes["RedrivePolicy"]
    # A dead-letter queue is created before the queue whose redrive policy names it.
    assert [queue.logical_id for queue in stack.queues()][-1] == "JobsQueue"
    assert {(rule.event_name, rule.bus) for rule in stack.event_rules()} == {
        ("RunRequest", "default"), ("JobFile", "default")}
    assert stack.async_config("RunJobFunction").on_failure_queue == mapping.queue_name.replace(
        "JobsQueue", "JobsDeadLetterQueue")
    assert str(stack.ref("JobsDeadLetterQueue")).endswith("/123456789012/comfy-local-JobsDeadLetterQueue")
