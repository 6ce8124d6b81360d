"""The run request from `--prompt`, `--set` and input images.

The API takes one of two formats per request: the simple one (`prompt`, `seed`, `steps`...
at the top) or the advanced one (node id -> inputs). `--set NODE.INPUT=VALUE` is the
advanced format and `--set NAME=VALUE` (no dot) a simple-format parameter; they cannot be
combined with each other. Input images (`image`, `mask`) go with either.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


class BodyError(ValueError):
    """A `--set` that cannot be turned into a request (a usage error)."""


@dataclass(frozen=True)
class Assignment:
    node: str | None  # None: a simple-format parameter
    name: str
    value: Any


def parse_value(text: str) -> Any:
    """JSON when it is JSON (42, 0.5, true, null, [..], {..}, "quoted"), else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_assignment(text: str) -> Assignment:
    """`NODE.INPUT=VALUE` or `NAME=VALUE`."""
    target, equals, value = text.partition("=")
    if not equals or not target:
        raise BodyError(f"--set {text}: expected NODE.INPUT=VALUE (e.g. 3.seed=42) or NAME=VALUE (e.g. steps=20)")
    node, dot, name = target.partition(".")
    if dot:
        if not node or not name:
            raise BodyError(f"--set {text}: expected NODE.INPUT=VALUE (e.g. 3.seed=42)")
        return Assignment(node, name, parse_value(value))
    return Assignment(None, target, parse_value(value))


def build_body(
    prompt: str | None = None,
    assignments: Iterable[Assignment] = (),
    inputs: dict[str, dict[str, str]] | None = None,
) -> dict[str, Any]:
    """The request body. `inputs` maps "image"/"mask" to input references ({"upload_id": ...})."""
    body: dict[str, Any] = {}
    simple: dict[str, Any] = {}
    nodes: dict[str, dict[str, Any]] = {}
    if prompt is not None:
        simple["prompt"] = prompt
    for item in assignments:
        if item.node is None and item.name == "client_id":  # goes with either format
            body["client_id"] = item.value
        elif item.node is None:
            if item.name in ("image", "mask", "images"):
                raise BodyError(f"--set {item.name}=...: give input images with --image FILE / --mask FILE")
            simple[item.name] = item.value
        else:
            nodes.setdefault(item.node, {})[item.name] = item.value
    if simple and nodes:
        named = ", ".join(f"{node}.{name}" for node, values in nodes.items() for name in values)
        raise BodyError(
            f"--set {named} sets node inputs, which the API cannot combine with --prompt or "
            "simple parameters (" + ", ".join(simple) + ") in one request: set the text node's "
            "input instead, e.g. --set 6.text='a red fox'")
    body.update(simple)
    body.update({node: {"inputs": values} for node, values in nodes.items()})
    body.update(inputs or {})
    return body
