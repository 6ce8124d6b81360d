"""The template after the SAM transform, as CloudFormation would deploy it."""

from __future__ import annotations

import copy
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from cfnlint.decode import decode

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"


@lru_cache(maxsize=4)
def _translated(parameters: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    from samtranslator.translator.transform import transform

    template, errors = decode(str(TEMPLATE))
    assert not errors, errors
    for resource in template["Resources"].values():
        props = resource.get("Properties", {})
        for key in ("CodeUri", "ContentUri"):  # `sam build` uploads these; any S3 URI will do
            if key in props:
                props[key] = "s3://bucket/key"

    class _NoManagedPolicies:
        def load(self) -> dict[str, str]:
            return {}

    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    return transform(template, dict(parameters), _NoManagedPolicies())


def translated(**parameters: str) -> dict[str, Any]:
    return copy.deepcopy(_translated(tuple(sorted(parameters.items()))))
