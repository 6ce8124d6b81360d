"""UI-format workflows to API prompts, as ComfyUI's editor (frontend 1.27.10) converts them.

Ground truth: the pairs in tests/fixtures/comfyui/ui2api/, made by the real editor (Save,
Export and its own graphToPrompt), each converted against the recorded GET /object_info.
The rules no pair shows are checked on graphs built like the editor saves them
(tests/support/ui_graph.py), with the editor's observed behaviour stated in each test.
"""

from __future__ import annotations

import copy
import datetime
import json
from pathlib import Path
from typing import Any

import pytest

from comfy_core.workflows.convert import MAX_EXPANDED_NODES, convert, is_ui_format, ui_to_api
from comfy_core.errors import WorkflowConversionError, WorkflowFormatError
from tests.support.recordings import RECORDINGS, recording
from tests.support.ui_graph import UiGraph

PAIRS = RECORDINGS / "ui2api"
PAIR_NAMES = sorted(path.name[: -len(".api.json")] for path in PAIRS.glob("*.api.json"))
MUTED, BYPASSED = 2, 4


@pytest.fixture(scope="module")
def object_info() -> dict[str, Any]:
    return recording("object_info_full")


def load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def graph(object_info: dict[str, Any]) -> UiGraph:
    return UiGraph(object_info)


def inputs_of(prompt: dict[str, Any], node_id: Any) -> dict[str, Any]:
    return prompt[str(node_id)]["inputs"]


# -- the editor's own conversions -----------------------------------------------------------------
def test_every_pair_file_is_converted_by_a_test() -> None:
    """Each pair is a ui.json, an export.json and the api.json both must become."""
    files = {path.name for path in PAIRS.glob("*.json")}
    expected = {f"{name}.{form}.json" for name in PAIR_NAMES for form in ("ui", "export", "api")}
    assert len(PAIR_NAMES) == 12
    assert files == expected


@pytest.mark.parametrize("form", ["ui", "export"])
@pytest.mark.parametrize("pair", PAIR_NAMES)
def test_pair_converts_to_the_editors_prompt(object_info: dict[str, Any], pair: str, form: str) -> None:
    expected = load(PAIRS / f"{pair}.api.json")
    prompt, warnings = ui_to_api(load(PAIRS / f"{pair}.{form}.json"), object_info)
    assert prompt == expected  # node ids, class types, inputs and _meta titles
    # ... and in the editor's order: its prompt is a JavaScript object ("1" < "5" < "6:3").
    assert list(prompt) == list(expected)
    assert {k: list(v["inputs"]) for k, v in prompt.items()} == {k: list(v["inputs"]) for k, v in expected.items()}
    assert warnings == []


def test_the_converter_leaves_its_input_untouched(object_info: dict[str, Any]) -> None:
    document = load(PAIRS / "09_subgraph.ui.json")
    before = copy.deepcopy(document)
    ui_to_api(document, object_info)
    assert document == before


# -- format detection ---------------------------------------------------------------------------
@pytest.mark.parametrize(("document", "expected"), [
    ({"nodes": [], "links": []}, True),
    ({"nodes": [{"id": 1, "type": "EmptyImage"}], "links": [], "version": 0.4}, True),
    ({"1": {"class_type": "EmptyImage", "inputs": {}}}, False),
    ({"prompt": {"1": {"class_type": "EmptyImage", "inputs": {}}}}, False),
    ({"nodes": {}, "links": []}, False),
    ({"nodes": []}, False),
    ([], False),
    (None, False),
])
def test_is_ui_format(document: Any, expected: bool) -> None:
    assert is_ui_format(document) is expected


def test_a_document_that_is_no_ui_workflow_is_a_422(object_info: dict[str, Any]) -> None:
    with pytest.raises(WorkflowConversionError) as caught:
        ui_to_api({"1": {"class_type": "EmptyImage"}}, object_info)
    assert caught.value.status_code == 422
    assert isinstance(caught.value, WorkflowFormatError)


# -- what cannot be converted -------------------------------------------------------------------------
def test_unknown_node_type_is_a_422_naming_the_node(object_info: dict[str, Any]) -> None:
    g = graph(object_info)
    image = g.node("EmptyImage")
    save = g.node("SaveImage")
    g.link(image, 0, save, "images")
    document = g.document()
    document["nodes"][0]["type"] = "FancyCustomNode"
    with pytest.raises(WorkflowConversionError) as caught:
        ui_to_api(document, object_info)
    error = caught.value
    assert error.status_code == 422
    assert error.extra == {"node_id": "1", "node_type": "FancyCustomNode", "reason": error.extra["reason"]}
    assert "not installed" in error.extra["reason"]
    assert "Node 1 (FancyCustomNode)" in error.message


def test_unknown_type_in_a_muted_node_is_only_a_warning(object_info: dict[str, Any]) -> None:
    g = graph(object_info)
    image = g.node("EmptyImage")
    save = g.node("SaveImage")
    g.link(image, 0, save, "images")
    muted = g.node("PreviewImage", mode=MUTED)
    g.link(image, 0, muted, "images")
    document = g.document()
    document["nodes"][2]["type"] = "GoneNode"
    prompt, warnings = ui_to_api(document, object_info)
    assert set(prompt) == {"1", "2"}
    assert any("GoneNode" in w for w in warnings)


def test_a_node_the_browser_computes_is_a_422(object_info: dict[str, Any]) -> None:
    g = graph(object_info)
    camera = g.node("WebcamCapture")
    save = g.node("SaveImage")
    g.link(camera, 0, save, "images")
    with pytest.raises(WorkflowConversionError) as caught:
        ui_to_api(g.document(), object_info)
    assert caught.value.extra["node_id"] == "1"
    assert "webcam" in caught.value.extra["reason"]


def test_a_link_to_a_node_that_is_not_there_is_a_422(object_info: dict[str, Any]) -> None:
    g = graph(object_info)
    image = g.node("EmptyImage")
    save = g.node("SaveImage")
    g.link(image, 0, save, "images")
    document = g.document()
    document["nodes"] = [n for n in document["nodes"] if n["id"] != image]
    with pytest.raises(WorkflowConversionError) as caught:
        ui_to_api(document, object_info)
    assert caught.value.extra["node_id"] == "2"
    assert "node 1" in caught.value.extra["reason"]


@pytest.mark.parametrize("damage", [
    lambda d: d["nodes"][0].update(inputs=5),
    lambda d: d["nodes"][0].update(outputs="x"),
    lambda d: d["nodes"][1].update(widgets_values=7),
    lambda d: d["nodes"].append({"type": "EmptyImage"}),
    lambda d: d["nodes"].append(3),
    lambda d: d["links"].append(["a", None, {}, [], 1.5, 0]),
    lambda d: d.update(definitions={"subgraphs": [{"id": 4}, "x"]}),
    lambda d: d.update(extra={"groupNodes": {"g": {"nodes": 5, "links": "x"}}}),
])
def test_a_damaged_document_is_refused_or_converted_never_a_crash(object_info: dict[str, Any], damage: Any) -> None:
    g = graph(object_info)
    image = g.node("EmptyImage")
    save = g.node("SaveImage")
    g.link(image, 0, save, "images")
    document = g.document()
    damage(document)
    try:
        ui_to_api(document, object_info)
    except WorkflowConversionError as error:
        assert error.status_code == 422


def test_subgraphs_that_expand_without_bound_are_refused(object_info: dict[str, Any]) -> None:
    """Each level holds ten instances of the one below: 10**5 nodes from a tiny file."""
    g = graph(object_info)
    inner = graph(object_info)
    inner.node("PreviewImage")
    below = g.subgraph(inner, "level0", "level0", [], [])
    for level in range(1, 5):
        middle = graph(object_info)
        middle.subgraphs = copy.deepcopy(g.subgraphs)
        for _ in range(10):
            middle.instance(below)
        below = g.subgraph(middle, f"level{level}", f"level{level}", [], [])
    g.instance(below)
    with pytest.raises(WorkflowConversionError, match=str(MAX_EXPANDED_NODES)):
        ui_to_api(g.document(), object_info)


# -- widgets ------------------------------------------------------------------------------------------
def test_seed_control_and_upload_entries_are_skipped(object_info: dict[str, Any]) -> None:
    """widgets_values has the control value after a seed and LoadImage's upload entry; the
    editor saves them and sends neither."""
    g = graph(object_info)
    load_image = g.node("LoadImage", {"image": "cat.png"})
    noise = g.node("ImageAddNoise", {"seed": 77, "strength": 0.3}, controls={"seed": "increment"})
    save = g.node("SaveImage", {"filename_prefix": "x"})
    g.link(load_image, 0, noise, "image")
    g.link(noise, 0, save, "images")
    prompt, _ = ui_to_api(g.document(), object_info)
    assert inputs_of(prompt, load_image) == {"image": "cat.png"}
    assert inputs_of(prompt, noise) == {"seed": 77, "strength": 0.3, "image": ["1", 0]}


def test_missing_saved_values_take_the_definitions_defaults(object_info: dict[str, Any]) -> None:
    g = graph(object_info)
    image = g.node("EmptyImage")
    save = g.node("SaveImage")
    g.link(image, 0, save, "images")
    document = g.document()
    document["nodes"][0]["widgets_values"] = [32]  # saved before the other inputs existed
    prompt, warnings = ui_to_api(document, object_info)
    assert inputs_of(prompt, image) == {"width": 32, "height": 512, "batch_size": 1, "color": 0}
    assert any("height" in w and "default" in w for w in warnings)


def test_widgets_values_saved_as_a_mapping_are_read_by_name(object_info: dict[str, Any]) -> None:
    g = graph(object_info)
    image = g.node("EmptyImage")
    save = g.node("SaveImage")
    g.link(image, 0, save, "images")
    document = g.document()
    document["nodes"][0]["widgets_values"] = {"height": 20, "width": 10}
    prompt, warnings = ui_to_api(document, object_info)
    assert inputs_of(prompt, image)["width"] == 10 and inputs_of(prompt, image)["height"] == 20
    assert any("mapping" in w for w in warnings)


def test_a_widget_fed_by_a_link_sends_the_link_in_its_place(object_info: dict[str, Any]) -> None:
    g = graph(object_info)
    number = g.node("PrimitiveInt", {"value": 40})
    image = g.node("EmptyImage", {"width": 999})
    save = g.node("SaveImage")
    g.link(number, 0, image, "width")
    g.link(image, 0, save, "images")
    prompt, _ = ui_to_api(g.document("export"), object_info)
    assert inputs_of(prompt, image) == {"width": ["1", 0], "height": 512, "batch_size": 1, "color": 0}


def test_links_are_found_by_id_and_input_name_not_by_slot(object_info: dict[str, Any]) -> None:
    g = graph(object_info)
    first = g.node("EmptyImage", {"width": 1})
    second = g.node("EmptyImage", {"width": 2})
    blend = g.node("ImageBlend")
    save = g.node("SaveImage")
    g.link(first, 0, blend, "image1")
    g.link(second, 0, blend, "image2")
    g.link(blend, 0, save, "images")
    document = g.document()
    for link in document["links"]:
        link[4] = 7 - link[4]  # nonsense slot numbers
    prompt, _ = ui_to_api(document, object_info)
    assert inputs_of(prompt, blend)["image1"] == ["1", 0]
    assert inputs_of(prompt, blend)["image2"] == ["2", 0]


def test_optional_inputs_left_empty_are_absent(object_info: dict[str, Any]) -> None:
    g = graph(object_info)
    text = g.node("PrimitiveStringMultiline", {"value": "abc"})
    regex = g.node("RegexReplace", {"regex_pattern": "b", "replace": "x"})
    show = g.node("PreviewAny")
    g.link(text, 0, regex, "string")
    g.link(regex, 0, show, "source")
    prompt, _ = ui_to_api(g.document(), object_info)
    assert inputs_of(prompt, regex) == {"string": ["1", 0], "regex_pattern": "b", "replace": "x",
                                        "case_insensitive": True, "multiline": False, "dotall": False, "count": 0}
    assert inputs_of(prompt, show) == {"preview": "", "source": ["2", 0]}


# -- dynamic prompts ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "sent", "warned"), [
    ("a cat on a mat", "a cat on a mat", False),
    ("a cat // the subject\non a mat /* where */!", "a cat \non a mat !", False),
    ("a {red} car", "a red car", False),
    ("a \\{red\\} car", "a {red} car", False),
    ("a {red|blue} car", "a {red|blue} car", True),
    ("a {big {red|blue}} car", "a {big {red|blue}} car", True),
])
def test_dynamic_prompt_text_is_sent_as_the_editor_sends_it(
    object_info: dict[str, Any], text: str, sent: str, warned: bool
) -> None:
    """CLIPTextEncode's text strips // and /* */ comments; a {a|b} choice the editor makes
    at random on each run cannot be reproduced, so the text goes as written, with a warning."""
    g = graph(object_info)
    encode = g.node("CLIPTextEncode", {"text": text})
    prompt, warnings = ui_to_api(g.document(), object_info)
    assert inputs_of(prompt, encode)["text"] == sent
    assert any("{a|b}" in w for w in warnings) is warned


# -- filename tokens -------------------------------------------------------------------------------------
NOW = datetime.datetime(2026, 12, 1, 9, 5, 7, tzinfo=datetime.timezone.utc)


def test_filename_prefix_tokens_are_filled_in(object_info: dict[str, Any]) -> None:
    g = graph(object_info)
    image = g.node("EmptyImage", {"width": 64, "height": 48})
    canvas = g.node("EmptyImage", {"width": 8, "height": 9}, title="Canvas")
    text = g.node("PrimitiveStringMultiline", {"value": 'a/b:c*"d'})
    save = g.node("SaveImage", {"filename_prefix":
                                "%EmptyImage.width%x%Canvas.height%/%date:yyyy-MM-dd_hh%/%PrimitiveStringMultiline.value%_%width%"})
    g.link(image, 0, save, "images")
    show = g.node("PreviewAny")
    g.link(text, 0, show, "source")
    g.link(canvas, 0, g.node("PreviewImage"), "images")
    conversion = convert(g.document(), object_info, now=NOW)
    # The first node named EmptyImage (its S&R name) wins; then titles; values made safe for a
    # file name; %width% is left for ComfyUI.
    assert inputs_of(conversion.prompt, save)["filename_prefix"] == "64x9/2026-12-01_09/a_b_c__d_%width%"
    assert conversion.uses_clock
    assert any("UTC" in w for w in conversion.warnings)


def test_a_token_naming_no_node_is_left_as_written(object_info: dict[str, Any]) -> None:
    g = graph(object_info)
    image = g.node("EmptyImage")
    save = g.node("SaveImage", {"filename_prefix": "%Nothing.width%_%EmptyImage.depth%"})
    g.link(image, 0, save, "images")
    conversion = convert(g.document(), object_info)
    assert inputs_of(conversion.prompt, save)["filename_prefix"] == "%Nothing.width%_%EmptyImage.depth%"
    assert not conversion.uses_clock
    assert len(conversion.warnings) == 2


def test_a_token_reads_the_value_a_legacy_primitive_gave(object_info: dict[str, Any]) -> None:
    g = graph(object_info)
    image = g.node("EmptyImage", {"width": 10})
    g.primitive(300, [(image, "width")])
    save = g.node("SaveImage", {"filename_prefix": "w%EmptyImage.width%"})
    g.link(image, 0, save, "images")
    prompt, _ = ui_to_api(g.document(), object_info)
    assert inputs_of(prompt, save)["filename_prefix"] == "w300"


# -- links through reroutes, bypassed and muted nodes ---------------------------------------------------
def test_reroutes_are_followed_whatever_their_mode(object_info: dict[str, Any]) -> None:
    g = graph(object_info)
    image = g.node("EmptyImage")
    first, second, third = g.reroute(), g.reroute(mode=MUTED), g.reroute(mode=BYPASSED)
    save = g.node("SaveImage")
    g.link(image, 0, first)
    g.link(first, 0, second)
    g.link(second, 0, third)
    g.link(third, 0, save, "images")
    prompt, _ = ui_to_api(g.document(), object_info)
    assert set(prompt) == {"1", "5"}
    assert inputs_of(prompt, save)["images"] == ["1", 0]


def test_bypass_passes_on_the_input_of_the_same_slot(object_info: dict[str, Any]) -> None:
    """ControlNetApplyAdvanced bypassed: its output 1 (negative) carries its input 1, not the
    first CONDITIONING input."""
    g = graph(object_info)
    positive = g.node("CLIPTextEncode", {"text": "yes"})
    negative = g.node("CLIPTextEncode", {"text": "no"})
    control = g.node("ControlNetApplyAdvanced", mode=BYPASSED)
    combine = g.node("ConditioningCombine")
    g.link(positive, 0, control, "positive")
    g.link(negative, 0, control, "negative")
    g.link(control, 1, combine, "conditioning_1")
    g.link(control, 0, combine, "conditioning_2")
    prompt, _ = ui_to_api(g.document(), object_info)
    assert str(control) not in prompt
    assert inputs_of(prompt, combine) == {"conditioning_1": ["2", 0], "conditioning_2": ["1", 0]}


def test_bypass_falls_back_to_the_first_input_of_that_type(object_info: dict[str, Any]) -> None:
    """ImageUpscaleWithModel bypassed: its input 0 is the model, so its image input goes on."""
    g = graph(object_info)
    image = g.node("EmptyImage")
    upscale = g.node("ImageUpscaleWithModel", mode=BYPASSED)
    save = g.node("SaveImage")
    g.link(image, 0, upscale, "image")
    g.link(upscale, 0, save, "images")
    prompt, _ = ui_to_api(g.document("export"), object_info)
    assert inputs_of(prompt, save)["images"] == ["1", 0]


def test_bypass_without_a_matching_input_leaves_the_input_out(object_info: dict[str, Any]) -> None:
    g = graph(object_info)
    decode = g.node("VAEDecode", mode=BYPASSED)
    save = g.node("SaveImage")
    g.link(decode, 0, save, "images")
    prompt, warnings = ui_to_api(g.document(), object_info)
    assert inputs_of(prompt, save) == {"filename_prefix": "ComfyUI"}
    assert any("bypassed" in w for w in warnings)


def test_an_input_whose_source_is_muted_is_deleted_not_rewired(object_info: dict[str, Any]) -> None:
    g = graph(object_info)
    image = g.node("EmptyImage")
    invert = g.node("ImageInvert", mode=MUTED)
    save = g.node("SaveImage")
    g.link(image, 0, invert, "image")
    g.link(invert, 0, save, "images")
    prompt, warnings = ui_to_api(g.document(), object_info)
    assert set(prompt) == {"1", "3"}
    assert inputs_of(prompt, save) == {"filename_prefix": "ComfyUI"}
    assert any("muted" in w for w in warnings)


def test_notes_and_primitives_never_reach_the_prompt(object_info: dict[str, Any]) -> None:
    g = graph(object_info)
    g.note("plain")
    g.note("**markdown**", markdown=True)
    image = g.node("EmptyImage", {"height": 1})
    g.primitive(77, [(image, "height")], title="size", mode=MUTED)
    save = g.node("SaveImage")
    g.link(image, 0, save, "images")
    prompt, _ = ui_to_api(g.document(), object_info)
    assert list(prompt) == [str(image), str(save)]
    # A legacy primitive copies its value into the widget, muted or not, over the stale one.
    assert inputs_of(prompt, image)["height"] == 77


# -- subgraphs --------------------------------------------------------------------------------------
def blur_invert(object_info: dict[str, Any], g: UiGraph, subgraph_id: str = "blur-invert",
                blur_mode: int = 0) -> str:
    inner = graph(object_info)
    blur = inner.node("ImageBlur", {"blur_radius": 4, "sigma": 2}, mode=blur_mode, node_id=3)
    invert = inner.node("ImageInvert", node_id=4)
    inner.link(blur, 0, invert, "image")
    return g.subgraph(inner, "Blur+Invert", subgraph_id,
                      [("image", "IMAGE", [(blur, "image")]), ("blur_radius", "INT", [(blur, "blur_radius")])],
                      [("IMAGE", "IMAGE", (invert, 0))])


def test_subgraph_inputs_take_the_outer_link_or_the_instances_widget(object_info: dict[str, Any]) -> None:
    g = graph(object_info)
    definition = blur_invert(object_info, g)
    image = g.node("EmptyImage")
    radius = g.node("PrimitiveInt", {"value": 9})
    fed = g.instance(definition, [2])
    own = g.instance(definition, [5])
    g.link(image, 0, fed, "image")
    g.link(radius, 0, fed, "blur_radius")
    g.link(image, 0, own, "image")
    save = g.node("SaveImage")
    g.link(fed, 0, save, "images")
    preview = g.node("PreviewImage")
    g.link(own, 0, preview, "images")
    prompt, _ = ui_to_api(g.document(), object_info)
    assert inputs_of(prompt, f"{fed}:3") == {"blur_radius": ["2", 0], "sigma": 2, "image": ["1", 0]}
    assert inputs_of(prompt, f"{own}:3") == {"blur_radius": 5, "sigma": 2, "image": ["1", 0]}
    assert inputs_of(prompt, save)["images"] == [f"{fed}:4", 0]
    assert str(fed) not in prompt and str(own) not in prompt


def test_nested_subgraphs_get_ids_along_the_path(object_info: dict[str, Any]) -> None:
    g = graph(object_info)
    inner_definition = blur_invert(object_info, g)
    middle = graph(object_info)
    middle.subgraphs = copy.deepcopy(g.subgraphs)
    nested = middle.instance(inner_definition, [3], node_id=7)
    g.subgraph(middle, "Wrapper", "wrapper", [("image", "IMAGE", [(nested, "image")])], [("IMAGE", "IMAGE", (nested, 0))])
    image = g.node("EmptyImage")
    outer = g.instance("wrapper")
    save = g.node("SaveImage")
    g.link(image, 0, outer, "image")
    g.link(outer, 0, save, "images")
    prompt, _ = ui_to_api(g.document(), object_info)
    assert inputs_of(prompt, f"{outer}:7:3") == {"blur_radius": 3, "sigma": 2, "image": [str(image), 0]}
    assert inputs_of(prompt, f"{outer}:7:4") == {"image": [f"{outer}:7:3", 0]}
    assert inputs_of(prompt, save)["images"] == [f"{outer}:7:4", 0]


def test_a_mode_set_in_the_definition_applies_to_every_instance(object_info: dict[str, Any]) -> None:
    g = graph(object_info)
    definition = blur_invert(object_info, g, blur_mode=MUTED)
    image = g.node("EmptyImage")
    first, second = g.instance(definition), g.instance(definition)
    for instance in (first, second):
        g.link(image, 0, instance, "image")
        g.link(instance, 0, g.node("PreviewImage"), "images")
    prompt, _ = ui_to_api(g.document(), object_info)
    assert f"{first}:3" not in prompt and f"{second}:3" not in prompt
    assert inputs_of(prompt, f"{first}:4") == {} and inputs_of(prompt, f"{second}:4") == {}


def test_a_bypassed_instance_passes_its_input_on(object_info: dict[str, Any]) -> None:
    g = graph(object_info)
    definition = blur_invert(object_info, g)
    image = g.node("EmptyImage")
    instance = g.instance(definition, mode=BYPASSED)
    save = g.node("SaveImage")
    g.link(image, 0, instance, "image")
    g.link(instance, 0, save, "images")
    prompt, _ = ui_to_api(g.document("export"), object_info)
    assert inputs_of(prompt, save)["images"] == [str(image), 0]


def test_a_subgraph_that_contains_itself_is_a_422(object_info: dict[str, Any]) -> None:
    g = graph(object_info)
    g.subgraph(graph(object_info), "Loop", "loop", [], [])
    # The definition holds an instance of itself.
    g.subgraphs[0]["nodes"].append({"id": 9, "type": "loop", "mode": 0, "inputs": [], "outputs": []})
    g.instance("loop")
    with pytest.raises(WorkflowConversionError, match="contains itself"):
        ui_to_api(g.document(), object_info)


# -- legacy group nodes ------------------------------------------------------------------------------
def test_legacy_group_node_inner_nodes_are_numbered_after_the_group(object_info: dict[str, Any]) -> None:
    """A group node (extra.groupNodes, from before subgraphs): inner nodes `<id>:<index>`,
    the group's widget values going to the widgets they stand for."""
    g = graph(object_info)
    inner = graph(object_info)
    image = inner.node("EmptyImage", {"width": 16, "height": 16})
    invert = inner.node("ImageInvert")
    inner.link(image, 0, invert, "image")
    nodes = [{k: v for k, v in node.items() if k != "id"} | {"id": node["id"]} for node in inner.nodes]
    for node in nodes:  # saved like a clipboard copy: links by position
        for socket in node["inputs"]:
            socket["link"] = None
    g.extra["groupNodes"] = {"Pair": {"nodes": nodes, "links": [[0, 0, 1, 0, image, "IMAGE"]],
                                       "external": [[1, 0, "IMAGE"]]}}
    group = g._add({"type": "workflow>Pair", "mode": 0, "inputs": [],
                    "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": None}], "properties": {},
                    "widgets_values": [96, 48, 1, 255]}, 5)
    save = g.node("SaveImage")
    g.link(group, 0, save, "images")
    prompt, warnings = ui_to_api(g.document(), object_info)
    assert inputs_of(prompt, "5:0") == {"width": 96, "height": 48, "batch_size": 1, "color": 255}
    assert inputs_of(prompt, "5:1") == {"image": ["5:0", 0]}
    assert inputs_of(prompt, save)["images"] == ["5:1", 0]
    assert prompt["5:1"]["class_type"] == "ImageInvert"
    assert any("legacy group node" in w for w in warnings)


def test_js_key_order_puts_integer_ids_first() -> None:
    from comfy_core.workflows.convert import _js_key_order

    prompt = {"10": {}, "2:1": {}, "9": {}, "a": {}, "01": {}}
    assert list(_js_key_order(prompt)) == ["9", "10", "2:1", "a", "01"]
