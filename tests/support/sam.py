"""template.yaml as written (cfn-lint's decoder) and after the SAM transform, as
CloudFormation would deploy it."""

from __future__ import annotations

import copy
from functools import lru_cache
from pathlib import Path
from typing import Any

from cfnlint.decode import decode

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"


def load_template() -> dict[str, Any]:
    """template.yaml as written, intrinsic functions left as they are."""
    template, errors = decode(str(TEMPLATE))
    assert not errors, errors
    return template


def functions(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The AWS::Serverless::Function resources, by logical id."""
    return {name: resource for name, resource in template["Resources"].items()
            if resource["Type"] == "AWS::Serverless::Function"}


def api_routes(template: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(METHOD, path, function logical id) for every Api event of every function."""
    found = []
    for name, function in functions(template).items():
        for evt in function["Properties"].get("Events", {}).values():
            if evt["Type"] == "Api":
                found.append((evt["Properties"]["Method"].upper(), evt["Properties"]["Path"], name))
    return found


@lru_cache(maxsize=4)
def _translated(parameters: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    # The transform reads the region from the environment: AWS_DEFAULT_REGION, which the root
    # conftest sets for the whole session (so module-scoped fixtures may call this too).
    from samtranslator.translator.transform import transform

    template = load_template()
    for resource in template["Resources"].values():
        props = resource.get("Properties", {})
        for key in ("CodeUri", "ContentUri"):  # `sam build` uploads these; any S3 URI will do
            if key in props:
                props[key] = "s3://bucket/key"

    class _NoManagedPolicies:
        def load(self) -> dict[str, str]:
            return {}

    return transform(template, dict(parameters), _NoManagedPolicies())


def translated(**parameters: str) -> dict[str, Any]:
    return copy.deepcopy(_translated(tuple(sorted(parameters.items()))))
