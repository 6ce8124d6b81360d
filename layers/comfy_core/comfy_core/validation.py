"""Path parameter checks, done before any I/O so bad input never reaches S3 or ComfyUI."""

from __future__ import annotations

import re

from .errors import BadRequestError

WORKFLOW_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# Our prompt ids are UUIDs, but ComfyUI takes any caller-supplied id; accept the same
# conservative alphabet so ids from other clients of the same ComfyUI still work.
PROMPT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")


def is_workflow_name(value: str | None) -> bool:
    return bool(value) and WORKFLOW_NAME.fullmatch(value) is not None and ".." not in value


def workflow_name(value: str | None) -> str:
    if not is_workflow_name(value):
        raise BadRequestError(
            "Invalid workflow name: use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return value


def prompt_id(value: str | None) -> str:
    if not value or not PROMPT_ID.fullmatch(value):
        raise BadRequestError(
            "Invalid prompt_id: use 1-128 letters, digits, '_' or '-'"
        )
    return value
