"""template.yaml wiring of event-driven jobs: the queue and its dead-letter queue, the
triggers, the idempotency table, webhook settings, and their least-privilege policies."""

from __future__ import annotations

from tests.support.sam import TEMPLATE, translated

# `template` (template.yaml as written) comes from tests/unit/conftest.py.


def props(template: dict, name: str) -> dict:
    return template["Resources"][name]["Properties"]


def test_jobs_queue_redrives_to_an_encrypted_dead_letter_queue(template):
    queue, dlq = props(template, "JobsQueue"), props(template, "JobsDeadLetterQueue")
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {"Fn::GetAtt": ["JobsDeadLetterQueue", "Arn"]}
    assert queue["SqsManagedSseEnabled"] and dlq["SqsManagedSseEnabled"]
    # A batch still running must not become visible to a second poller.
    assert queue["VisibilityTimeout"] >= 6 * props(template, "RunJobFunction")["Timeout"]


def test_queue_batches_report_partial_failures(template):
    mapping = props(template, "RunJobQueueMapping")
    assert mapping["FunctionName"] == {"Ref": "RunJobFunction"}
    assert mapping["EventSourceArn"] == {"Fn::GetAtt": ["JobsQueue", "Arn"]}
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]


def test_eventbridge_and_s3_triggers(template):
    events = props(template, "RunJobFunction")["Events"]
    run = events["RunRequest"]["Properties"]
    assert run["EventBusName"] == {"Ref": "EventBusName"}
    assert run["Pattern"] == {"detail-type": ["Run ComfyUI Workflow"]}
    job_file = events["JobFile"]["Properties"]["Pattern"]
    assert (job_file["source"], job_file["detail-type"]) == (["aws.s3"], ["Object Created"])
    assert job_file["detail"]["bucket"]["name"] == [{"Ref": "WorkflowBucket"}]
    assert job_file["detail"]["object"]["key"] == [{"wildcard": {"Fn::Sub": "${JobPrefix}*.json"}}]
    bucket = props(template, "WorkflowBucket")
    assert bucket["NotificationConfiguration"]["EventBridgeConfiguration"]["EventBridgeEnabled"] is True


def test_async_jobs_end_in_the_dead_letter_queue(template):
    config = props(template, "RunJobFunction")["EventInvokeConfig"]
    destination = config["DestinationConfig"]["OnFailure"]["Destination"]
    assert destination == {"Fn::GetAtt": ["JobsDeadLetterQueue", "Arn"]}


def test_idempotency_table_expires_records_and_is_encrypted(template):
    table = props(template, "IdempotencyTable")
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert table["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]  # Powertools' default
    assert table["TimeToLiveSpecification"] == {"AttributeName": "expiration", "Enabled": True}
    assert table["SSESpecification"] == {"SSEEnabled": True}
    variables = template["Globals"]["Function"]["Environment"]["Variables"]
    assert variables["IDEMPOTENCY_TABLE"] == {"Ref": "IdempotencyTable"}
    assert variables["JOBS_DLQ_URL"] == {"Ref": "JobsDeadLetterQueue"}


def test_webhooks_refuse_private_addresses_and_plain_http_by_default(template):
    assert template["Parameters"]["AllowPrivateWebhooks"]["Default"] == "false"
    variables = template["Globals"]["Function"]["Environment"]["Variables"]
    assert variables["WEBHOOK_ALLOW_PRIVATE"] == {"Ref": "AllowPrivateWebhooks"}
    assert "WEBHOOK_ALLOW_HTTP" not in TEMPLATE.read_text()  # tests only


def test_job_function_role_is_scoped_to_its_own_resources():
    resources = translated(ComfyUIBaseUrl="http://comfy.internal:8188")["Resources"]
    role = resources["RunJobFunctionRole"]["Properties"]
    # No AWSLambdaSQSQueueExecutionRole (SQS reads on every queue): SQSPollerPolicy instead.
    assert not any("SQS" in str(arn) for arn in role["ManagedPolicyArns"])
    statements = [s for p in role["Policies"] for s in p["PolicyDocument"]["Statement"]]
    actions = {a for s in statements for a in ([s["Action"]] if isinstance(s["Action"], str)
                                               else s["Action"])}
    assert {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:SendMessage", "dynamodb:PutItem",
            "events:PutEvents", "s3:GetObject", "s3:PutObject"} <= actions
    put = next(s for s in statements if "s3:PutObject" in _list(s["Action"]))
    assert put["Resource"] == {"Fn::Sub": "arn:${AWS::Partition}:s3:::${WorkflowBucket}/${JobPrefix}*"}


def test_archiver_reads_the_webhook_secret_only_when_one_is_configured(template):
    resources = translated(ComfyUIBaseUrl="http://comfy.internal:8188")["Resources"]
    conditional = {"Fn::If": ["HasWebhookSecret", {"Ref": "WebhookSecretReadPolicy"},
                              {"Ref": "AWS::NoValue"}]}
    assert conditional in resources["ArchiverFunctionRole"]["Properties"]["ManagedPolicyArns"]
    policy = template["Resources"]["WebhookSecretReadPolicy"]
    assert policy["Condition"] == "HasWebhookSecret"
    (statement,) = policy["Properties"]["PolicyDocument"]["Statement"]
    assert statement["Action"] == "ssm:GetParameter"
    assert statement["Resource"]["Fn::Sub"].endswith(":parameter/${WebhookSecretParameter}")


def _list(value):
    return value if isinstance(value, list) else [value]
