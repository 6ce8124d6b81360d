"""template.yaml wires every route to exactly one real handler, and its security defaults hold."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

from tests.support.sam import api_routes, functions, translated

ROOT = Path(__file__).resolve().parents[2]

ROUTES = {
    ("GET", "/api/test_comfy"),
    ("GET", "/api/workflows"),
    ("POST", "/api/workflow/{workflow_name}"),
    ("GET", "/api/task_status/{prompt_id}"),
    ("GET", "/api/history"),
    ("GET", "/api/history/{prompt_id}"),
    ("GET", "/api/image/{prompt_id}"),
    ("GET", "/api/status"),
    ("GET", "/api/queue"),
    ("DELETE", "/api/task/{prompt_id}"),
    ("GET", "/api/docs"),
    ("GET", "/api/docs/{asset}"),
}
# Swagger UI's page and files: a browser opening a page cannot send x-api-key. They hold no
# data; the spec they show (/api/openapi.json) and every other route keep the key.
OPEN_ROUTES = {("GET", "/api/docs"), ("GET", "/api/docs/{asset}")}
KEY_REQUIRED = {"Fn::If": ["IsApiKeyRequired", [{"api_key": []}], []]}


# `template` (template.yaml as written) comes from tests/unit/conftest.py.


def test_every_function_resolves_to_a_real_handler(template):
    for name, fn in functions(template).items():
        props = fn["Properties"]
        code_uri = ROOT / props["CodeUri"]
        assert (code_uri / "app.py").is_file(), name
        assert props.get("Handler", template["Globals"]["Function"].get("Handler")) == "app.lambda_handler"
        module = importlib.import_module(".".join(code_uri.relative_to(ROOT).parts) + ".app")
        assert callable(module.lambda_handler), name


def test_each_route_served_by_exactly_one_function(template):
    routes = api_routes(template)
    pairs = [(method, path) for method, path, _ in routes]
    assert len(pairs) == len(set(pairs)), "a route is served twice"
    assert set(pairs) >= ROUTES


def test_api_definition_lists_exactly_the_event_routes(template):
    """The key requirement sits on the definition's paths; a route missing there would be open.
    Only the docs pages are open on purpose."""
    body = template["Resources"]["ComfyApi"]["Properties"]["DefinitionBody"]
    defined = {(method.upper(), path) for path, ops in body["paths"].items() for method in ops}
    assert defined == {(method, path) for method, path, _ in api_routes(template)}
    for path, ops in body["paths"].items():
        for method, op in ops.items():
            if (method.upper(), path) in OPEN_ROUTES:
                assert op["security"] == [], (method, path)
            else:
                assert op["security"] == KEY_REQUIRED, (method, path)


def test_api_key_required_by_default(template):
    assert template["Parameters"]["ApiKeyRequired"]["Default"] == "true"


def test_every_function_has_a_sample_event(template):
    for _, path, name in api_routes(template):
        folder = Path(functions(template)[name]["Properties"]["CodeUri"]).name
        assert (ROOT / "events" / f"{folder}.json").is_file(), folder


def test_buckets_are_private_encrypted_and_tls_only(template):
    resources = template["Resources"]
    buckets = [k for k, v in resources.items() if v["Type"] == "AWS::S3::Bucket"]
    assert buckets
    for name in buckets:
        props = resources[name]["Properties"]
        assert all(props["PublicAccessBlockConfiguration"].values()), name
        assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"], name
        policies = [v for v in resources.values() if v["Type"] == "AWS::S3::BucketPolicy"
                    and v["Properties"]["Bucket"] == {"Ref": name}]
        statements = [s for p in policies for s in p["Properties"]["PolicyDocument"]["Statement"]]
        assert any(s["Effect"] == "Deny" and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
                   for s in statements), name


def _as_list(value):
    return value if isinstance(value, list) else [value]


def _statements(resources: dict):
    for name, resource in resources.items():
        if resource["Type"] == "AWS::IAM::Role":
            documents = [p["PolicyDocument"] for p in resource["Properties"].get("Policies", [])]
        elif resource["Type"] == "AWS::IAM::ManagedPolicy":
            documents = [resource["Properties"]["PolicyDocument"]]
        else:
            continue
        for document in documents:
            for statement in _as_list(document["Statement"]):
                yield name, statement


# The one wildcard allowed: objects under a key prefix (arn:...:s3:::bucket/prefix*), the
# prefix a parameter or a fixed folder (inputs/).
S3_PREFIX_ARN = re.compile(
    r"^arn:\$\{AWS::Partition\}:s3:::\$\{[A-Za-z]+\}/(\$\{[A-Za-z]+\}|[a-z]+/)\*$")


REGISTRY_SUBTREE_ARN = (
    "arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}:parameter/${ComfyUIBackendsParameter}/*")


def test_no_iam_statement_allows_a_wildcard_action_or_resource():
    """After the SAM transform: every Allow names its actions and resources exactly; the only
    `*` is the end of an S3 key prefix, or the fleet registry's own subtree of SSM names
    (per-backend auth secrets, which operators add without a redeploy)."""
    resources = translated(ComfyUIBaseUrl="http://comfy.internal:8188", ComfyUIAuthParameter="comfy/token",
                           WebhookSecretParameter="comfy/webhook",
                           ComfyUIBackendsParameter="comfy/backends")["Resources"]
    checked = 0
    for name, statement in _statements(resources):
        if statement["Effect"] != "Allow":
            continue
        checked += 1
        for action in _as_list(statement["Action"]):
            assert "*" not in action, (name, action)
        for target in _as_list(statement["Resource"]):
            text = target.get("Fn::Sub", target) if isinstance(target, dict) else target
            if isinstance(text, str) and "*" in text:
                assert S3_PREFIX_ARN.match(text) or text == REGISTRY_SUBTREE_ARN, (name, text)
    assert checked > 20


def test_api_has_one_stage_in_the_usage_plan():
    resources = translated(ComfyUIBaseUrl="http://comfy.internal:8188")["Resources"]
    stages = [r for r in resources.values() if r["Type"] == "AWS::ApiGateway::Stage"]
    deployments = [r for r in resources.values() if r["Type"] == "AWS::ApiGateway::Deployment"]
    assert len(stages) == 1
    assert all("StageName" not in d["Properties"] for d in deployments)  # no implicit "Stage"


def test_manifest_readers_may_list_the_prefix_so_missing_is_404_not_403(template):
    """Without s3:ListBucket, S3 answers a missing manifest or workflow with AccessDenied."""
    for name in ("TaskStatusFunction", "ImageFunction", "HistoryEntryFunction",
                 "ListWorkflowsFunction", "RunWorkflowFunction", "RunJobFunction"):
        policies = template["Resources"][name]["Properties"]["Policies"]
        statements = [st for p in policies if isinstance(p, dict) and "Statement" in p for st in p["Statement"]]
        assert any(st["Action"] == "s3:ListBucket" and "Condition" in st for st in statements), name


def test_archiver_runs_alone_on_a_schedule_with_a_dead_letter_destination(template):
    archiver = template["Resources"]["ArchiverFunction"]["Properties"]
    assert archiver["ReservedConcurrentExecutions"] == 1
    assert archiver["Timeout"] > template["Globals"]["Function"]["Timeout"]
    assert archiver["Events"]["Schedule"]["Type"] == "ScheduleV2"
    assert archiver["EventInvokeConfig"]["DestinationConfig"]["OnFailure"]["Type"] == "SQS"


def test_image_bucket_expires_archives_and_incomplete_uploads(template):
    rules = template["Resources"]["ImageBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
    assert any(r.get("ExpirationInDays") == {"Ref": "ImageRetentionDays"} for r in rules)
    assert any("AbortIncompleteMultipartUpload" in r for r in rules)


def test_all_storage_is_encrypted_and_no_bucket_is_public():
    """After the SAM transform: every bucket, queue and table encrypts at rest; no bucket
    policy allows anyone ("*") anything."""
    resources = translated(ComfyUIBaseUrl="http://comfy.internal:8188")["Resources"]
    kinds = {"AWS::S3::Bucket": 0, "AWS::SQS::Queue": 0, "AWS::DynamoDB::Table": 0}
    for name, resource in resources.items():
        props = resource.get("Properties", {})
        kind = resource["Type"]
        if kind == "AWS::S3::Bucket":
            assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"], name
            assert all(props["PublicAccessBlockConfiguration"].values()), name
        elif kind == "AWS::SQS::Queue":
            assert props.get("SqsManagedSseEnabled") is True or "KmsMasterKeyId" in props, name
        elif kind == "AWS::DynamoDB::Table":
            assert props["SSESpecification"]["SSEEnabled"] is True, name
        elif kind == "AWS::S3::BucketPolicy":
            for statement in props["PolicyDocument"]["Statement"]:
                assert statement["Effect"] == "Deny" or statement.get("Principal") != "*", name
        if kind in kinds:
            kinds[kind] += 1
    assert all(kinds.values()), kinds  # the test saw each kind of storage


def test_two_comfyui_calls_fit_in_the_function_timeout(template):
    """task_status and cancel call ComfyUI twice: both full waits must end before the
    function (and API Gateway) does, or the client gets a bare gateway error."""
    from comfy_core.config import Settings

    settings = Settings.from_env()
    one_call = settings.connect_timeout + settings.read_timeout
    assert 2 * one_call < template["Globals"]["Function"]["Timeout"] < 29


def test_the_docs_function_has_no_permissions(template):
    """It serves files from its own package: no AWS call, so no policy (only the basic role)."""
    props = template["Resources"]["DocsFunction"]["Properties"]
    assert "Policies" not in props
    assert template["Resources"]["DocsFunction"]["Metadata"]["BuildMethod"] == "makefile"
