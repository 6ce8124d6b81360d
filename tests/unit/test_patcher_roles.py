"""comfy_core.workflows.patcher: the prompt reaches the text node wired to a sampler's `positive` input
and the negative prompt the one wired to `negative`, however the conditioning between them is
built (ControlNetApplyAdvanced, ConditioningCombine, FluxGuidance, ConditioningSetArea, ...).

Each graph below is built so that the wrong side is the easy answer: the negative text node
has the lower id, or the wrong side's path is the shorter one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from comfy_core.errors import BadRequestError
from comfy_core.workflows.patcher import apply_request

PROMPT = "a red fox in the snow"
NEGATIVE = "blurry, low quality"
TEXT_CLASSES = {  # conditioning text encoders and the fields a prompt is written to
    "CLIPTextEncode": ("text",),
    "CLIPTextEncodeSDXL": ("text_g", "text_l"),
    "CLIPTextEncodeFlux": ("clip_l", "t5xxl"),
}
WRAPPERS = {  # one conditioning in, one out: class -> literal inputs beside `conditioning`
    "FluxGuidance": {"guidance": 3.5},
    "ConditioningSetArea": {"width": 64, "height": 64, "x": 0, "y": 0, "strength": 1.0},
    "ConditioningSetTimestepRange": {"start": 0.0, "end": 0.5},
    "ConditioningZeroOut": {},
}
JOINS = {  # two conditionings in, one out
    "ConditioningCombine": ("conditioning_1", "conditioning_2"),
    "ConditioningConcat": ("conditioning_to", "conditioning_from"),
}

Link = list[Any]  # [node id, output slot]


@dataclass
class Graph:
    """An API-format workflow built node by node; ids are handed out in the order asked for."""

    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add(self, node_id: str, class_type: str, **inputs: Any) -> Link:
        self.nodes[node_id] = {"class_type": class_type, "inputs": inputs}
        return [node_id, 0]

    def text(self, node_id: str, class_type: str = "CLIPTextEncode") -> Link:
        fields = {name: f"old {node_id}" for name in TEXT_CLASSES[class_type]}
        return self.add(node_id, class_type, clip=["90", 1], **fields)

    def controlnet(self, node_id: str, positive: Link, negative: Link) -> tuple[Link, Link]:
        self.add("91", "ControlNetLoader", control_net_name="canny.safetensors")
        self.add("92", "LoadImage", image="pose.png")
        self.add(node_id, "ControlNetApplyAdvanced", positive=positive, negative=negative,
                 control_net=["91", 0], image=["92", 0], strength=1.0, start_percent=0.0, end_percent=1.0)
        return [node_id, 0], [node_id, 1]

    def sampler(self, node_id: str, positive: Link, negative: Link) -> dict[str, dict[str, Any]]:
        self.add("90", "CheckpointLoaderSimple", ckpt_name="model.safetensors")
        self.add("93", "EmptyLatentImage", width=512, height=512, batch_size=1)
        self.add(node_id, "KSampler", seed=1, steps=20, cfg=7.0, sampler_name="euler", scheduler="normal",
                 denoise=1.0, model=["90", 0], positive=positive, negative=negative, latent_image=["93", 0])
        self.add("94", "VAEDecode", samples=[node_id, 0], vae=["90", 2])
        self.add("95", "SaveImage", images=["94", 0], filename_prefix="ComfyUI")
        return self.nodes


def texts(workflow: dict[str, Any], *node_ids: str) -> list[str]:
    return [workflow[node_id]["inputs"]["text"] for node_id in node_ids]


# -- graphs where the two sides differ in length and shape ------------------------------------
# The sampler has the lowest id, so the search starts at its inputs rather than at the
# ControlNet node's own `positive`/`negative` inputs (which would sort first otherwise).

def issue_graph() -> dict[str, Any]:
    """text -> ConditioningCombine -> ControlNetApplyAdvanced -> KSampler.positive, and
    negative text -> ControlNetApplyAdvanced.negative: the negative path is the shorter one."""
    g = Graph()
    negative = g.text("2")
    positive = g.text("3")
    style = g.add("4", "ConditioningSetArea", conditioning=g.text("5"), width=64, height=64, x=0, y=0,
                  strength=1.0)
    combined = g.add("6", "ConditioningCombine", conditioning_1=positive, conditioning_2=style)
    return g.sampler("1", *g.controlnet("7", combined, negative))


def test_longer_positive_path_through_controlnet_keeps_the_prompt_on_the_positive_side() -> None:
    out = apply_request(issue_graph(), {"prompt": PROMPT})
    assert texts(out, "2", "3", "5") == ["old 2", PROMPT, "old 5"]


def test_negative_prompt_with_the_longer_positive_path() -> None:
    out = apply_request(issue_graph(), {"prompt": PROMPT, "negative_prompt": NEGATIVE})
    assert texts(out, "2", "3", "5") == [NEGATIVE, PROMPT, "old 5"]


def test_longer_negative_path_through_controlnet_keeps_the_negative_prompt_off_the_positive() -> None:
    g = Graph()
    positive = g.text("2")
    negative = g.add("5", "ConditioningSetArea", conditioning=g.add(
        "4", "FluxGuidance", conditioning=g.text("3"), guidance=3.5), width=64, height=64, x=0, y=0,
        strength=1.0)
    workflow = g.sampler("1", *g.controlnet("6", positive, negative))
    out = apply_request(workflow, {"prompt": PROMPT, "negative_prompt": NEGATIVE})
    assert texts(out, "2", "3") == [PROMPT, NEGATIVE]


def test_two_chained_controlnets_with_branches_on_both_sides() -> None:
    g = Graph()
    negative_a, negative_b = g.text("2"), g.text("3")
    positive_a, positive_b = g.text("4"), g.text("5")
    negative = g.add("6", "ConditioningConcat", conditioning_to=negative_a, conditioning_from=negative_b)
    positive = g.add("7", "ConditioningCombine",
                     conditioning_1=g.add("8", "FluxGuidance", conditioning=positive_a, guidance=3.5),
                     conditioning_2=g.add("9", "FluxGuidance", conditioning=positive_b, guidance=3.5))
    first = g.controlnet("10", positive, negative)
    workflow = g.sampler("1", *g.controlnet("11", *first))
    out = apply_request(workflow, {"prompt": PROMPT, "negative_prompt": NEGATIVE})
    assert texts(out, "2", "3", "4", "5") == [NEGATIVE, "old 3", PROMPT, "old 5"]


def test_a_text_node_used_twice_on_the_positive_side_is_still_the_positive_one() -> None:
    g = Graph()
    negative = g.text("2")
    positive = g.text("3")
    area = g.add("4", "ConditioningSetArea", conditioning=positive, width=64, height=64, x=0, y=0,
                 strength=1.0)
    combined = g.add("5", "ConditioningCombine", conditioning_1=area, conditioning_2=positive)
    workflow = g.sampler("1", *g.controlnet("6", combined, negative))
    out = apply_request(workflow, {"prompt": PROMPT, "negative_prompt": NEGATIVE})
    assert texts(out, "2", "3") == [NEGATIVE, PROMPT]


def test_cfg_guider_of_a_custom_sampler_is_traced_like_a_ksampler() -> None:
    g = Graph()
    negative, positive = g.text("2"), g.text("3")
    guided = g.add("4", "FluxGuidance", conditioning=positive, guidance=3.5)
    cn_positive, cn_negative = g.controlnet("5", guided, negative)
    g.add("90", "CheckpointLoaderSimple", ckpt_name="flux.safetensors")
    g.add("1", "CFGGuider", model=["90", 0], positive=cn_positive, negative=cn_negative, cfg=1.0)
    g.add("6", "RandomNoise", noise_seed=1)
    g.add("7", "KSamplerSelect", sampler_name="euler")
    g.add("8", "BasicScheduler", model=["90", 0], scheduler="simple", steps=20, denoise=1.0)
    g.add("9", "EmptySD3LatentImage", width=1024, height=1024, batch_size=1)
    g.add("10", "SamplerCustomAdvanced", noise=["6", 0], guider=["1", 0], sampler=["7", 0], sigmas=["8", 0],
          latent_image=["9", 0])
    out = apply_request(g.nodes, {"prompt": PROMPT, "negative_prompt": NEGATIVE})
    assert texts(out, "2", "3") == [NEGATIVE, PROMPT]


def test_controlnet_outputs_wired_crossed_follow_the_output_slot() -> None:
    """The sampler's positive input takes ControlNetApplyAdvanced's output 1, which carries
    what came in as `negative`: so the node wired to `positive`, by data flow, is node 3."""
    g = Graph()
    first, second = g.text("2"), g.text("3")
    out0, out1 = g.controlnet("4", first, second)
    out = apply_request(g.sampler("1", out1, out0), {"prompt": PROMPT, "negative_prompt": NEGATIVE})
    assert texts(out, "2", "3") == [NEGATIVE, PROMPT]


# -- a text node that feeds both sides ---------------------------------------------------------

def flux_zero_out_graph() -> dict[str, Any]:
    """Flux style: one text node; the negative input gets it zeroed out."""
    g = Graph()
    shared = g.text("2")
    positive = g.add("3", "FluxGuidance", conditioning=shared, guidance=3.5)
    negative = g.add("4", "ConditioningZeroOut", conditioning=shared)
    return g.sampler("1", positive, negative)


def test_prompt_goes_to_a_text_node_that_feeds_both_sides() -> None:
    out = apply_request(flux_zero_out_graph(), {"prompt": PROMPT})
    assert texts(out, "2") == [PROMPT]


@pytest.mark.parametrize("body", [{"prompt": PROMPT, "negative_prompt": NEGATIVE},
                                  {"negative_prompt": NEGATIVE}])
def test_negative_prompt_is_refused_when_its_text_node_also_feeds_positive(body: dict[str, Any]) -> None:
    """Writing it would replace the prompt: the graph has no negative text of its own."""
    with pytest.raises(BadRequestError) as caught:
        apply_request(flux_zero_out_graph(), body)
    assert caught.value.message == (
        "Text node 2 feeds the sampler's positive input too; this workflow has no separate negative prompt"
    )


def test_negative_prompt_is_refused_when_one_primitive_feeds_both_encoders() -> None:
    g = Graph()
    g.add("2", "PrimitiveStringMultiline", value="shared words")
    g.add("3", "CLIPTextEncode", text=["2", 0], clip=["90", 1])
    g.add("4", "CLIPTextEncode", text=["2", 0], clip=["90", 1])
    workflow = g.sampler("1", ["3", 0], ["4", 0])
    out = apply_request(workflow, {"prompt": PROMPT})
    assert out["2"]["inputs"]["value"] == PROMPT and texts(out, "3", "4") == [["2", 0], ["2", 0]]
    with pytest.raises(BadRequestError, match="Text node 2 feeds the sampler's positive input too"):
        apply_request(workflow, {"prompt": PROMPT, "negative_prompt": NEGATIVE})


# -- a positive side the patcher cannot read ---------------------------------------------------

def test_unknown_encoder_on_the_positive_side_never_sends_the_prompt_to_the_negative_node() -> None:
    """CLIPTextEncodeSD3 is not a known text class: the trace from `positive` finds nothing,
    and the fallback (first text node by id) must not be the node wired to `negative`."""
    g = Graph()
    negative = g.text("2")
    positive = g.add("3", "CLIPTextEncodeSD3", clip=["90", 1], clip_l="a", clip_g="b", t5xxl="c",
                     empty_padding="none")
    workflow = g.sampler("1", positive, negative)
    with pytest.raises(BadRequestError) as caught:
        apply_request(workflow, {"prompt": PROMPT})
    assert caught.value.message == "No suitable text input node found in workflow"


# -- property: random conditioning chains ------------------------------------------------------

@dataclass
class Chain:
    """A random workflow under construction (temporary ids) and, for each text encoder in it,
    the side of the sampler its conditioning reaches by construction."""

    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    sides: dict[str, str] = field(default_factory=dict)

    def add(self, class_type: str, **inputs: Any) -> Link:
        node_id = f"t{len(self.nodes)}"
        self.nodes[node_id] = {"class_type": class_type, "inputs": inputs}
        return [node_id, 0]


@st.composite
def conditioning(draw: st.DrawFn, chain: Chain, side: str, depth: int) -> Link:
    """A conditioning for one side: a text encoder (new, or one this side already uses),
    possibly fed by a primitive, under up to `depth` levels of wrappers and joins."""
    own = sorted(node_id for node_id, owner in chain.sides.items() if owner == side)
    kind = draw(st.sampled_from(["text"] + ["reuse"] * bool(own) + ["wrap", "join"] * (depth > 0)))
    if kind == "reuse":
        return [draw(st.sampled_from(own)), 0]
    if kind == "wrap":
        class_type = draw(st.sampled_from(sorted(WRAPPERS)))
        inner = draw(conditioning(chain, side, depth - 1))
        return chain.add(class_type, conditioning=inner, **WRAPPERS[class_type])
    if kind == "join":
        class_type = draw(st.sampled_from(sorted(JOINS)))
        first, second = JOINS[class_type]
        return chain.add(class_type, **{first: draw(conditioning(chain, side, depth - 1)),
                                        second: draw(conditioning(chain, side, depth - 1))})
    class_type = draw(st.sampled_from(sorted(TEXT_CLASSES)))
    primitive = chain.add("PrimitiveStringMultiline", value="old primitive") if draw(st.booleans()) else None
    fields = {name: primitive or f"old {side}" for name in TEXT_CLASSES[class_type]}
    link = chain.add(class_type, clip=["t0", 1], **fields)
    chain.sides[link[0]] = side
    return link


@st.composite
def random_workflows(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, str]]:
    """A sampler whose positive and negative conditionings come from disjoint sets of text
    encoders, through 0-3 ControlNetApplyAdvanced stages (some wired crossed: output 1, which
    carries the `negative` input, sent on to the positive side) and extra combines; then every
    node gets a random numeric id, so id order says nothing about roles."""
    chain = Chain()
    chain.add("CheckpointLoaderSimple", ckpt_name="model.safetensors")
    control_net = chain.add("ControlNetLoader", control_net_name="canny.safetensors")
    image = chain.add("LoadImage", image="pose.png")
    positive = draw(conditioning(chain, "positive", 3))
    negative = draw(conditioning(chain, "negative", 3))
    for step in draw(st.lists(st.sampled_from(["controlnet", "crossed", "grow positive", "grow negative"]),
                              max_size=3)):
        if step in ("controlnet", "crossed"):
            crossed = step == "crossed"
            cn = chain.add("ControlNetApplyAdvanced", positive=negative if crossed else positive,
                           negative=positive if crossed else negative, control_net=control_net, image=image,
                           strength=0.8, start_percent=0.0, end_percent=1.0)[0]
            positive, negative = ([cn, 1], [cn, 0]) if crossed else ([cn, 0], [cn, 1])
        elif step == "grow positive":
            positive = chain.add("ConditioningCombine", conditioning_1=positive,
                                 conditioning_2=draw(conditioning(chain, "positive", 1)))
        else:
            negative = chain.add("ConditioningCombine", conditioning_1=negative,
                                 conditioning_2=draw(conditioning(chain, "negative", 1)))
    sampler = draw(st.sampled_from(["KSampler", "KSamplerAdvanced", "CFGGuider"]))
    chain.add(sampler, model=["t0", 0], positive=positive, negative=negative, cfg=7.0)
    if draw(st.booleans()):  # a text node that is no prompt at all: a file name prefix
        chain.add("SaveImage", images=image, filename_prefix=chain.add("PrimitiveString", value="run"))
    count = len(chain.nodes)
    ids = draw(st.lists(st.integers(1, 999), min_size=count, max_size=count, unique=True))
    rename = {old: str(new) for old, new in zip(chain.nodes, ids)}

    def renamed(value: Any) -> Any:
        return [rename[value[0]], value[1]] if isinstance(value, list) else value

    workflow = {rename[node_id]: {"class_type": node["class_type"],
                                  "inputs": {name: renamed(value) for name, value in node["inputs"].items()}}
                for node_id, node in chain.nodes.items()}
    return workflow, {rename[node_id]: side for node_id, side in chain.sides.items()}


def text_holders(workflow: dict[str, Any], encoder: str) -> set[tuple[str, str]]:
    """Where an encoder's text lives: (node, input) of each text field, or of the `value` of
    the primitive linked into it."""
    inputs = workflow[encoder]["inputs"]
    return {(inputs[name][0], "value") if isinstance(inputs[name], list) else (encoder, name)
            for name in TEXT_CLASSES[workflow[encoder]["class_type"]]}


def texts_of(workflow: dict[str, Any], encoder: str) -> set[str]:
    return {workflow[node_id]["inputs"][name] for node_id, name in text_holders(workflow, encoder)}


@settings(max_examples=200, derandomize=True, database=None, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(case=random_workflows(), with_negative=st.booleans())
def test_prompt_reaches_the_positive_side_and_never_the_negative(
    case: tuple[dict[str, Any], dict[str, str]], with_negative: bool
) -> None:
    workflow, sides = case
    note(f"workflow: {json.dumps(workflow, sort_keys=True)}")
    note(f"text encoders and their side: {sides}")
    body = {"prompt": PROMPT} | ({"negative_prompt": NEGATIVE} if with_negative else {})
    out = apply_request(workflow, body)
    written = {text: {encoder for encoder in sides if text in texts_of(out, encoder)}
               for text in body.values()}
    assert [sides[encoder] for encoder in written[PROMPT]] == ["positive"]
    if with_negative:
        assert [sides[encoder] for encoder in written[NEGATIVE]] == ["negative"]
    expected_changes = {node_id for encoders in written.values() for encoder in encoders
                        for node_id, _ in text_holders(out, encoder)}
    assert {node_id for node_id in workflow if out[node_id] != workflow[node_id]} == expected_changes
