"""Each function's execution role as deployed, and a stack in moto to run it in.

`template.yaml` goes through SAM's own translator (samtranslator, as `sam deploy` does), so
a role holds exactly what SAM makes of the template: inline statements, expanded policy
templates (SQSPollerPolicy, EventBridgePutEventsPolicy...) and the managed policies SAM
attaches (AWSLambdaBasicExecutionRole...). Intrinsics (!Ref, !GetAtt, !Sub, !If) are then
resolved against the resources `IamStack` really created in moto, so every ARN in a policy
is the ARN of something a function calls.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import uuid
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

import boto3
import pytest

from devtools.template import ACCOUNT_ID, REGION, Template, TemplateError
from tests.support.iam_moto import Decision, IamMotoServer
from tests.support.sam import TEMPLATE, functions, load_template, translated

# The fleet's registry (an SSM parameter) and the auth secret of its second backend, which
# lives under the registry's name as the template's BackendsRegistryReadPolicy requires.
REGISTRY_PARAMETER = "comfy/iam-backends"
SECOND_BACKEND_TOKEN = f"{REGISTRY_PARAMETER}/gpu-b/token"

# Parameter values that flip each Condition used by an !If away from its default.
SWITCHES: dict[str, dict[str, str]] = {
    "HasComfyUIAuth": {"ComfyUIAuthParameter": "comfy/iam-token"},
    "HasBackendsRegistry": {"ComfyUIBackendsParameter": REGISTRY_PARAMETER},
    "HasWebhookSecret": {"WebhookSecretParameter": "comfy/iam-webhook-secret"},
    "IsTracingEnabled": {"EnableTracing": "true"},
    "HasVpcConfig": {"VpcSubnetIds": "subnet-0123456789abcdef0",
                     "VpcSecurityGroupIds": "sg-0123456789abcdef0"},
    "IsApiKeyRequired": {"ApiKeyRequired": "false"},
}
# Parameter sets whose roles differ, each run through every code path by tests/iam. The
# other switches change no role (tests/iam/test_translation.py); ComfyUIBaseUrl is added.
SCENARIOS: dict[str, dict[str, str]] = {
    "default": {},
    "HasComfyUIAuth": SWITCHES["HasComfyUIAuth"],
    # The test's receiver is on 127.0.0.1, which AllowPrivateWebhooks (a parameter) permits.
    "HasWebhookSecret": {**SWITCHES["HasWebhookSecret"], "AllowPrivateWebhooks": "true"},
    # A fleet of two ComfyUIs listed in the registry (registry_document), both taking prompts.
    "HasBackendsRegistry": SWITCHES["HasBackendsRegistry"],
}
# What the SSM SecureStrings hold (test values, not secrets).
SECRET_VALUES = {"comfy/iam-token": "Bearer iam-tier-token",
                 "comfy/iam-webhook-secret": "iam-tier-webhook-secret",
                 SECOND_BACKEND_TOKEN: "Bearer iam-tier-gpu-b-token"}

PARTITION = "aws"


def if_conditions(node: Any) -> set[str]:
    """Names of the Conditions that some !If in `node` (a template as written) decides on."""
    found: set[str] = set()
    if isinstance(node, dict):
        if "Fn::If" in node and isinstance(node["Fn::If"], list):
            found.add(node["Fn::If"][0])
        for value in node.values():
            found |= if_conditions(value)
    elif isinstance(node, list):
        for item in node:
            found |= if_conditions(item)
    return found


def registry_document(backends: Mapping[str, str]) -> dict[str, Any]:
    """The fleet registry's JSON for these backends (name -> URL, in order): every backend
    after the first reads its auth secret under the registry's name, as an operator's
    per-backend token does (fleet.backends)."""
    return {"backends": [
        {"name": name, "url": url, **({"auth_parameter": SECOND_BACKEND_TOKEN} if index else {})}
        for index, (name, url) in enumerate(backends.items())]}


def code_folders() -> dict[str, str]:
    """Function logical id -> its folder under functions/ (the template's CodeUri)."""
    return {name: Path(fn["Properties"]["CodeUri"]).name for name, fn in functions(load_template()).items()}


# -- resolving the translated template ----------------------------------------------------
@dataclass
class StackResolver(Template):
    """devtools' intrinsic resolver over the *translated* template, with !Ref and !GetAtt
    answered from what was created in moto (never a guessed name)."""

    physical: dict[str, dict[str, str]] = field(default_factory=dict)

    def ref(self, name: str) -> Any:
        if name in self.resources:
            return self._attribute(name, "Ref")
        return super().ref(name)

    def get_att(self, logical_id: str, attribute: str) -> str:
        return self._attribute(logical_id, attribute)

    def _attribute(self, logical_id: str, attribute: str) -> str:
        try:
            return self.physical[logical_id][attribute]
        except KeyError:
            raise TemplateError(f"{logical_id}.{attribute}: not created in moto") from None

    def holds(self, resource: Mapping[str, Any]) -> bool:
        """The resource's own Condition, if any, is true."""
        return resource.get("Condition") is None or self.condition(resource["Condition"])


@lru_cache(maxsize=1)
def _as_written() -> Template:
    # ComfyUIBaseUrl has no default; every caller passes its own value.
    return Template.load(TEMPLATE, {"ComfyUIBaseUrl": "http://comfyui.invalid:8188"})


@lru_cache(maxsize=None)
def _translation(parameters: tuple[tuple[str, str], ...]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Parameter values typed as CloudFormation passes them, and SAM's output. Shared by
    every resolver of the same values: resolving never changes the document."""
    values = dict(parameters)
    return _as_written().with_parameters(values).parameters, translated(**values)


def resolver_for(parameters: Mapping[str, str], physical: dict[str, dict[str, str]]) -> StackResolver:
    """The translated template for these parameter values (defaults for the rest)."""
    values, document = _translation(tuple(sorted(parameters.items())))
    return StackResolver(path=TEMPLATE, parameters=values, document=document, physical=physical)


def unresolved(node: Any) -> list[str]:
    """Intrinsics left anywhere in `node` (empty when fully resolved)."""
    if isinstance(node, dict):
        left = [key for key in node if key == "Ref" or key.startswith("Fn::")]
        return left + [item for value in node.values() for item in unresolved(value)]
    if isinstance(node, list):
        return [item for value in node for item in unresolved(value)]
    return []


@dataclass(frozen=True)
class RoleSpec:
    """A function's execution role after translation and resolution."""

    function_id: str
    role_id: str
    managed_policy_arns: tuple[str, ...]
    inline: dict[str, dict[str, Any]]  # policy name -> document

    def statements(self) -> list[dict[str, Any]]:
        found = []
        for document in self.inline.values():
            statements = document["Statement"]
            found += statements if isinstance(statements, list) else [statements]
        return found


def function_roles(resolver: StackResolver) -> dict[str, RoleSpec]:
    """Every function's role, by function logical id."""
    roles = {}
    for function_id, resource in resolver.resources.items():
        if resource["Type"] != "AWS::Lambda::Function" or not resolver.holds(resource):
            continue
        role_id = resource["Properties"]["Role"]["Fn::GetAtt"][0]
        properties = resolver.resources[role_id]["Properties"]
        arns = resolver.resolve(properties.get("ManagedPolicyArns") or [])
        policies = resolver.resolve(properties.get("Policies") or [])
        inline = {policy["PolicyName"]: policy["PolicyDocument"] for policy in policies}
        left = unresolved([arns, inline])
        assert not left, f"{role_id}: unresolved {left}"
        roles[function_id] = RoleSpec(function_id, role_id, tuple(arns), inline)
    return roles


def function_environment(resolver: StackResolver, function_id: str) -> dict[str, str]:
    """The variables Lambda gives the function (Globals merged by SAM), resolved."""
    properties = resolver.resources[function_id]["Properties"]
    variables = resolver.resolve((properties.get("Environment") or {}).get("Variables") or {})
    assert not unresolved(variables), function_id
    return {name: ("true" if value is True else "false" if value is False else str(value))
            for name, value in variables.items()}


def managed_policy_documents(resolver: StackResolver) -> dict[str, dict[str, Any]]:
    """The template's own AWS::IAM::ManagedPolicy documents whose Condition holds."""
    return {
        logical_id: resolver.resolve(resource["Properties"]["PolicyDocument"])
        for logical_id, resource in resolver.resources.items()
        if resource["Type"] == "AWS::IAM::ManagedPolicy" and resolver.holds(resource)
    }


# -- the stack in moto ---------------------------------------------------------------------
@dataclass
class RoleRun:
    """One run of a function's code under its role: what moto decided for that session."""

    function_id: str
    principal: str
    decisions: list[Decision] = field(default_factory=list)

    def denied(self) -> list[Decision]:
        return [d for d in self.decisions if not d.allowed]

    def allowed_actions(self) -> set[tuple[str, str]]:
        return {(d.action, d.resource) for d in self.decisions if d.allowed}


class IamStack:
    """The template's storage, queues and secrets in an IAM-enforcing moto, and one role per
    function for one set of parameter values (`name` keeps the roles of several apart)."""

    def __init__(self, server: IamMotoServer, name: str, parameters: Mapping[str, str],
                 backends: Mapping[str, str] | None = None) -> None:
        self.server = server
        self.name = name
        self.parameters = dict(parameters)
        # The fleet the registry lists (name -> URL), when ComfyUIBackendsParameter is set.
        self.backends = dict(backends or {})
        self.physical: dict[str, dict[str, str]] = {}
        self.resolver = resolver_for(self.parameters, self.physical)
        self.roles: dict[str, RoleSpec] = {}
        self.role_names: dict[str, str] = {}  # function id -> role name in moto
        self._runner: dict[str, str] = {}

    # -- building ------------------------------------------------------------------------
    def build(self, workflows_dir: Path) -> "IamStack":
        self._create_storage()
        self._upload_workflows(workflows_dir)
        self._create_secrets()
        self._create_managed_policies()
        self.roles = function_roles(self.resolver)
        self._create_runner()
        for function_id, spec in self.roles.items():
            self._create_role(spec)
        self._create_archiver_target()
        return self

    def _admin(self, service: str) -> Any:
        return self.server.admin_client(service)

    def _create_storage(self) -> None:
        """Buckets (the workflow bucket versioned, as declared), the table, the queues.
        Shared by every IamStack of one server: created once, looked up after."""
        s3, sqs, dynamodb = self._admin("s3"), self._admin("sqs"), self._admin("dynamodb")
        prefix = self.resolver.ref("AWS::StackName")
        for logical_id, resource in self.resolver.resources.items():
            kind = resource["Type"]
            if kind == "AWS::S3::Bucket":
                name = f"{prefix}-{logical_id}".lower()
                if name not in {b["Name"] for b in s3.list_buckets().get("Buckets", [])}:
                    s3.create_bucket(Bucket=name)
                status = (resource["Properties"].get("VersioningConfiguration") or {}).get("Status")
                if status:
                    s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": status})
                self.physical[logical_id] = {"Ref": name, "Arn": f"arn:{PARTITION}:s3:::{name}"}
            elif kind == "AWS::SQS::Queue":
                url = sqs.create_queue(QueueName=f"{prefix}-{logical_id}")["QueueUrl"]
                attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]
                arn = attributes["QueueArn"]
                self.physical[logical_id] = {"Ref": url, "Arn": arn, "QueueName": arn.rsplit(":", 1)[1]}
            elif kind == "AWS::DynamoDB::Table":
                name = f"{prefix}-{logical_id}"
                properties = resource["Properties"]
                try:
                    table = dynamodb.create_table(
                        TableName=name, BillingMode=properties["BillingMode"],
                        KeySchema=properties["KeySchema"],
                        AttributeDefinitions=properties["AttributeDefinitions"],
                    )["TableDescription"]
                except dynamodb.exceptions.ResourceInUseException:
                    table = dynamodb.describe_table(TableName=name)["Table"]
                self.physical[logical_id] = {"Ref": name, "Arn": table["TableArn"]}
        # Functions are referenced by name in statements; only their names are needed.
        for logical_id, resource in self.resolver.resources.items():
            if resource["Type"] == "AWS::Lambda::Function":
                name = resource["Properties"].get("FunctionName")
                name = self.resolver.resolve(name) if name else f"{prefix}-{logical_id}"
                arn = f"arn:{PARTITION}:lambda:{REGION}:{ACCOUNT_ID}:function:{name}"
                self.physical[logical_id] = {"Ref": name, "Arn": arn}

    def _upload_workflows(self, workflows_dir: Path) -> None:
        env = self.environment("RunWorkflowFunction")
        s3 = self._admin("s3")
        for path in sorted(workflows_dir.glob("*.json")):
            s3.put_object(Bucket=env["WORKFLOW_BUCKET"], Key=f"{env['WORKFLOW_PREFIX']}{path.name}",
                          Body=path.read_bytes(), ContentType="application/json")

    def _create_secrets(self) -> None:
        ssm = self._admin("ssm")
        names = [self.parameters.get(parameter) for parameter in ("ComfyUIAuthParameter", "WebhookSecretParameter")]
        registry = self.parameters.get("ComfyUIBackendsParameter")
        if registry:
            assert len(self.backends) >= 2, "a registry scenario lists a fleet (backends=...)"
            document = registry_document(self.backends)
            ssm.put_parameter(Name=f"/{registry}", Value=json.dumps(document), Type="String", Overwrite=True)
            names += [entry.get("auth_parameter") for entry in document["backends"]]
        for name in filter(None, names):
            ssm.put_parameter(Name=f"/{name}", Value=SECRET_VALUES[name], Type="SecureString", Overwrite=True)

    def comfyui_urls(self) -> list[str]:
        """Every ComfyUI this stack's functions reach: the registry's backends, else
        ComfyUIBaseUrl's."""
        return list(self.backends.values()) or self.parameters["ComfyUIBaseUrl"].split(",")

    def _create_managed_policies(self) -> None:
        iam = self._admin("iam")
        for logical_id, document in managed_policy_documents(self.resolver).items():
            arn = iam.create_policy(PolicyName=f"{self.name}-{logical_id}",
                                    PolicyDocument=json.dumps(document))["Policy"]["Arn"]
            self.physical[logical_id] = {"Ref": arn}

    def _create_runner(self) -> None:
        """A user that may assume the function roles, and nothing else."""
        iam, user = self._admin("iam"), f"{self.name}-runner"
        iam.create_user(UserName=user)
        policy = {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "sts:AssumeRole",
             "Resource": f"arn:{PARTITION}:iam::{ACCOUNT_ID}:role/*"}]}
        iam.put_user_policy(UserName=user, PolicyName="assume-function-roles",
                            PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName=user)["AccessKey"]
        self._runner = {"aws_access_key_id": key["AccessKeyId"],
                        "aws_secret_access_key": key["SecretAccessKey"]}

    def _create_role(self, spec: RoleSpec) -> None:
        """The role named after its content: a stack whose parameters leave a role as it is
        shares it with the stacks before it instead of creating it again."""
        iam = self._admin("iam")
        digest = hashlib.sha256(json.dumps([spec.managed_policy_arns, spec.inline], sort_keys=True).encode())
        name = f"{spec.role_id[:50]}-{digest.hexdigest()[:12]}"
        self.role_names[spec.function_id] = name
        # Any principal whose own policy allows sts:AssumeRole (only the runners' do): Lambda's
        # service principal cannot assume anything in moto.
        trust = {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}]}
        try:
            iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))
        except iam.exceptions.EntityAlreadyExistsException:
            return
        for policy_name, document in spec.inline.items():
            # AWS reads a document without Version as 2008-10-17; moto refuses it. The
            # versions differ only in policy variables, which no statement here uses.
            document = {"Version": "2012-10-17", **document}
            iam.put_role_policy(RoleName=name, PolicyName=policy_name, PolicyDocument=json.dumps(document))
        for arn in spec.managed_policy_arns:
            iam.attach_role_policy(RoleName=name, PolicyArn=arn)  # moto knows AWS's managed policies

    def _create_archiver_target(self) -> None:
        """The archiver as a Lambda function in moto, so an invoke of it can succeed (moto
        answers without running code); the real archiver runs in the tests themselves."""
        client = self._admin("lambda")
        archive = io.BytesIO()
        with zipfile.ZipFile(archive, "w") as bundle:
            bundle.writestr("app.py", "def lambda_handler(event, context):\n    return {}\n")
        try:
            client.create_function(
                FunctionName=self.physical["ArchiverFunction"]["Ref"], Runtime="python3.13",
                Handler="app.lambda_handler", Code={"ZipFile": archive.getvalue()},
                Role=f"arn:{PARTITION}:iam::{ACCOUNT_ID}:role/{self.role_names['ArchiverFunction']}",
            )
        except client.exceptions.ResourceConflictException:
            pass  # an earlier stack of this server made it

    # -- running -------------------------------------------------------------------------
    def environment(self, function_id: str) -> dict[str, str]:
        return function_environment(self.resolver, function_id)

    def credentials(self, function_id: str, session_name: str) -> dict[str, str]:
        sts = boto3.session.Session().client(
            "sts", endpoint_url=self.server.endpoint, region_name=REGION,
            aws_access_key_id=self._runner["aws_access_key_id"],
            aws_secret_access_key=self._runner["aws_secret_access_key"],
        )
        role_arn = f"arn:{PARTITION}:iam::{ACCOUNT_ID}:role/{self.role_names[function_id]}"
        answer = sts.assume_role(RoleArn=role_arn, RoleSessionName=session_name)["Credentials"]
        return {"AWS_ACCESS_KEY_ID": answer["AccessKeyId"],
                "AWS_SECRET_ACCESS_KEY": answer["SecretAccessKey"],
                "AWS_SESSION_TOKEN": answer["SessionToken"]}

    @contextmanager
    def running_as(self, function_id: str, extra_env: Mapping[str, str] | None = None) -> Iterator[RoleRun]:
        """Inside: the process looks like that function's container (its template
        environment, its role's temporary credentials, moto as every AWS endpoint) with
        nothing cached from another one. The decisions are filled in on exit."""
        from comfy_core import reset_container_state

        session_name = f"{function_id[:40]}-{uuid.uuid4().hex[:12]}"
        role = self.role_names[function_id]
        principal = f"arn:{PARTITION}:sts::{ACCOUNT_ID}:assumed-role/{role}/{session_name}"
        run = RoleRun(function_id, principal)
        since = self.server.log_size()
        env = {
            **self.environment(function_id),
            **self.credentials(function_id, session_name),
            "AWS_ENDPOINT_URL": self.server.endpoint,
            "AWS_DEFAULT_REGION": REGION,
            **(extra_env or {}),
        }
        with pytest.MonkeyPatch.context() as patch:
            for name in [n for n in os.environ if n.startswith("AWS_ENDPOINT_URL_")]:
                patch.delenv(name)  # one endpoint for every service: the enforcing moto
            for name, value in env.items():
                patch.setenv(name, value)
            _new_container(reset_container_state)
            try:
                yield run
            finally:
                _new_container(reset_container_state)
                run.decisions = [d for d in self.server.decisions(since) if d.principal == principal]


def _new_container(reset_container_state: Any) -> None:
    # boto3's default session keeps the credentials it first found: a new "container"
    # (another role) must not sign with the previous role's keys.
    boto3.DEFAULT_SESSION = None
    reset_container_state()
