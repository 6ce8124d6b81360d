"""The roles SAM makes of template.yaml, before any code runs under them: every !If switch
is covered, the switches not run through the code change no role, the AWS managed policies
SAM attaches exist in moto, and a role that reads under a prefix may also list it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from devtools.template import ACCOUNT_ID
from tests.support.iam import SCENARIOS, SWITCHES, IamStack, function_roles, if_conditions, resolver_for
from tests.support.sam import load_template


def test_every_if_switch_is_flipped(stacks: Callable[..., IamStack]) -> None:
    """Each Condition an !If decides on has parameter values that flip it; a new switch
    without an entry in SWITCHES fails here."""
    assert if_conditions(load_template()) == set(SWITCHES)
    stack = stacks("default")
    default = stack.resolver
    for condition, values in SWITCHES.items():
        flipped = resolver_for({**stack.parameters, **values}, {})
        assert flipped.condition(condition) != default.condition(condition), condition


def test_switches_that_change_no_role(stacks: Callable[..., IamStack]) -> None:
    """Tracing, VPC and the API key leave every role as it is (SAM attaches the X-Ray and
    VPC policies whatever the switch), so running the code again with them adds nothing;
    each switch in SCENARIOS changes some role."""
    default = stacks("default")
    roles = function_roles(default.resolver)
    # The template's own managed policies exist only where their Condition holds.
    physical = {**default.physical,
                "ComfyUIAuthReadPolicy": {"Ref": f"arn:aws:iam::{ACCOUNT_ID}:policy/token"},
                "BackendsRegistryReadPolicy": {"Ref": f"arn:aws:iam::{ACCOUNT_ID}:policy/registry"},
                "WebhookSecretReadPolicy": {"Ref": f"arn:aws:iam::{ACCOUNT_ID}:policy/webhook"}}
    for condition, values in SWITCHES.items():
        flipped = function_roles(resolver_for({**default.parameters, **values}, physical))
        if condition in SCENARIOS:
            assert flipped != roles, f"{condition} changes no role: no need to run it"
        else:
            assert flipped == roles, f"{condition} changes a role: add it to SCENARIOS"


def test_roles_hold_the_managed_policies_sam_attaches(stack: IamStack) -> None:
    """moto knows AWS's managed policies: each is attached as it is on AWS, not left out."""
    iam = stack.server.admin_client("iam")
    for function_id, name in stack.role_names.items():
        answer = iam.list_attached_role_policies(RoleName=name)
        attached = {policy["PolicyArn"] for policy in answer["AttachedPolicies"]}
        assert "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole" in attached, function_id
        assert attached == set(stack.roles[function_id].managed_policy_arns), function_id


def test_a_role_that_reads_under_a_prefix_may_list_that_prefix(stacks: Callable[..., IamStack]) -> None:
    """On AWS a read of a missing key is a 403 without s3:ListBucket, and the code takes 403
    for trouble (retries, dead-letter queue) where 404 means "gone" or "not archived yet".
    moto answers 404 either way, so this rule is checked on the roles themselves."""
    for function_id, spec in stacks("default").roles.items():
        statements = [s for s in spec.statements() if s["Effect"] == "Allow"]
        listed = {(s["Resource"], prefix) for s in statements if s["Action"] == "s3:ListBucket"
                  for prefix in _as_list(s.get("Condition", {}).get("StringLike", {}).get("s3:prefix", "*"))}
        for statement in statements:
            if not {"s3:GetObject", "s3:GetObjectVersion"} & set(_as_list(statement["Action"])):
                continue
            for resource in _as_list(statement["Resource"]):
                bucket, _, prefix = resource.partition("/")
                assert {(bucket, prefix), (bucket, "*")} & listed, \
                    f"{function_id} reads {resource} but may not list {prefix}"


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]
