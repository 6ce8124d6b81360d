"""UI-format ComfyUI workflows (what the editor's Save or Export writes, also the `workflow`
embedded in output PNGs) to the API-format prompt that POST /prompt takes.

Pure: stdlib only, no I/O. The node definitions (GET /object_info of the backend that will
run the prompt) are an argument, so each backend's own definitions can be used.

ComfyUI has no endpoint for this: its editor converts in the browser (`graphToPrompt`).
What follows mirrors that code as shipped in frontend 1.27.10, the version the recorded
pairs in tests/fixtures/comfyui/ui2api/ were made with, including the core extensions that
change what is sent (upload buttons, seed controls, dynamic prompts, filename tokens,
PreviewAny's display widget...). Where the editor's result depends on the browser (a random
`{a|b}` choice, a webcam frame, a rendered 3D scene) the converter says so instead of guessing:
a warning, or a WorkflowConversionError (422) naming the node and the reason.
"""

from __future__ import annotations

import datetime
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..errors import WorkflowConversionError
from .patcher import is_ui_format

Prompt = dict[str, dict[str, Any]]
NodeDefinitions = dict[str, Any]  # GET /object_info: class name -> definition

# litegraph node modes (LGraphEventMode): muted nodes never run, bypassed ones are wired through.
MODE_NEVER = 2
MODE_BYPASS = 4
# Ids of a subgraph definition's input and output nodes in its links.
SUBGRAPH_INPUT_ID = -10
SUBGRAPH_OUTPUT_ID = -20

NOTE_TYPES = frozenset({"Note", "MarkdownNote"})
REROUTE = "Reroute"
PRIMITIVE = "PrimitiveNode"
GROUP_NODE_PREFIXES = ("workflow>", "workflow/")  # legacy group nodes, v2 and v1 separators
SEED_NAMES = ("seed", "noise_seed")  # INT inputs that get a value control even without the flag
# Subgraphs nest, and each instance repeats its definition's nodes: a small file can expand to
# billions of nodes. Past this many the workflow is refused (the editor would hang instead).
MAX_EXPANDED_NODES = 10_000

# Widget types the 1.27.10 editor draws (core widgets and those its core extensions register).
CORE_WIDGET_TYPES = frozenset({
    "INT", "FLOAT", "BOOLEAN", "STRING", "MARKDOWN", "COMBO", "IMAGEUPLOAD", "FILEUPLOAD", "COLOR",
    "IMAGECOMPARE", "TREESELECT", "MULTISELECT", "CHART", "GALLERIA", "SELECTBUTTON", "TEXTAREA",
    "WEBCAM", "AUDIO_UI", "AUDIOUPLOAD", "AUDIO_RECORD", "LOAD_3D", "LOAD_3D_ANIMATION",
    "PREVIEW_3D", "PREVIEW_3D_ANIMATION",
})
# Widgets whose value the editor computes in the browser when it queues the prompt.
EDITOR_COMPUTED_WIDGETS = {
    "WEBCAM": "a frame captured from the browser's webcam",
    "AUDIO_RECORD": "audio recorded in the browser",
    "LOAD_3D": "a render of the 3D scene made in the browser",
    "LOAD_3D_ANIMATION": "a render of the 3D animation made in the browser",
}
# Save nodes whose `filename_prefix` gets %Node.widget% and %date:...% substituted
# (frontend extension Comfy.SaveImageExtraOutput).
SAVE_NODE_TYPES = frozenset({
    "SaveImage", "SaveAnimatedWEBP", "SaveWEBM", "SaveAudio", "SaveGLB", "SaveAnimatedPNG",
    "CLIPSave", "VAESave", "ModelSave", "LoraSave", "SaveLatent",
})
AUDIO_UI_NODE_TYPES = frozenset({"LoadAudio", "SaveAudio", "PreviewAudio", "SaveAudioMP3", "SaveAudioOpus"})
# The editor's English titles for nodes whose definition has no display_name (its locale
# file); every other node is titled with its display_name, or its class name.
EDITOR_TITLES = {
    "ImageBlend": "Image Blend",
    "ImageBlur": "Image Blur",
    "ImageQuantize": "Image Quantize",
    "ImageSharpen": "Image Sharpen",
    "ImageScaleToTotalPixels": "Scale Image to Total Pixels",
}
S_AND_R = "Node name for S&R"  # the property %Name.widget% tokens look nodes up by
REPLACE_PROPERTY = "Run widget replace on values"  # a legacy primitive's own token switch
FILENAME_UNSAFE = re.compile(r'[/?<>\\:*|"\x00-\x1f\x7f]')
TOKEN = re.compile(r"%([^%]+)%")
DATE_PART = re.compile(r"dd?|MM?|hh?|mm?|ss?|yyy?y?")
_MISSING = object()  # a widget value the editor leaves undefined (the key is then not sent)


@dataclass(frozen=True)
class Conversion:
    prompt: Prompt
    warnings: list[str]
    # True when the prompt holds the clock (a %date:...% token): it must not be reused later.
    uses_clock: bool = False


def ui_to_api(
    ui_workflow: dict[str, Any], object_info: NodeDefinitions, *, now: datetime.datetime | None = None
) -> tuple[Prompt, list[str]]:
    """The prompt the editor would queue for `ui_workflow`, and warnings about what may differ
    from what its author sees. Raises WorkflowConversionError (422) naming the node and the
    reason for what cannot be converted."""
    conversion = convert(ui_workflow, object_info, now=now)
    return conversion.prompt, conversion.warnings


def convert(
    ui_workflow: dict[str, Any], object_info: NodeDefinitions, *, now: datetime.datetime | None = None
) -> Conversion:
    """ui_to_api with the `uses_clock` flag callers need to decide whether to cache."""
    if not is_ui_format(ui_workflow):
        raise WorkflowConversionError("Workflow is not in the editor's UI format (no nodes and links)")
    if not isinstance(object_info, dict):
        raise TypeError("object_info must be the GET /object_info mapping")
    try:
        converter = _Converter(ui_workflow, object_info, now or datetime.datetime.now(datetime.timezone.utc))
        prompt = converter.run()
    except RecursionError as exc:
        raise WorkflowConversionError(
            "Workflow cannot be converted: its links or subgraphs are nested too deeply"
        ) from exc
    except (TypeError, ValueError, AttributeError, KeyError, IndexError) as exc:
        # A document that only looks like the editor's (a number where a list belongs...):
        # the client's to fix, so a 422, not our 500. The cause stays in the traceback.
        raise WorkflowConversionError(
            "Workflow cannot be converted: its structure is not what the editor writes"
        ) from exc
    return Conversion(prompt, converter.warnings, converter.uses_clock)


# -- the graph model --------------------------------------------------------------------------
@dataclass
class _Input:
    name: str
    type: Any
    link: int | None
    widget: str | None = None  # the widget this socket feeds, if it is a widget's socket


@dataclass
class _Output:
    name: str
    type: Any
    links: list[int]
    widget: str | None = None


@dataclass
class _Widget:
    name: str
    value: Any
    saved: bool = True  # has an entry in widgets_values (the editor's widget.serialize)
    sent: bool = True  # goes into the prompt (the editor's widget.options.serialize)
    role: str = ""  # "dynamic_prompt", "filename_prefix", "computed": how the editor sends it
    input_type: Any = None


@dataclass
class _Link:
    id: int
    origin_id: str
    origin_slot: int
    target_id: str
    target_slot: int
    type: Any


@dataclass
class _Node:
    graph: _Graph
    id: str
    raw: dict[str, Any]
    type: str
    kind: str  # regular, unknown, reroute, primitive, note, subgraph, group
    mode: int
    title: str
    inputs: list[_Input]
    outputs: list[_Output]
    widgets: list[_Widget] = field(default_factory=list)
    properties: dict[str, Any] = field(default_factory=dict)
    subgraph: _Graph | None = None  # the definition, for a subgraph instance
    group: _GroupNode | None = None  # the definition, for a legacy group node
    index: int = 0  # position inside a legacy group node
    children: list[_Node] | None = None  # a legacy group node's inner nodes, once built

    @property
    def virtual(self) -> bool:
        return self.kind in ("reroute", "primitive", "note", "subgraph", "group")

    def label(self) -> str:
        return f"{self.id} ({self.type})"

    def widget(self, name: str | None) -> _Widget | None:
        return next((w for w in self.widgets if w.name == name), None) if name else None

    def input_index(self, link_id: int) -> int | None:
        return next((i for i, slot in enumerate(self.inputs) if slot.link == link_id), None)


@dataclass
class _Graph:
    id: str | None  # a subgraph definition's id; None for the workflow itself
    name: str
    nodes: dict[str, _Node] = field(default_factory=dict)
    links: dict[int, _Link] = field(default_factory=dict)
    inputs: list[dict[str, Any]] = field(default_factory=list)  # subgraph definition slots
    outputs: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _Spec:
    """One input of a node definition, as the editor sees it (V2 input spec)."""

    name: str
    type: Any  # "COMBO" for choice lists
    options: dict[str, Any]
    optional: bool
    choices: list[Any] | None = None

    @property
    def is_widget(self) -> bool:
        return isinstance(self.type, str) and self.type in CORE_WIDGET_TYPES and not self.options.get("forceInput")


@dataclass
class _Resolved:
    origin_id: str
    origin_slot: int
    widget_value: Any = _MISSING


@dataclass
class _Dto:
    """One node of the flattened graph (the editor's ExecutableNodeDTO)."""

    node: _Node
    path: tuple[str, ...]
    subgraph_node: _Node | None = None  # the subgraph instance this node sits in
    group_child: bool = False

    @property
    def id(self) -> str:
        return ":".join((*self.path, self.node.id))

    @property
    def inputs(self) -> list[_Input]:
        return self.node.inputs

    @property
    def mode(self) -> int:
        return self.node.mode


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _int(value: Any, default: int = 0) -> int:
    if isinstance(value, bool):
        return default
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return default
    return default


def _link_id(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    return _int(value, -1) if isinstance(value, (int, float, str)) else None


def _js_str(value: Any) -> str:
    """String(value) as JavaScript writes it (what filename tokens turn widget values into)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        if value.is_integer() and abs(value) < 1e21:
            return str(int(value))
        text = repr(value)
        return re.sub(r"e([+-])0*(\d)", r"e\1\2", text)
    if isinstance(value, list):
        return ",".join("" if item is None else _js_str(item) for item in value)
    if isinstance(value, dict):
        return "[object Object]"
    return str(value)


def _is_js_index(key: str) -> bool:
    return key.isdigit() and (key == "0" or not key.startswith("0")) and int(key) < 2**32 - 1


def _js_key_order(prompt: Prompt) -> Prompt:
    """A JavaScript object's key order: integer-like ids ascending, then the others in insertion
    order (the editor's prompt lists "5" before "10", and "6:3" after both)."""
    numeric = sorted((key for key in prompt if _is_js_index(key)), key=int)
    rest = [key for key in prompt if not _is_js_index(key)]
    return {key: prompt[key] for key in (*numeric, *rest)}


def _is_valid_connection(type_a: Any, type_b: Any) -> bool:
    """litegraph's isValidConnection: "*"/"" match anything, "A,B" lists match any member."""
    if type_a in ("", "*", None, 0):
        return True
    if type_b in ("", "*", None, 0):
        return True
    if type_a == type_b:
        return True
    a, b = str(type_a).lower(), str(type_b).lower()
    if "," not in a and "," not in b:
        return a == b
    return any(_is_valid_connection(x, y) for x in a.split(",") for y in b.split(","))


# -- dynamic prompts and filename tokens -------------------------------------------------------
def _dynamic_prompt(text: str) -> tuple[str, bool]:
    """The editor's processDynamicPrompt without its dice: (result, random). `random` is True
    when a `{a|b}` choice with more than one option is met; the editor then picks one at
    random on every run, which no conversion can reproduce."""
    source = re.sub("/\\*[\\s\\S]*?\\*/|//[^\n\r\u2028\u2029]*", "", text)
    position = 0
    random_choice = False

    def escape() -> str:
        nonlocal position
        char = source[position] if position < len(source) else "undefined"
        position += 1
        return "\\" + char

    def choice_block() -> str:
        nonlocal position, random_choice
        options: list[str] = []
        current = ""
        depth = 0
        while position < len(source):
            char = source[position]
            position += 1
            if char == "\\":
                current += escape()
                continue
            if char == "{":
                depth += 1
            elif char == "}":
                if not depth:
                    break
                depth -= 1
            elif char == "|" and not depth:
                options.append(current)
                current = ""
                continue
            current += char
        options.append(current)
        if len(options) > 1:
            random_choice = True
        inner, nested_random = _dynamic_prompt(options[0])
        random_choice = random_choice or nested_random
        return inner

    result = ""
    while position < len(source):
        char = source[position]
        position += 1
        if char == "\\":
            result += escape()
        elif char == "{":
            result += choice_block()
        else:
            result += char
    return re.sub(r"\\([{}|])", r"\1", result), random_choice


def _format_date(pattern: str, now: datetime.datetime) -> str:
    def part(match: re.Match[str]) -> str:
        text = match.group(0)
        if text == "yy":
            return str(now.year)[2:]
        if text == "yyyy":
            return str(now.year)
        values = {"d": now.day, "M": now.month, "h": now.hour, "m": now.minute, "s": now.second}
        if text[0] in values:
            return str(values[text[0]]).rjust(len(text), "0")
        return text

    return DATE_PART.sub(part, pattern)


# -- reading node definitions -----------------------------------------------------------------
def _spec(name: str, raw: Any, optional: bool) -> _Spec:
    if not isinstance(raw, (list, tuple)) or not raw:
        return _Spec(name, raw, {}, optional)
    head = raw[0]
    options = raw[1] if len(raw) > 1 and isinstance(raw[1], dict) else {}
    if isinstance(head, list):
        return _Spec(name, "COMBO", options, optional, list(head))
    if head == "COMBO":
        choices = options.get("options")
        return _Spec(name, "COMBO", options, optional, list(choices) if isinstance(choices, list) else [])
    return _Spec(name, head, options, optional)


def _is_media_upload(raw: Any) -> bool:
    if not isinstance(raw, (list, tuple)) or len(raw) < 2 or not isinstance(raw[1], dict):
        return False
    flags = raw[1]
    upload = any(flags.get(key) is True for key in ("image_upload", "video_upload", "animated_image_upload"))
    return upload and (isinstance(raw[0], list) or raw[0] == "COMBO")


def _editor_inputs(class_type: str, definition: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(required, optional) as the editor registers the node: its core extensions add the
    upload button, the audio player and the 3D viewer inputs before the node is built."""
    inputs = definition.get("input") if isinstance(definition.get("input"), dict) else {}
    required = dict(inputs.get("required") or {}) if isinstance(inputs.get("required"), dict) else {}
    optional = dict(inputs.get("optional") or {}) if isinstance(inputs.get("optional"), dict) else {}
    upload = next((raw for raw in required.values() if _is_media_upload(raw)), None)
    if upload is not None:
        required["upload"] = ["IMAGEUPLOAD", {**upload[1]}]
    if class_type in AUDIO_UI_NODE_TYPES:
        required["audioUI"] = ["AUDIO_UI", {}]
    audio = required.get("audio")
    if isinstance(audio, list) and len(audio) > 1 and isinstance(audio[1], dict) and audio[1].get("audio_upload") is True:
        required["upload"] = ["AUDIOUPLOAD", {}]
    if class_type in ("Preview3D", "SaveGLB"):
        required["image"] = ["PREVIEW_3D"]
    elif class_type == "Preview3DAnimation":
        required["image"] = ["PREVIEW_3D_ANIMATION"]
    return required, optional


def _ordered_specs(class_type: str, definition: dict[str, Any]) -> tuple[list[_Spec], list[_Spec]]:
    """(the node's inputs in the order the editor builds them: input_order's required, then
    optional, then what its extensions added; the same in definition order)."""
    required, optional = _editor_inputs(class_type, definition)
    record = {name: _spec(name, raw, False) for name, raw in required.items()}
    for name, raw in optional.items():
        record[name] = _spec(name, raw, True)
    order = definition.get("input_order")
    if not isinstance(order, dict):
        return list(record.values()), list(record.values())
    ordered: list[_Spec] = []
    for names, optional_section in ((order.get("required"), False), (order.get("optional"), True)):
        for name in names if isinstance(names, list) else []:
            spec = record.get(name) if isinstance(name, str) else None
            if spec is not None and spec.optional == optional_section and spec not in ordered:
                ordered.append(spec)
    ordered.extend(spec for spec in record.values() if spec not in ordered)
    return ordered, list(record.values())


def _default(spec: _Spec) -> Any:
    options = spec.options
    if spec.type in ("INT", "FLOAT"):
        return options.get("default") if options.get("default") is not None else 0
    if spec.type == "BOOLEAN":
        return options.get("default") if options.get("default") is not None else False
    if spec.type in ("STRING", "MARKDOWN", "TEXTAREA"):
        return options.get("default") if options.get("default") is not None else ""
    if spec.type == "COMBO":
        if options.get("multi_select"):
            return []
        if options.get("default"):
            return options["default"]
        if spec.choices:
            return spec.choices[0]
        return "Loading..." if options.get("remote") else _MISSING
    return options.get("default", _MISSING)


def _widgets_for(spec: _Spec, class_type: str) -> list[_Widget]:
    """The widgets the editor creates for one widget input: the widget itself, then the ones
    linked to it (value control, combo filter, refresh buttons), which it saves but never sends."""
    options = spec.options
    main = _Widget(spec.name, _default(spec), input_type=spec.type)
    widgets = [main]
    if spec.type == "INT":
        control = options.get("control_after_generate")
        if control is None:
            control = spec.name in SEED_NAMES
        if control:
            name = control if isinstance(control, str) else "control_after_generate"
            widgets.append(_Widget(name, "randomize", sent=False))
    elif spec.type == "STRING":
        if options.get("dynamicPrompts") is True:
            main.role = "dynamic_prompt"
    elif spec.type == "COMBO":
        remote = options.get("remote")
        if isinstance(remote, dict):
            widgets.append(_Widget("Auto-refresh after generation", False, sent=False))
            if remote.get("refresh_button"):
                widgets.append(_Widget("refresh", "refresh"))
        if options.get("control_after_generate"):
            widgets.append(_Widget("control_after_generate", "randomize", sent=False))
            widgets.append(_Widget("control_filter_list", "", sent=False))
    elif spec.type in ("IMAGEUPLOAD", "AUDIOUPLOAD"):
        main.value = "image" if spec.type == "IMAGEUPLOAD" else ""
        main.sent = False
    elif spec.type == "AUDIO_UI":
        main.value, main.saved = "", False
    elif spec.type in ("PREVIEW_3D", "PREVIEW_3D_ANIMATION"):
        main.value = ""
    elif spec.type in EDITOR_COMPUTED_WIDGETS:
        main.role = "computed"
    if spec.name == "filename_prefix" and class_type in SAVE_NODE_TYPES:
        main.role = "filename_prefix"
    return widgets


def _migrate_values(specs: list[_Spec], widgets: list[_Widget], values: list[Any]) -> list[Any]:
    """The editor's migrateWidgetsValues: values saved before forceInput inputs lost their
    widget still hold an entry for them; drop those when the count says so."""
    names = {w.name for w in widgets}
    originals = [s for s in specs if s.name in names or s.options.get("forceInput")]
    count = sum(2 if (s.options.get("control_after_generate") or s.name in SEED_NAMES) else 1 for s in originals)
    if count != len(values) or not any(s.options.get("forceInput") for s in originals):
        return values
    kept = []
    for i, value in enumerate(values):
        spec = originals[i] if i < len(originals) else None
        if spec is None or not spec.options.get("forceInput"):
            kept.append(value)
    return kept


def _assign_values(node_label: str, widgets: list[_Widget], values: Any, warnings: list[str]) -> None:
    """widgets_values onto the widgets that save one, in order (LGraphNode.configure)."""
    saved = [w for w in widgets if w.saved]
    if isinstance(values, dict):
        # Some custom nodes save a name -> value mapping; their own editor code reads it so.
        for widget in saved:
            if widget.name in values:
                widget.value = values[widget.name]
        warnings.append(f"Node {node_label}: widgets_values is a mapping; values were matched by widget name")
        return
    if not isinstance(values, list):
        return
    for widget, value in zip(saved, values):
        widget.value = value
    missing = [w.name for w in saved[len(values):] if w.sent and w.input_type is not None]
    if missing:
        warnings.append(
            f"Node {node_label}: no saved value for {', '.join(missing)}; the definition's default is used"
        )


# -- legacy group nodes ------------------------------------------------------------------------
@dataclass
class _GroupNode:
    """A legacy group node definition (extra.groupNodes), read the way the editor's
    GroupNodeConfig builds the node from it."""

    name: str
    data: dict[str, Any]
    entries: dict[str, list[Any]] = field(default_factory=dict)  # the group node's inputs
    outputs: list[Any] = field(default_factory=list)
    new_to_old_widget: dict[str, tuple[int, str]] = field(default_factory=dict)
    old_to_new_widget: dict[int, dict[str, str | None]] = field(default_factory=dict)
    input_map: dict[int, dict[int, str]] = field(default_factory=dict)  # inner slot -> group input
    new_to_old_output: dict[int, tuple[int, int]] = field(default_factory=dict)
    primitive_to_widget: dict[int, list[tuple[int, str]]] = field(default_factory=dict)
    primitive_defs: dict[int, list[Any]] = field(default_factory=dict)
    links_from: dict[int, dict[int, list[list[Any]]]] = field(default_factory=dict)
    links_to: dict[int, dict[int, list[Any]]] = field(default_factory=dict)
    external_from: dict[int, dict[int, Any]] = field(default_factory=dict)

    @property
    def nodes(self) -> list[dict[str, Any]]:
        nodes = self.data.get("nodes")
        return [n for n in nodes if isinstance(n, dict)] if isinstance(nodes, list) else []


def _build_group(name: str, data: dict[str, Any], object_info: NodeDefinitions) -> _GroupNode:
    group = _GroupNode(name, data)
    for link in _list(data.get("links")):
        if not isinstance(link, list) or len(link) < 4 or link[0] is None:
            continue
        source, source_slot, target, target_slot = (_int(v, -1) for v in link[:4])
        group.links_from.setdefault(source, {}).setdefault(source_slot, []).append(link)
        group.links_to.setdefault(target, {})[target_slot] = link
    for external in _list(data.get("external")):
        if isinstance(external, list) and len(external) >= 3:
            group.external_from.setdefault(_int(external[0], -1), {})[_int(external[1], -1)] = external[2]
    seen_inputs: dict[str, int] = {}
    deferred: list[Any] = []
    config = _dict(data.get("config"))

    def input_config(node: dict[str, Any], index: int, input_name: str, spec: list[Any],
                     extra: dict[str, Any] | None = None) -> tuple[str, list[Any], dict[str, Any]]:
        custom = _dict(_dict(_dict(config.get(str(index))).get("input")).get(input_name))
        label = next((i.get("label") for i in _list(node.get("inputs"))
                      if isinstance(i, dict) and i.get("name") == input_name), None)
        name = str(custom.get("name") or label or input_name)
        key, prefix = name, ""
        if (node.get("type") == PRIMITIVE and node.get("title")) or name in seen_inputs:
            prefix = f"{node.get('title') or node.get('type')} "
            key = name = f"{prefix}{input_name}"
            if name in seen_inputs:
                name = f"{prefix}{seen_inputs[name]} {input_name}"
        seen_inputs[key] = seen_inputs.get(key, 1) + 1
        if input_name in SEED_NAMES:
            extra = {**(extra or {}), "control_after_generate": f"{prefix}control_after_generate"}
        if extra:
            spec = [spec[0], {**(spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}), **extra}]
        return name, spec, custom

    def primitive_link(link: list[Any], input_name: str, inputs: dict[str, Any]) -> None:
        source, target = _int(link[0], -1), _int(link[2], -1)
        if not 0 <= source < len(group.nodes) or group.nodes[source].get("type") != PRIMITIVE:
            return
        primitive = group.primitive_defs.get(source)
        if primitive is None:
            return
        target_spec = inputs.get(input_name) or [None]
        target_options = target_spec[1] if len(target_spec) > 1 and isinstance(target_spec[1], dict) else None
        # Mutated in place: the group input made from the primitive shares this list.
        primitive[1] = {**target_options} if target_options else {}
        primitive[1]["control_after_generate"] = True
        group.primitive_to_widget.setdefault(source, []).append((target, input_name))

    for index, node in enumerate(group.nodes):
        definition = _group_member_definition(group, index, node, object_info)
        if definition is None:
            continue
        required = _dict(definition["input"].get("required"))
        optional = _dict(definition["input"].get("optional"))
        inputs = {**required, **optional}
        widget_map = group.old_to_new_widget.setdefault(index, {})
        converted: dict[int, str] = {}
        slots: list[str] = []
        raw_inputs = [i for i in _list(node.get("inputs")) if isinstance(i, dict)]
        for input_name, spec in inputs.items():
            if _spec(input_name, spec, False).is_widget:
                socket = next((k for k, i in enumerate(raw_inputs) if i.get("name") == input_name
                               and isinstance(i.get("widget"), dict) and i["widget"].get("name") == input_name), -1)
                if socket > -1:
                    converted[socket] = input_name
                    widget_map[input_name] = None
                else:
                    name, spec, _ = input_config(node, index, input_name, spec)
                    group.entries[name] = spec
                    widget_map[input_name] = name
                    group.new_to_old_widget[name] = (index, input_name)
            else:
                slots.append(input_name)
        links_to = group.links_to.get(index, {})
        input_map = group.input_map.setdefault(index, {})
        for slot, input_name in enumerate(slots):
            if slot in links_to:
                primitive_link(links_to[slot], input_name, inputs)
                continue
            name, spec, custom = input_config(node, index, input_name, inputs[input_name])
            if custom.get("visible") is False:
                continue
            group.entries[name] = spec
            input_map[slot] = name

        def converted_widgets(node: dict[str, Any] = node, index: int = index, inputs: dict[str, Any] = inputs,
                              slots: list[str] = slots, converted: dict[int, str] = converted) -> None:
            links_to = group.links_to.get(index, {})
            # JavaScript sorts the socket numbers as text.
            for offset, input_name in enumerate(converted[k] for k in sorted(converted, key=str)):
                if len(slots) + offset in links_to:
                    primitive_link(links_to[len(slots) + offset], input_name, inputs)
                    continue
                name, spec, _ = input_config(node, index, input_name, inputs[input_name], {"defaultInput": True})
                group.entries[name] = spec
                group.new_to_old_widget[name] = (index, input_name)
                group.old_to_new_widget.setdefault(index, {})[input_name] = name
                group.input_map.setdefault(index, {})[len(slots) + offset] = name

        deferred.append(converted_widgets)
        outputs = _list(definition.get("output"))
        for output_id, output_type in enumerate(outputs):
            has_link = output_id in group.links_from.get(index, {}) and output_id not in group.external_from.get(index, {})
            custom = _dict(_dict(_dict(config.get(str(index))).get("output")).get(str(output_id)))
            visible = custom.get("visible", not has_link)
            if not visible:
                continue
            group.new_to_old_output[len(group.outputs)] = (index, output_id)
            group.outputs.append(output_type)
    for step in deferred:
        step()
    if any(_is_media_upload(spec) for spec in group.entries.values()):
        upload = next(spec for spec in group.entries.values() if _is_media_upload(spec))
        group.entries["upload"] = ["IMAGEUPLOAD", {**upload[1]}]
    return group


def _group_member_definition(
    group: _GroupNode, index: int, node: dict[str, Any], object_info: NodeDefinitions
) -> dict[str, Any] | None:
    node_type = node.get("type")
    definition = object_info.get(node_type) if isinstance(node_type, str) else None
    if isinstance(definition, dict):
        required, optional = _editor_inputs(node_type, definition)
        return {"input": {"required": required, "optional": optional}, "output": _list(definition.get("output"))}
    links_from = group.links_from.get(index)
    if node_type == PRIMITIVE:
        if not links_from or not links_from.get(0):
            return None
        first = links_from[0][0]
        value_type = first[5] if len(first) > 5 else "*"
        if value_type == "COMBO":
            target = group.nodes[_int(first[2], -1)] if 0 <= _int(first[2], -1) < len(group.nodes) else {}
            source = _dict(_dict((_list(node.get("outputs")) or [{}])[0]).get("widget")).get("name")
            target_def = _dict(object_info.get(target.get("type"))) if isinstance(target.get("type"), str) else {}
            target_inputs = {**_dict(_dict(target_def.get("input")).get("required")),
                             **_dict(_dict(target_def.get("input")).get("optional"))}
            value_type = (_list(target_inputs.get(source)) or ["COMBO"])[0]
        spec: list[Any] = [value_type, {}]
        group.primitive_defs[index] = spec
        return {"input": {"required": {"value": spec}}, "output": [value_type]}
    if node_type == REROUTE:
        links_to = group.links_to.get(index)
        if links_to and links_from and not group.external_from.get(index, {}).get(0):
            return None  # used inside the group only
        reroute_type = "*"
        if links_to and 0 in links_to:
            origin = _int(links_to[0][0], -1)
            outputs = group.nodes[origin].get("outputs") if 0 <= origin < len(group.nodes) else None
            slot = _int(links_to[0][1], 0)
            if isinstance(outputs, list) and slot < len(outputs) and isinstance(outputs[slot], dict):
                reroute_type = outputs[slot].get("type", "*")
        return {"input": {"required": {reroute_type: [reroute_type, {"forceInput": True}]}},
                "output": [reroute_type]}
    return None


# -- the converter -----------------------------------------------------------------------------
class _Converter:
    def __init__(self, workflow: dict[str, Any], object_info: NodeDefinitions, now: datetime.datetime) -> None:
        self.workflow = workflow
        self.object_info = object_info
        self.now = now
        self.warnings: list[str] = []
        self.uses_clock = False
        self.definitions: dict[str, dict[str, Any]] = {}
        self.graphs: dict[str, _Graph] = {}
        self.groups: dict[str, _GroupNode] = {}
        self.dtos: dict[str, _Dto] = {}
        self._promoted: set[int] = set()
        self._every_node: list[_Node] | None = None
        self._collect_definitions(workflow)
        self.group_data = _dict(_dict(workflow.get("extra")).get("groupNodes"))
        self.root = self._graph(None, "workflow", workflow.get("nodes"), workflow.get("links"))

    # -- errors and warnings -------------------------------------------------------------
    def fail(self, node: _Node | _Dto | None, reason: str) -> WorkflowConversionError:
        if node is None:
            return WorkflowConversionError(f"Workflow cannot be converted: {reason}", reason=reason)
        target = node.node if isinstance(node, _Dto) else node
        return WorkflowConversionError(
            f"Node {node.id} ({target.type}) cannot be converted: {reason}",
            node_id=node.id, node_type=target.type, reason=reason,
        )

    def warn(self, node_id: str, node_type: str, message: str) -> None:
        text = f"Node {node_id} ({node_type}): {message}"
        if text not in self.warnings:
            self.warnings.append(text)

    # -- reading the document ------------------------------------------------------------
    def _collect_definitions(self, document: dict[str, Any]) -> None:
        """Subgraph definitions by id, nested ones included (a definition may carry its own)."""
        stack = [document]
        while stack:
            current = stack.pop()
            for subgraph in _list(_dict(current.get("definitions")).get("subgraphs")):
                if isinstance(subgraph, dict) and isinstance(subgraph.get("id"), str):
                    if subgraph["id"] not in self.definitions:
                        self.definitions[subgraph["id"]] = subgraph
                        stack.append(subgraph)

    def _subgraph(self, subgraph_id: str) -> _Graph:
        graph = self.graphs.get(subgraph_id)
        if graph is None:
            raw = self.definitions[subgraph_id]
            graph = self._graph(subgraph_id, str(raw.get("name") or subgraph_id), raw.get("nodes"), raw.get("links"))
            graph.inputs = [i for i in _list(raw.get("inputs")) if isinstance(i, dict)]
            graph.outputs = [o for o in _list(raw.get("outputs")) if isinstance(o, dict)]
        return graph

    def _graph(self, graph_id: str | None, name: str, nodes: Any, links: Any) -> _Graph:
        graph = _Graph(graph_id, name)
        if graph_id is not None:
            self.graphs[graph_id] = graph  # before its nodes: a definition that contains itself
        for raw in links if isinstance(links, list) else []:
            link = self._link(raw)
            if link is not None:
                graph.links[link.id] = link
        for raw in nodes if isinstance(nodes, list) else []:
            if not isinstance(raw, dict) or raw.get("id") is None:
                raise self.fail(None, f"{name} has a node without an id")
            node = self._node(graph, raw)
            graph.nodes[node.id] = node
        return graph

    @staticmethod
    def _link(raw: Any) -> _Link | None:
        if isinstance(raw, list) and len(raw) >= 5:
            return _Link(_int(raw[0], -1), str(raw[1]), _int(raw[2]), str(raw[3]), _int(raw[4]),
                         raw[5] if len(raw) > 5 else "*")
        if isinstance(raw, dict) and raw.get("id") is not None:
            return _Link(_int(raw.get("id"), -1), str(raw.get("origin_id")), _int(raw.get("origin_slot")),
                         str(raw.get("target_id")), _int(raw.get("target_slot")), raw.get("type", "*"))
        return None

    def _raw_inputs(self, raw: dict[str, Any]) -> list[_Input]:
        inputs = []
        for item in _list(raw.get("inputs")):
            if isinstance(item, dict):
                widget = item.get("widget")
                inputs.append(_Input(str(item.get("name", "")), item.get("type", "*"), _link_id(item.get("link")),
                                     widget.get("name") if isinstance(widget, dict) else None))
        return inputs

    @staticmethod
    def _raw_outputs(raw: dict[str, Any]) -> list[_Output]:
        outputs = []
        for item in _list(raw.get("outputs")):
            if isinstance(item, dict):
                links = [i for i in (_link_id(link) for link in _list(item.get("links"))) if i is not None]
                widget = item.get("widget")
                outputs.append(_Output(str(item.get("name", "")), item.get("type", "*"), links,
                                       widget.get("name") if isinstance(widget, dict) else None))
        return outputs

    def _node(self, graph: _Graph, raw: dict[str, Any], *, group_index: int | None = None) -> _Node:
        node_type = raw.get("type") if isinstance(raw.get("type"), str) else ""
        node_id = str(raw["id"]) if group_index is None else str(group_index)
        mode = _int(raw.get("mode"), 0)
        properties = dict(_dict(raw.get("properties")))
        title = raw.get("title") if isinstance(raw.get("title"), str) and raw.get("title") else None
        node = _Node(graph, node_id, raw, node_type, "unknown", mode, title or node_type,
                     self._raw_inputs(raw), self._raw_outputs(raw), properties=properties)
        if group_index is not None:
            node.index = group_index
        definition = self.object_info.get(node_type)
        if node_type in NOTE_TYPES:
            node.kind = "note"
        elif node_type == REROUTE:
            node.kind = "reroute"
        elif node_type == PRIMITIVE:
            node.kind = "primitive"
            node.inputs = []
            values = raw.get("widgets_values")
            if isinstance(values, list) and values and node.outputs and node.outputs[0].links:
                node.widgets = [_Widget("value", values[0])]
        elif node_type in self.definitions:
            node.kind = "subgraph"
            node.subgraph = self._subgraph(node_type)
            node.title = title or node.subgraph.name
            connected = {i.name: i for i in node.inputs}
            node.inputs = [
                _Input(str(slot.get("name", "")), slot.get("type", "*"),
                       connected[slot.get("name")].link if slot.get("name") in connected else None)
                for slot in node.subgraph.inputs
            ]
            links = {o.name: o for o in node.outputs}
            node.outputs = [_Output(str(o.get("name", "")), o.get("type", "*"),
                                    links[o.get("name")].links if o.get("name") in links else [])
                            for o in node.subgraph.outputs]
        elif node_type.startswith(GROUP_NODE_PREFIXES) and node_type[len("workflow>"):] in self.group_data:
            self._group_node(node, node_type[len("workflow>"):], raw)
        elif isinstance(definition, dict):
            self._regular_node(node, definition, raw)
            if title is None:
                display = definition.get("display_name")
                node.title = EDITOR_TITLES.get(node_type) or (display if isinstance(display, str) and display else node_type)
        return node

    def _regular_node(self, node: _Node, definition: dict[str, Any], raw: dict[str, Any]) -> None:
        node.kind = "regular"
        if node.type not in SAVE_NODE_TYPES:
            # The editor gives every other node this property (its own class name) on creation.
            node.properties = {S_AND_R: node.type, **node.properties}
        specs, in_definition_order = _ordered_specs(node.type, definition)
        widgets: list[_Widget] = []
        for spec in specs:
            if spec.is_widget:
                widgets.extend(_widgets_for(spec, node.type))
        if node.type == "PreviewAny":
            # Its display widget: never saved, always sent, empty until the node has run.
            widgets.append(_Widget("preview", "", saved=False))
        values = raw.get("widgets_values")
        if isinstance(values, list):
            values = _migrate_values(in_definition_order, widgets, values)
        _assign_values(node.label(), widgets, values, self.warnings)
        node.widgets = widgets
        # Sockets as the editor builds them: inputs without a widget first, then one per widget;
        # the saved inputs are matched by name, extra (dynamic) ones kept after them.
        sockets = [_Input(s.name, s.type, None) for s in specs if not s.is_widget]
        sockets += [_Input(s.name, s.type, None, s.name) for s in specs if s.is_widget]
        self._merge_inputs(node, sockets)
        output_types = definition.get("output") if isinstance(definition.get("output"), list) else []
        output_names = definition.get("output_name") if isinstance(definition.get("output_name"), list) else []
        outputs = []
        for i, output_type in enumerate(output_types):
            saved = node.outputs[i] if i < len(node.outputs) else None
            name = output_names[i] if i < len(output_names) else str(output_type)
            outputs.append(_Output(str(name), output_type, saved.links if saved else [], saved.widget if saved else None))
        outputs += node.outputs[len(output_types):]
        node.outputs = outputs

    @staticmethod
    def _merge_inputs(node: _Node, sockets: list[_Input]) -> None:
        saved = {}
        for item in node.inputs:
            saved.setdefault(item.name, item)
        defined = {s.name for s in sockets}
        for socket in sockets:
            if socket.name in saved:
                socket.link = saved[socket.name].link
        node.inputs = sockets + [item for item in node.inputs if item.name not in defined]

    def _group_node(self, node: _Node, name: str, raw: dict[str, Any]) -> None:
        node.kind = "group"
        group = self.groups.get(name)
        if group is None:
            data = self.group_data.get(name)
            if not isinstance(data, dict):
                raise self.fail(node, f"legacy group node '{name}' has no definition in extra.groupNodes")
            group = self.groups[name] = _build_group(name, data, self.object_info)
        node.group = group
        node.title = node.title if raw.get("title") else name
        specs = [_spec(entry, spec, False) for entry, spec in group.entries.items()]
        widgets: list[_Widget] = []
        for spec in specs:
            if spec.is_widget:
                widgets.extend(_widgets_for(spec, ""))
        _assign_values(node.label(), widgets, raw.get("widgets_values"), self.warnings)
        node.widgets = widgets
        sockets = [_Input(s.name, s.type, None) for s in specs if not s.is_widget]
        sockets += [_Input(s.name, s.type, None, s.name) for s in specs if s.is_widget]
        self._merge_inputs(node, sockets)
        outputs = []
        for i, output_type in enumerate(group.outputs):
            saved = node.outputs[i] if i < len(node.outputs) else None
            outputs.append(_Output(saved.name if saved else str(output_type), output_type, saved.links if saved else []))
        node.outputs = outputs
        self.warn(node.id, node.type, "legacy group node: expanded as the editor's group node code does; "
                  "prefer converting it to a subgraph in the editor")

    # -- subgraph widgets and legacy primitives ------------------------------------------
    def _promote(self, instance: _Node) -> None:
        """A subgraph instance's widgets: each input wired to a widget inside shows that widget
        (a copy with the inner value), then the instance's widgets_values apply."""
        if id(instance) in self._promoted:
            return
        self._promoted.add(id(instance))
        graph = instance.subgraph
        assert graph is not None
        widgets: list[_Widget] = []
        for slot, definition in zip(instance.inputs, graph.inputs):
            for link_id in _list(definition.get("linkIds")):
                link = graph.links.get(_int(link_id, -1))
                target = graph.nodes.get(link.target_id) if link else None
                if link is None or target is None:
                    continue
                index = target.input_index(link.id)
                if index is None:
                    continue
                if target.kind == "subgraph":
                    self._promote(target)
                inner = target.widget(target.inputs[index].widget)
                if inner is None:
                    continue
                slot.widget = slot.name
                widgets.append(_Widget(slot.name, inner.value, saved=inner.saved, sent=inner.sent,
                                       input_type=inner.input_type))
                break
        instance.widgets = widgets
        _assign_values(instance.label(), widgets, instance.raw.get("widgets_values"), [])

    def _all_nodes(self, graph: _Graph) -> Iterator[_Node]:
        """Every node as the editor's collectAllNodes lists them: a subgraph's nodes before
        its instance, repeated per instance."""
        for node in graph.nodes.values():
            if node.kind == "subgraph" and node.subgraph is not None and node.subgraph is not graph:
                yield from self._all_nodes(node.subgraph)
            yield node

    def every_node(self) -> list[_Node]:
        if self._every_node is None:
            nodes: list[_Node] = []
            for node in self._all_nodes(self.root):
                nodes.append(node)
                if len(nodes) > MAX_EXPANDED_NODES:
                    raise self.fail(None, f"its subgraphs expand to more than {MAX_EXPANDED_NODES} nodes")
            self._every_node = nodes
        return self._every_node

    def _apply_primitives(self, graph: _Graph, seen: set[str]) -> None:
        """Legacy PrimitiveNode (the editor's applyToGraph): its value is copied into every
        widget it is wired to, over whatever value that widget had saved."""
        if graph.id in seen:
            return
        seen.add(str(graph.id))
        for node in self._execution_order(graph):
            if node.kind == "subgraph" and node.subgraph is not None:
                self._apply_primitives(node.subgraph, seen)
            if node.kind != "primitive" or not node.widgets or not node.outputs:
                continue
            value = node.widgets[0].value
            if value and node.properties.get(REPLACE_PROPERTY) and isinstance(value, str):
                value = self._replace_tokens(value, node)
            for link_id in node.outputs[0].links:
                link = graph.links.get(link_id)
                target = graph.nodes.get(link.target_id) if link else None
                if link is None or target is None:
                    continue
                index = target.input_index(link.id)
                if index is None:
                    # A stale link: the editor follows its recorded slot number.
                    index = link.target_slot if 0 <= link.target_slot < len(target.inputs) else None
                if index is None:
                    continue
                widget = target.widget(target.inputs[index].widget)
                if widget is not None:
                    widget.value = value

    @staticmethod
    def _execution_order(graph: _Graph) -> list[_Node]:
        """The order the editor walks a graph in: its saved execution order, then file order."""
        nodes = list(graph.nodes.values())
        position = {id(node): i for i, node in enumerate(nodes)}
        return sorted(nodes, key=lambda n: (_int(n.raw.get("order"), len(nodes)), position[id(n)]))

    # -- filename tokens and widget values -----------------------------------------------
    def _replace_tokens(self, value: str, owner: _Node) -> str:
        """%date:...% and %Node name or title.widget% as the editor's applyTextReplacements."""
        all_nodes = self.every_node()

        def replace(match: re.Match[str]) -> str:
            text = match.group(1)
            parts = text.split(".")
            if len(parts) != 2:
                if parts[0].startswith("date:"):
                    self.uses_clock = True
                    self.warn(owner.id, owner.type,
                              f"%{text}% was filled in with the conversion time (UTC), not the editor's local time")
                    return _format_date(parts[0][5:], self.now)
                return match.group(0)
            name, widget_name = parts
            nodes = [n for n in all_nodes if n.properties.get(S_AND_R) == name]
            if not nodes:
                nodes = [n for n in all_nodes if n.title == name]
            if not nodes:
                self.warn(owner.id, owner.type, f"%{text}% names no node; left as written")
                return match.group(0)
            widget = nodes[0].widget(widget_name)
            if widget is None:
                self.warn(owner.id, owner.type, f"%{text}%: node has no widget '{widget_name}'; left as written")
                return match.group(0)
            return FILENAME_UNSAFE.sub("_", _js_str(widget.value))

        return TOKEN.sub(replace, value)

    def _sent_value(self, dto: _Dto, widget: _Widget) -> Any:
        value = widget.value
        if widget.role == "dynamic_prompt" and isinstance(value, str):
            processed, random_choice = _dynamic_prompt(value)
            if random_choice:
                self.warn(dto.id, dto.node.type,
                          f"'{widget.name}' uses the editor's {{a|b}} random choice syntax; sent as written")
            else:
                value = processed
        elif widget.role == "filename_prefix" and isinstance(value, str):
            value = self._replace_tokens(value, dto.node)
        if isinstance(value, list):
            return {"__value__": value}
        return value

    # -- flattening (subgraphs, group nodes) ---------------------------------------------
    def _add(self, dto: _Dto) -> None:
        self.dtos[dto.id] = dto
        if len(self.dtos) > MAX_EXPANDED_NODES:
            raise self.fail(None, f"its subgraphs expand to more than {MAX_EXPANDED_NODES} nodes")

    def _flatten(self) -> None:
        for node in self._execution_order(self.root):
            if node.kind == "subgraph":
                self._inner_nodes(node, (), None, set())
                self._add(_Dto(node, ()))
            elif node.kind == "group":
                self._add(_Dto(node, ()))
                for child in self._group_children(node, ()):
                    self._add(child)
            else:
                self._add(_Dto(node, ()))

    def _inner_nodes(self, instance: _Node, path: tuple[str, ...], parent: _Node | None,
                     visited: set[str]) -> None:
        graph = instance.subgraph
        assert graph is not None
        if graph.id in visited:
            raise self.fail(_Dto(instance, path), f"subgraph '{graph.name}' contains itself")
        visited = visited | {str(graph.id)}
        self._promote(instance)
        self._add(_Dto(instance, path, parent))
        inner_path = (*path, instance.id)
        for node in graph.nodes.values():
            if node.kind == "subgraph":
                self._inner_nodes(node, inner_path, instance, visited)
            elif node.kind == "group":
                for child in self._group_children(node, inner_path):
                    self._add(child)
            else:
                self._add(_Dto(node, inner_path, instance))

    def _group_children(self, node: _Node, path: tuple[str, ...]) -> list[_Dto]:
        group = node.group
        assert group is not None
        if node.children is None:
            children = [self._node(node.graph, raw, group_index=i) for i, raw in enumerate(group.nodes)]
            for child in children:
                child.properties.setdefault(S_AND_R, child.type)
            # The group node's widget values go to the widgets they stand for.
            for name, (index, input_name) in group.new_to_old_widget.items():
                widget = node.widget(name)
                if widget is None or not 0 <= index < len(children):
                    continue
                inner = children[index]
                if inner.type == PRIMITIVE:
                    for target, target_input in group.primitive_to_widget.get(index, []):
                        target_widget = children[target].widget(target_input) if 0 <= target < len(children) else None
                        if target_widget is not None:
                            target_widget.value = widget.value
                    continue
                inner_widget = inner.widget(input_name)
                if inner_widget is not None:
                    inner_widget.value = widget.value
            node.children = children
        return [_Dto(child, (*path, node.id), group_child=True) for child in node.children]

    # -- link resolution (ExecutableNodeDTO.resolveInput / resolveOutput) ----------------
    def resolve_input(self, dto: _Dto, slot: int, visited: set[tuple[Any, ...]],
                      slot_type: Any = None) -> _Resolved | None:
        if dto.group_child:
            return self._group_child_input(dto, slot)
        key = (dto.subgraph_node.subgraph.id if dto.subgraph_node and dto.subgraph_node.subgraph else None,
               dto.node.id, "I", slot)
        if key in visited:
            raise self.fail(dto, f"its input {slot} is part of a loop of links")
        visited.add(key)
        if not 0 <= slot < len(dto.inputs):
            raise self.fail(dto, f"it has no input {slot}")
        item = dto.inputs[slot]
        if item.link is None:
            return None
        link = dto.node.graph.links.get(item.link)
        if link is None:
            raise self.fail(dto, f"input '{item.name}' is wired to link {item.link}, which the workflow does not have")
        instance = dto.subgraph_node
        if instance is not None and link.origin_id == str(SUBGRAPH_INPUT_ID):
            if not 0 <= link.origin_slot < len(instance.inputs):
                raise self.fail(dto, f"input '{item.name}' comes from subgraph input {link.origin_slot}, which is missing")
            outer = instance.inputs[link.origin_slot]
            if outer.link is None:
                widget = instance.widget(outer.widget)
                return None if widget is None else _Resolved(dto.id, -1, widget.value)
            outer_link = instance.graph.links.get(outer.link)
            if outer_link is None:
                raise self.fail(dto, f"subgraph input '{outer.name}' is wired to a link the workflow does not have")
            instance_dto = self.dtos.get(":".join(dto.path))
            if instance_dto is None:
                raise self.fail(dto, "its subgraph instance is missing")
            return self.resolve_input(instance_dto, link.origin_slot, visited)
        origin = dto.node.graph.nodes.get(link.origin_id)
        if origin is None:
            raise self.fail(dto, f"input '{item.name}' is wired to node {link.origin_id}, which the workflow does not have")
        origin_dto = self.dtos.get(":".join((*dto.path, origin.id)))
        if origin_dto is None:
            raise self.fail(dto, f"input '{item.name}' comes from node {origin.id}, which cannot be reached")
        return self.resolve_output(origin_dto, link.origin_slot, slot_type if slot_type is not None else item.type, visited)

    def resolve_output(self, dto: _Dto, slot: int, slot_type: Any,
                       visited: set[tuple[Any, ...]]) -> _Resolved | None:
        node = dto.node
        key = (dto.subgraph_node.subgraph.id if dto.subgraph_node and dto.subgraph_node.subgraph else None,
               node.id, "O", slot)
        if key in visited:
            raise self.fail(dto, f"its output {slot} is part of a loop of links")
        visited.add(key)
        if node.kind == "group":
            return self._group_output(dto, slot, slot_type, visited)
        if dto.mode == MODE_BYPASS:
            index = self._bypass_slot(dto, slot, slot_type)
            if index == -1:
                self.warn(dto.id, node.type, f"bypassed, and no input matches type {slot_type}: "
                          "inputs it feeds are left out")
                return None
            return self.resolve_input(dto, index, visited)
        if node.kind == "subgraph":
            return self._subgraph_output(dto, slot, slot_type, visited)
        if node.virtual:  # a reroute passes its input on; a primitive or note has none
            if 0 <= slot < len(dto.inputs):
                return self.resolve_input(dto, slot, visited, slot_type)
            return None
        return _Resolved(dto.id, slot)

    def _bypass_slot(self, dto: _Dto, slot: int, slot_type: Any) -> int:
        """The input a bypassed node passes on for output `slot`: the same slot number if its
        type fits, else the first input of exactly that type, else the first that fits."""
        inputs = dto.inputs
        if not 0 <= slot < len(dto.node.outputs):
            raise self.fail(dto, f"it has no output {slot}")
        output_type = dto.node.outputs[slot].type
        if slot_type in ("*", ""):
            return slot if len(inputs) > slot else 0
        if slot < len(inputs) and _is_valid_connection(inputs[slot].type, output_type) \
                and _is_valid_connection(inputs[slot].type, slot_type):
            return slot
        exact = next((i for i, item in enumerate(inputs) if item.type == slot_type), -1)
        if exact != -1:
            return exact
        return next((i for i, item in enumerate(inputs) if _is_valid_connection(item.type, output_type)
                     and _is_valid_connection(item.type, slot_type)), -1)

    def _subgraph_output(self, dto: _Dto, slot: int, slot_type: Any,
                         visited: set[tuple[Any, ...]]) -> _Resolved | None:
        graph = dto.node.subgraph
        assert graph is not None
        if not 0 <= slot < len(graph.outputs):
            raise self.fail(dto, f"it has no output {slot}")
        link_ids = [_int(i, -1) for i in _list(graph.outputs[slot].get("linkIds"))]
        link = next((graph.links[i] for i in link_ids if i in graph.links), None)
        if link is None:
            return None
        inner = graph.nodes.get(link.origin_id)
        if inner is None:
            raise self.fail(dto, f"subgraph output {slot} comes from node {link.origin_id}, which the subgraph does not have")
        inner_dto = self.dtos.get(":".join((*dto.path, dto.node.id, inner.id)))
        if inner_dto is None:
            raise self.fail(dto, f"subgraph output {slot} cannot be reached")
        return self.resolve_output(inner_dto, link.origin_slot, slot_type, visited)

    def _group_output(self, dto: _Dto, slot: int, slot_type: Any,
                      visited: set[tuple[Any, ...]]) -> _Resolved | None:
        node, group = dto.node, dto.node.group
        assert group is not None
        if dto.mode == MODE_BYPASS:
            for index in (slot, *range(len(dto.inputs))):
                if 0 <= index < len(dto.inputs) and dto.inputs[index].type == slot_type:
                    return self.resolve_input(dto, index, visited)
            return None
        if slot not in group.new_to_old_output:
            raise self.fail(dto, f"legacy group node has no output {slot}")
        index, output_slot = group.new_to_old_output[slot]
        children = node.children or []
        origin_slot: int | None = None
        # Reroutes inside the group are followed to what feeds them.
        while 0 <= index < len(children) and children[index].type == REROUTE:
            link = group.links_to.get(index, {}).get(0)
            if link is None:
                return None
            index, origin_slot = _int(link[0], -1), _int(link[1])
        if not 0 <= index < len(children):
            return None
        return _Resolved(f"{dto.id}:{index}", origin_slot if origin_slot is not None else output_slot)

    def _group_child_input(self, dto: _Dto, slot: int) -> _Resolved | None:
        if len(dto.path) > 1:
            raise self.fail(dto, "a legacy group node inside a subgraph: convert it to a subgraph in the editor")
        group_node = self.root.nodes.get(dto.path[-1])
        assert group_node is not None and group_node.group is not None
        group = group_node.group
        index = dto.node.index
        external = group.input_map.get(index, {}).get(slot)
        if external is not None:
            outer = next((item for item in group_node.inputs if item.name == external), None)
            if outer is None or outer.link is None:
                return None
            link = group_node.graph.links.get(outer.link)
            if link is None or link.origin_id not in group_node.graph.nodes:
                raise self.fail(dto, f"group input '{external}' is wired to a link the workflow does not have")
            # The editor takes the node wired to the group as is (no reroute or bypass followed).
            return _Resolved(link.origin_id, link.origin_slot)
        inner = group.links_to.get(index, {}).get(slot)
        if inner is None:
            return None
        origin = _int(inner[0], -1)
        if not 0 <= origin < len(group.nodes) or group.nodes[origin].get("type") == PRIMITIVE:
            return None  # a primitive's value is already in the widget
        return _Resolved(f"{dto.path[-1]}:{origin}", _int(inner[1]))

    # -- graphToPrompt --------------------------------------------------------------------
    def run(self) -> Prompt:
        self._check_subgraphs(self.root, ())
        for graph in (self.root, *self.graphs.values()):
            for node in graph.nodes.values():
                if node.kind == "subgraph":
                    self._promote(node)
        self._apply_primitives(self.root, set())
        self._flatten()
        output: Prompt = {}
        for dto in self.dtos.values():
            node = dto.node
            if node.virtual or node.mode in (MODE_NEVER, MODE_BYPASS):
                if node.kind == "unknown" and node.mode in (MODE_NEVER, MODE_BYPASS):
                    self.warn(dto.id, node.type, "type not installed on this backend; left out (muted or bypassed)")
                continue
            if node.kind == "unknown":
                raise self.fail(dto, f"node type '{node.type}' is not installed on this ComfyUI backend "
                                "(or is an editor-only node of a custom extension)")
            inputs: dict[str, Any] = {}
            for widget in node.widgets:
                if not widget.name or not widget.sent:
                    continue
                if widget.role == "computed":
                    kind = EDITOR_COMPUTED_WIDGETS.get(widget.input_type, "a value the editor computes")
                    raise self.fail(dto, f"input '{widget.name}' is {kind} when the prompt is queued")
                value = self._sent_value(dto, widget)
                if value is not _MISSING:
                    inputs[widget.name] = value
            for slot, item in enumerate(node.inputs):
                resolved = self.resolve_input(dto, slot, set())
                if resolved is None:
                    continue
                if resolved.widget_value is not _MISSING:
                    value = resolved.widget_value
                    inputs[item.name] = {"__value__": value} if isinstance(value, list) else value
                    continue
                inputs[item.name] = [str(resolved.origin_id), int(resolved.origin_slot)]
            output[dto.id] = {"inputs": inputs, "class_type": node.type, "_meta": {"title": node.title}}
        # Inputs whose source is not in the prompt (muted, or an editor-only node) are dropped.
        for node_id, entry in output.items():
            for name, value in list(entry["inputs"].items()):
                if isinstance(value, list) and len(value) == 2 and value[0] not in output:
                    del entry["inputs"][name]
                    self.warn(node_id, entry["class_type"], f"input '{name}' comes from node {value[0]}, "
                              "which is muted or left out; the input is dropped")
        return _js_key_order(output)

    def _check_subgraphs(self, graph: _Graph, stack: tuple[str, ...]) -> None:
        for node in graph.nodes.values():
            if node.kind == "subgraph" and node.subgraph is not None:
                sub_id = str(node.subgraph.id)
                if sub_id in stack:
                    raise self.fail(node, f"subgraph '{node.subgraph.name}' contains itself")
                self._check_subgraphs(node.subgraph, (*stack, sub_id))

