"""Property tests of the UI-format converter: random model-free workflows, built the way the
editor saves them, always convert, and always to a prompt the ComfyUI stand-in's validation
(a port of ComfyUI's own) accepts.

Each generated graph is an image chain (EmptyImage, then filters, some bypassed, some fed
through reroutes of any mode, a legacy primitive over a stale width), save and preview
outputs (some muted), a text branch ending in PreviewAny, notes; in Save and in Export form.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import requests
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from comfy_core.workflows.convert import ui_to_api
from devtools.comfyui_standin import ComfyUIStandIn, build_node_specs, validate_prompt
from tests.support.recordings import recording, recording_meta
from tests.support.ui_graph import UiGraph

OBJECT_INFO = recording("object_info_full")
SPECS = build_node_specs([])  # the nodes the stand-in can run
MUTED, BYPASSED = 2, 4
FILTERS = ("ImageInvert", "ImageBlur", "ImageAddNoise", "ImageScale", "ImageBlend")
CONTROLS = ("fixed", "increment", "decrement", "randomize")
SAFE_TEXT = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-", min_size=1, max_size=12)
VIRTUAL = {"Reroute", "Note", "MarkdownNote", "PrimitiveNode"}


class Chain:
    """A generated graph and what its prompt must hold."""

    def __init__(self, draw: Any) -> None:
        self.draw = draw
        self.g = UiGraph(OBJECT_INFO)
        self.expected: set[str] = set()  # node ids that run
        self.values: dict[tuple[str, str], Any] = {}  # widget values the prompt must carry

    def real(self, class_type: str, values: dict[str, Any], mode: int = 0, **kwargs: Any) -> int:
        node = self.g.node(class_type, values, mode=mode, **kwargs)
        if mode == 0:
            self.expected.add(str(node))
            self.values.update(((str(node), name), value) for name, value in values.items()
                               if not (isinstance(value, str) and "%" in value))
        return node

    def through_reroutes(self, node: int) -> int:
        for _ in range(self.draw(st.integers(0, 2))):
            reroute = self.g.reroute(mode=self.draw(st.sampled_from([0, 0, MUTED, BYPASSED])))
            self.g.link(node, 0, reroute)
            node = reroute
        return node

    def source(self) -> int:
        draw = self.draw
        node = self.real("EmptyImage", {
            "width": draw(st.integers(1, 64)), "height": draw(st.integers(1, 64)),
            "batch_size": draw(st.integers(1, 2)), "color": draw(st.integers(0, 0xFFFFFF)),
        })
        if draw(st.booleans()):  # a legacy primitive, over the width the node saved
            width = draw(st.integers(1, 64))
            self.g.primitive(width, [(node, "width")],
                             title=draw(st.sampled_from([None, "size"])), control=draw(st.sampled_from(CONTROLS)),
                             mode=draw(st.sampled_from([0, MUTED])))
            self.values[(str(node), "width")] = width
        return node

    def filter(self, upstream: int) -> int:
        draw = self.draw
        kind = draw(st.sampled_from(FILTERS))
        mode = draw(st.sampled_from([0, 0, 0, BYPASSED]))
        values: dict[str, Any] = {}
        controls: dict[str, Any] = {}
        if kind == "ImageBlur":
            values = {"blur_radius": draw(st.integers(1, 31)), "sigma": draw(st.sampled_from([0.1, 1.0, 2.5, 10.0]))}
        elif kind == "ImageAddNoise":
            values = {"seed": draw(st.integers(0, 2**53)), "strength": draw(st.sampled_from([0.0, 0.25, 1.0]))}
            controls = {"seed": draw(st.sampled_from(CONTROLS))}
        elif kind == "ImageScale":
            values = {"upscale_method": draw(st.sampled_from(["nearest-exact", "bilinear", "area", "bicubic", "lanczos"])),
                      "width": draw(st.integers(1, 64)), "height": draw(st.integers(1, 64)),
                      "crop": draw(st.sampled_from(["disabled", "center"]))}
        elif kind == "ImageBlend":
            values = {"blend_factor": draw(st.sampled_from([0.0, 0.5, 1.0])),
                      "blend_mode": draw(st.sampled_from(["normal", "multiply", "screen", "difference"]))}
        node = self.real(kind, values, mode=mode, controls=controls)
        first_input = "image1" if kind == "ImageBlend" else "image"
        self.g.link(self.through_reroutes(upstream), 0, node, first_input)
        if kind == "ImageBlend":
            self.g.link(self.through_reroutes(self.source()), 0, node, "image2")
        return node

    def outputs(self, image: int) -> None:
        draw = self.draw
        prefix = draw(SAFE_TEXT) + draw(st.sampled_from(["", "_%EmptyImage.width%", "_%EmptyImage.color%"]))
        save = self.real("SaveImage", {"filename_prefix": prefix})
        self.g.link(self.through_reroutes(image), 0, save, "images")
        if draw(st.booleans()):
            self.g.link(image, 0, self.real("PreviewImage", {}), "images")
        if draw(st.booleans()):  # a muted output: left out, nothing else changes
            self.g.link(image, 0, self.real("PreviewImage", {}, mode=MUTED), "images")

    def text(self) -> None:
        draw = self.draw
        text = self.real("PrimitiveStringMultiline", {"value": draw(st.text(max_size=20))})
        source = text
        if draw(st.booleans()):
            join = self.real("StringConcatenate", {"delimiter": draw(st.sampled_from(["", " ", "-"]))})
            other = self.real("PrimitiveString", {"value": draw(SAFE_TEXT)})
            self.g.link(text, 0, join, "string_a")
            self.g.link(other, 0, join, "string_b")
            source = join
        self.g.link(self.through_reroutes(source), 0, self.real("PreviewAny", {}), "source")


@st.composite
def ui_workflows(draw: Any) -> tuple[UiGraph, set[str], dict[tuple[str, str], Any]]:
    chain = Chain(draw)
    image = chain.source()
    for _ in range(draw(st.integers(0, 5))):
        image = chain.filter(image)
    chain.outputs(image)
    if draw(st.booleans()):
        chain.text()
    for _ in range(draw(st.integers(0, 2))):
        chain.g.note(draw(st.text(max_size=10)), markdown=draw(st.booleans()))
    return chain.g, chain.expected, chain.values


@settings(max_examples=150, derandomize=True, database=None, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(case=ui_workflows())
def test_random_ui_workflows_convert_to_prompts_comfyui_accepts(
    case: tuple[UiGraph, set[str], dict[tuple[str, str], Any]]
) -> None:
    graph, expected, values = case
    saved = graph.document("save")
    note(repr(saved))
    prompt, _ = ui_to_api(saved, OBJECT_INFO)
    # Export writes the same graph differently (slots dropped and renumbered): same prompt.
    assert ui_to_api(graph.document("export"), OBJECT_INFO)[0] == prompt
    # Exactly the nodes that run: no reroute, note, primitive, muted or bypassed node.
    assert set(prompt) == expected
    assert not {entry["class_type"] for entry in prompt.values()} & VIRTUAL
    # Every widget value where it was set (control entries skipped, primitives applied).
    assert {key: prompt[key[0]]["inputs"][key[1]] for key in values} == values
    for entry in prompt.values():
        for value in entry["inputs"].values():
            if isinstance(value, list):
                assert value[0] in prompt and isinstance(value[1], int)
    valid, error, outputs, node_errors = validate_prompt(prompt, SPECS)
    assert (valid, error, node_errors) == (True, None, {})
    assert outputs


def test_the_standin_serves_the_recorded_node_definitions(tmp_path: Path) -> None:
    """GET /object_info of the stand-in (what `make dev` and the e2e tier convert with) is the
    recorded answer of the real ComfyUI: same status, type, length and content, in order."""
    meta = recording_meta("object_info_full")
    standin = ComfyUIStandIn(tmp_path, port=0).start()
    try:
        response = requests.get(f"{standin.base_url}{meta['path']}", timeout=10)
    finally:
        standin.stop()
    assert response.status_code == meta["status"]
    assert response.headers["Content-Type"] == meta["headers"]["Content-Type"]
    assert len(response.content) == meta["body_length"]
    assert list(response.json().items()) == list(OBJECT_INFO.items())
