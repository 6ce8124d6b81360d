"""Pure edits of an API-format ComfyUI workflow: inject a prompt and named parameters.

Stdlib only, no I/O: every function takes a workflow dict and returns a new one.
"""

from __future__ import annotations

import copy
import difflib
import random
from collections import deque
from collections.abc import Iterator
from typing import Any

from ..errors import BadRequestError, WorkflowFormatError

Workflow = dict[str, dict[str, Any]]

# Text-input node classes -> the input fields a prompt is written to. Extend here.
TEXT_NODE_FIELDS: dict[str, tuple[str, ...]] = {
    "CLIPTextEncode": ("text",),
    "Text Multiline": ("text",),
    "PrimitiveStringMultiline": ("value",),
    "PrimitiveString": ("value",),
    "CLIPTextEncodeSDXL": ("text_g", "text_l"),
    "CLIPTextEncodeFlux": ("clip_l", "t5xxl"),
}

# Named parameters of the simple format -> the node inputs that own them. `seed` also
# covers KSamplerAdvanced/SamplerCustom, which call it `noise_seed`.
PARAM_INPUTS: dict[str, tuple[str, ...]] = {
    "seed": ("seed", "noise_seed"),
    "steps": ("steps",),
    "cfg": ("cfg",),
    "sampler_name": ("sampler_name",),
    "scheduler": ("scheduler",),
    "denoise": ("denoise",),
    "width": ("width",),
    "height": ("height",),
    "batch_size": ("batch_size",),
}

# The input-image keys of the simple format (taken out by comfy_core.workflows.inputs before patching;
# named here only to recognise a misspelling of them).
INPUT_KEYS = frozenset({"image", "mask", "images"})
# `client_id` may accompany either format; it is not a node id and not a patch.
REQUEST_KEYS = frozenset({"client_id"})
SIMPLE_KEYS = frozenset({"prompt", "target_node", "negative_prompt", *PARAM_INPUTS})
MAX_SEED = 2**64 - 1  # ComfyUI's KSampler bound
UPSTREAM_SEARCH_LIMIT = 64  # nodes visited when tracing a sampler's conditioning back to text



# -- loading ---------------------------------------------------------------------------
def is_ui_format(document: Any) -> bool:
    """What the editor's Save/Export writes: a graph of `nodes` and `links` (the API format
    is a mapping of node ids to `{class_type, inputs}`). Here, not in convert.py: every run
    asks, and only a UI-format workflow needs the converter loaded."""
    return (
        isinstance(document, dict)
        and isinstance(document.get("nodes"), list)
        and isinstance(document.get("links"), list)
    )


def normalise_workflow(document: Any) -> Workflow:
    """The API-format graph from a stored file: bare, or wrapped as {"prompt": {...}}."""
    if not isinstance(document, dict):
        raise WorkflowFormatError("Workflow file must be a JSON object")
    if "nodes" in document and "links" in document:
        raise WorkflowFormatError(
            "Workflow is a UI-format export; in ComfyUI enable dev mode options and "
            'export it with "Save (API Format)"'
        )
    if isinstance(document.get("prompt"), dict):
        document = document["prompt"]
    if not document:
        raise WorkflowFormatError("Workflow has no nodes")
    for node_id, node in document.items():
        if not isinstance(node, dict) or not isinstance(node.get("inputs", {}), dict):
            raise WorkflowFormatError(f"Workflow node {node_id} is not an API-format node")
    return document


def _sort_key(node_id: str) -> tuple[int, int | str]:
    return (0, int(node_id)) if node_id.isdigit() else (1, node_id)


def _is_link(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], int)
    )


def is_text_node(node: dict[str, Any]) -> bool:
    return node.get("class_type") in TEXT_NODE_FIELDS


# -- choosing the text node ------------------------------------------------------------
# A node that takes both conditionings (ControlNetApplyAdvanced, InpaintModelConditioning,
# ...) gives them back in this order: its output 0 carries `positive`, output 1 `negative`.
ROLE_OF_OUTPUT = ("positive", "negative")


def _walk_upstream(workflow: Workflow, start: Any, role: str) -> Iterator[str]:
    """The nodes a `positive`/`negative` input draws from, nearest first: links are followed
    upstream breadth first (through FluxGuidance, ConditioningCombine, ...) and stop at text
    nodes. A node that carries both roles is followed along the role of the output the link
    comes from, so the positive path never lands on the negative prompt."""
    if not _is_link(start):
        return
    queue: deque[tuple[str, int, str]] = deque([(start[0], start[1], role)])
    seen: set[tuple[str, str]] = set()
    while queue and len(seen) < UPSTREAM_SEARCH_LIMIT:
        node_id, slot, role = queue.popleft()
        if (node_id, role) in seen or node_id not in workflow:
            continue
        seen.add((node_id, role))
        yield node_id
        node = workflow[node_id]
        if is_text_node(node):
            continue
        inputs = node.get("inputs", {})
        if slot in (0, 1) and all(_is_link(inputs.get(name)) for name in ROLE_OF_OUTPUT):
            role = ROLE_OF_OUTPUT[slot]
        if _is_link(inputs.get(role)):
            queue.append((inputs[role][0], inputs[role][1], role))
            continue
        for value in inputs.values():
            if _is_link(value):
                queue.append((value[0], value[1], role))


def _upstream_text_nodes(workflow: Workflow, start: Any, role: str) -> Iterator[str]:
    return (node_id for node_id in _walk_upstream(workflow, start, role) if is_text_node(workflow[node_id]))


def _conditioning_consumers(workflow: Workflow) -> list[str]:
    """Nodes with `positive`/`negative` inputs where conditioning ends (samplers, guiders),
    lowest id first. One that passes both on (ControlNetApplyAdvanced) is part of a path
    leading to one of them, not a start: traced from its own inputs, crossed wiring after it
    would be missed."""
    candidates = [node_id for node_id in sorted(workflow, key=_sort_key)
                  if any(_is_link(workflow[node_id].get("inputs", {}).get(role)) for role in ROLE_OF_OUTPUT)]
    on_a_path = {upstream for node_id in candidates for role in ROLE_OF_OUTPUT
                 for upstream in _walk_upstream(workflow, workflow[node_id]["inputs"].get(role), role)}
    return [node_id for node_id in candidates if node_id not in on_a_path] or candidates


def find_wired_text_node(workflow: Workflow, role: str) -> str | None:
    """The text node feeding a sampler's `positive` or `negative` input."""
    for node_id in _conditioning_consumers(workflow):
        source = workflow[node_id]["inputs"].get(role)
        found = next(_upstream_text_nodes(workflow, source, role), None)
        if found is not None:
            return found
    return None


def wired_text_nodes(workflow: Workflow, role: str) -> set[str]:
    """Every text node feeding a sampler's `positive` (or `negative`) input, near or far."""
    return {found for node_id in _conditioning_consumers(workflow)
            for found in _upstream_text_nodes(workflow, workflow[node_id]["inputs"].get(role), role)}


def written_nodes(workflow: Workflow, node_id: str) -> set[str]:
    """The nodes `set_text` writes to for this node: itself, or the text nodes its
    fields are linked from."""
    written: set[str] = set()
    pending, seen = [node_id], set()
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        seen.add(current)
        inputs = workflow[current].get("inputs", {})
        for field in TEXT_NODE_FIELDS[workflow[current]["class_type"]]:
            value = inputs.get(field)
            if _is_link(value) and value[0] in workflow and is_text_node(workflow[value[0]]):
                pending.append(value[0])
            else:
                written.add(current)
    return written


def find_first_text_node(workflow: Workflow, exclude: frozenset[str] = frozenset()) -> str | None:
    """The text node with the lowest id whose text does not land in any node of `exclude`."""
    for node_id in sorted(workflow, key=_sort_key):
        if is_text_node(workflow[node_id]) and node_id not in exclude:
            if written_nodes(workflow, node_id).isdisjoint(exclude):
                return node_id
    return None


def choose_prompt_node(workflow: Workflow, target_node: str | None) -> str:
    if target_node is not None:
        if target_node not in workflow:
            raise BadRequestError(f"Target node {target_node} not found in workflow")
        if not is_text_node(workflow[target_node]):
            raise BadRequestError(f"Target node {target_node} is not a text input node")
        return target_node
    node_id = find_wired_text_node(workflow, "positive")
    if node_id is None:
        # No known text class on the positive side (a custom encoder, say): any other text
        # node may do, but never one that writes the negative prompt.
        negative = wired_text_nodes(workflow, "negative")
        negative |= {written for node in negative for written in written_nodes(workflow, node)}
        node_id = find_first_text_node(workflow, exclude=frozenset(negative))
    if node_id is None:
        raise BadRequestError("No suitable text input node found in workflow")
    return node_id


def set_text(workflow: Workflow, node_id: str, text: str) -> None:
    """Write `text` into every text field of the node. A field fed by a link from another
    text node (a primitive) is written there instead, so the link stays intact."""
    node = workflow[node_id]
    inputs = node.setdefault("inputs", {})
    for field in TEXT_NODE_FIELDS[node["class_type"]]:
        current = inputs.get(field)
        if _is_link(current) and current[0] in workflow and is_text_node(workflow[current[0]]):
            set_text(workflow, current[0], text)
        else:
            inputs[field] = text


# -- named parameters ------------------------------------------------------------------
def _int_param(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise BadRequestError(f"'{name}' must be an integer from {low} to {high}")
    return value


def _number_param(name: str, value: Any, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise BadRequestError(f"'{name}' must be a number from {low} to {high}")
    return value


def _str_param(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value or len(value) > 128:
        raise BadRequestError(f"'{name}' must be a non-empty string")
    return value


def validate_param(name: str, value: Any) -> Any:
    """Check one named parameter and return the value to write."""
    if name == "seed":
        if value == "random" or value == -1:
            return random.randint(0, 2**53 - 1)  # JSON-safe; well inside ComfyUI's range
        return _int_param(name, value, 0, MAX_SEED)
    if name == "steps":
        return _int_param(name, value, 1, 10_000)
    if name == "cfg":
        return _number_param(name, value, 0.0, 100.0)
    if name == "denoise":
        return _number_param(name, value, 0.0, 1.0)
    if name in ("width", "height"):
        return _int_param(name, value, 16, 16_384)
    if name == "batch_size":
        return _int_param(name, value, 1, 4_096)
    return _str_param(name, value)


def apply_param(workflow: Workflow, name: str, value: Any) -> list[str]:
    """Set the parameter on every node that owns it as a literal input."""
    touched = []
    for node_id in sorted(workflow, key=_sort_key):
        inputs = workflow[node_id].get("inputs", {})
        for field in PARAM_INPUTS[name]:
            if field in inputs and not _is_link(inputs[field]):
                inputs[field] = value
                touched.append(node_id)
    if not touched:
        raise BadRequestError(f"Workflow has no node with a '{name}' input")
    return touched


# -- the two request formats -------------------------------------------------------------
def _closest_key(key: str) -> str | None:
    close = difflib.get_close_matches(key, sorted(SIMPLE_KEYS | INPUT_KEYS), n=1, cutoff=0.7)
    return close[0] if close else None


def _named(keys: list[str]) -> str:
    """Unknown keys for an error message, each with the known key it most resembles."""
    return ", ".join(
        f"{key} (did you mean '{_closest_key(key)}'?)" if _closest_key(key) else key for key in keys
    )


def is_simple_format(body: dict[str, Any]) -> bool:
    return bool(SIMPLE_KEYS.intersection(body))


def apply_simple(workflow: Workflow, body: dict[str, Any]) -> Workflow:
    unknown = sorted(set(body) - SIMPLE_KEYS - REQUEST_KEYS)
    if unknown:
        raise BadRequestError(f"Unknown parameter(s): {_named(unknown)}")
    patched = copy.deepcopy(workflow)
    target = body.get("target_node")
    if target is not None:
        if isinstance(target, int) and not isinstance(target, bool):
            target = str(target)
        if not isinstance(target, str):
            raise BadRequestError("'target_node' must be a node id string")
    positive = wired_text_nodes(patched, "positive")
    if "prompt" in body:
        if not isinstance(body["prompt"], str):
            raise BadRequestError("'prompt' must be a string")
        prompt_node = choose_prompt_node(patched, target)
        positive.add(prompt_node)
        set_text(patched, prompt_node, body["prompt"])
    elif target is not None:
        raise BadRequestError("'target_node' needs a 'prompt'")
    if "negative_prompt" in body:
        if not isinstance(body["negative_prompt"], str):
            raise BadRequestError("'negative_prompt' must be a string")
        negative = find_wired_text_node(patched, "negative")
        if negative is None:
            raise BadRequestError("Workflow has no text node wired to a sampler's negative input")
        # A text node on both sides (Flux's ConditioningZeroOut, one primitive feeding both
        # encoders): writing the negative prompt there would replace the prompt.
        shared = written_nodes(patched, negative) & {
            written for node in positive for written in written_nodes(patched, node)}
        if shared:
            raise BadRequestError(
                f"Text node {min(shared, key=_sort_key)} feeds the sampler's positive input too; "
                "this workflow has no separate negative prompt"
            )
        set_text(patched, negative, body["negative_prompt"])
    for name in PARAM_INPUTS:
        if name in body:
            apply_param(patched, name, validate_param(name, body[name]))
    return patched


def apply_advanced(workflow: Workflow, body: dict[str, Any]) -> Workflow:
    """Merge `{"<node_id>": {"inputs": {...}}}` or `{"<node_id>": {...}}` into the inputs."""
    updates = {key: value for key, value in body.items() if key not in REQUEST_KEYS}
    unknown = sorted(key for key in updates if key not in workflow)
    misspelt = [key for key in unknown if _closest_key(key) and not key.isdigit()]
    if misspelt:
        # {"promt": "x"} is a misspelt simple-format key, not a node id: say so.
        raise BadRequestError(f"Unknown parameter(s): {_named(misspelt)}")
    if unknown:
        raise BadRequestError(f"Unknown node id(s) in workflow: {', '.join(unknown)}")
    patched = copy.deepcopy(workflow)
    for node_id, update in updates.items():
        if not isinstance(update, dict):
            raise BadRequestError(f"Update for node {node_id} must be a JSON object")
        inputs = update["inputs"] if set(update) == {"inputs"} else update
        if not isinstance(inputs, dict):
            raise BadRequestError(f"'inputs' of node {node_id} must be a JSON object")
        patched[node_id].setdefault("inputs", {}).update(copy.deepcopy(inputs))
    return patched


def apply_request(workflow: Workflow, body: dict[str, Any]) -> Workflow:
    """Apply either request format of the original service; `{}` runs the workflow as is."""
    if is_simple_format(body):
        return apply_simple(workflow, body)
    return apply_advanced(workflow, body)
