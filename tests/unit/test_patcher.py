"""comfy_core.workflows.patcher: choosing text nodes, writing prompts and parameters, loading formats."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from comfy_core.workflows import patcher
from comfy_core.errors import BadRequestError, WorkflowFormatError
from comfy_core.workflows.patcher import apply_request, normalise_workflow


def sd_workflow(positive: str = "6", negative: str = "7") -> dict[str, Any]:
    """A default-style SD 1.5 txt2img graph (API format)."""
    return {
        "3": {
            "class_type": "KSampler",
            "inputs": {
                "seed": 156680208700286,
                "steps": 20,
                "cfg": 8.0,
                "sampler_name": "euler",
                "scheduler": "normal",
                "denoise": 1.0,
                "model": ["4", 0],
                "positive": [positive, 0],
                "negative": [negative, 0],
                "latent_image": ["5", 0],
            },
        },
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "v1-5.safetensors"}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 512, "batch_size": 1}},
        positive: {"class_type": "CLIPTextEncode", "inputs": {"text": "old positive", "clip": ["4", 1]}},
        negative: {"class_type": "CLIPTextEncode", "inputs": {"text": "old negative", "clip": ["4", 1]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0]}},
    }


def text_of(workflow: dict[str, Any], node_id: str, field: str = "text") -> Any:
    return workflow[node_id]["inputs"][field]


# -- choosing the prompt node ------------------------------------------------------------
def test_prompt_goes_to_the_node_wired_to_positive() -> None:
    out = apply_request(sd_workflow(), {"prompt": "a red fox"})
    assert text_of(out, "6") == "a red fox"
    assert text_of(out, "7") == "old negative"


def test_positive_wins_even_when_the_negative_has_the_lower_id() -> None:
    workflow = sd_workflow(positive="7", negative="6")
    out = apply_request(workflow, {"prompt": "a red fox"})
    assert text_of(out, "7") == "a red fox"
    assert text_of(out, "6") == "old negative"


def test_negative_prompt_goes_to_the_node_wired_to_negative() -> None:
    workflow = sd_workflow(positive="7", negative="6")
    out = apply_request(workflow, {"prompt": "a red fox", "negative_prompt": "blurry"})
    assert text_of(out, "7") == "a red fox"
    assert text_of(out, "6") == "blurry"


def test_negative_prompt_without_a_negative_input_is_refused() -> None:
    workflow = {
        "1": {"class_type": "PrimitiveStringMultiline", "inputs": {"value": "x"}},
        "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}},
    }
    with pytest.raises(BadRequestError, match="negative"):
        apply_request(workflow, {"negative_prompt": "blurry"})


def test_without_a_sampler_the_first_text_node_by_numeric_id_is_used() -> None:
    workflow = {
        "10": {"class_type": "PrimitiveStringMultiline", "inputs": {"value": "ten"}},
        "9": {"class_type": "PrimitiveStringMultiline", "inputs": {"value": "nine"}},
        "11": {"class_type": "PreviewAny", "inputs": {"source": ["10", 0]}},
        "12": {"class_type": "PreviewAny", "inputs": {"source": ["9", 0]}},
    }
    out = apply_request(workflow, {"prompt": "hello"})
    assert text_of(out, "9", "value") == "hello"
    assert text_of(out, "10", "value") == "ten"


def test_tracing_passes_through_flux_guidance() -> None:
    workflow = {
        "1": {"class_type": "CLIPTextEncode", "inputs": {"text": "unused first", "clip": ["4", 1]}},
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "flux.safetensors"}},
        "20": {"class_type": "CLIPTextEncode", "inputs": {"text": "old", "clip": ["4", 1]}},
        "21": {"class_type": "FluxGuidance", "inputs": {"conditioning": ["20", 0], "guidance": 3.5}},
        "22": {"class_type": "ConditioningZeroOut", "inputs": {"conditioning": ["20", 0]}},
        "30": {
            "class_type": "KSampler",
            "inputs": {"seed": 1, "positive": ["21", 0], "negative": ["22", 0], "model": ["4", 0]},
        },
    }
    out = apply_request(workflow, {"prompt": "a castle"})
    assert text_of(out, "20") == "a castle"
    assert text_of(out, "1") == "unused first"


def test_negative_prompt_through_controlnet_apply_advanced() -> None:
    workflow = sd_workflow()
    workflow["10"] = {"class_type": "ControlNetLoader", "inputs": {"control_net_name": "c.safetensors"}}
    workflow["11"] = {"class_type": "LoadImage", "inputs": {"image": "pose.png"}}
    workflow["12"] = {
        "class_type": "ControlNetApplyAdvanced",
        "inputs": {
            "positive": ["6", 0],
            "negative": ["7", 0],
            "control_net": ["10", 0],
            "image": ["11", 0],
            "strength": 1.0,
            "start_percent": 0.0,
            "end_percent": 1.0,
        },
    }
    workflow["3"]["inputs"]["positive"] = ["12", 0]
    workflow["3"]["inputs"]["negative"] = ["12", 1]
    out = apply_request(workflow, {"prompt": "a red fox", "negative_prompt": "blurry"})
    assert text_of(out, "6") == "a red fox"
    assert text_of(out, "7") == "blurry"


# -- writing text --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("class_type", "fields"),
    [(class_type, fields) for class_type, fields in patcher.TEXT_NODE_FIELDS.items()],
)
def test_every_text_field_of_each_text_class_is_written(class_type: str, fields: tuple[str, ...]) -> None:
    workflow = {
        "5": {"class_type": class_type, "inputs": {field: f"old {field}" for field in fields}},
        "6": {"class_type": "PreviewAny", "inputs": {"source": ["5", 0]}},
    }
    out = apply_request(workflow, {"prompt": "new text"})
    assert {field: out["5"]["inputs"][field] for field in fields} == {field: "new text" for field in fields}


def test_sdxl_and_flux_encoders_get_both_fields() -> None:
    workflow = {
        "1": {"class_type": "CLIPTextEncodeSDXL", "inputs": {"text_g": "g", "text_l": "l", "width": 1024}},
        "2": {"class_type": "CLIPTextEncodeFlux", "inputs": {"clip_l": "c", "t5xxl": "t", "guidance": 3.5}},
    }
    out = apply_request(workflow, {"prompt": "p1", "target_node": "1"})
    assert (out["1"]["inputs"]["text_g"], out["1"]["inputs"]["text_l"]) == ("p1", "p1")
    assert out["1"]["inputs"]["width"] == 1024
    out = apply_request(workflow, {"prompt": "p2", "target_node": "2"})
    assert (out["2"]["inputs"]["clip_l"], out["2"]["inputs"]["t5xxl"]) == ("p2", "p2")
    assert out["2"]["inputs"]["guidance"] == 3.5


def test_text_linked_from_a_primitive_writes_the_primitive_and_keeps_the_link() -> None:
    workflow = sd_workflow()
    workflow["20"] = {"class_type": "PrimitiveString", "inputs": {"value": "old primitive"}}
    workflow["6"]["inputs"]["text"] = ["20", 0]
    out = apply_request(workflow, {"prompt": "via primitive"})
    assert out["6"]["inputs"]["text"] == ["20", 0]
    assert out["20"]["inputs"]["value"] == "via primitive"


def test_target_node_picks_the_node_and_accepts_an_int_id() -> None:
    out = apply_request(sd_workflow(), {"prompt": "into negative", "target_node": 7})
    assert text_of(out, "7") == "into negative"
    assert text_of(out, "6") == "old positive"


def test_target_node_that_is_not_a_text_node_has_the_seed_message() -> None:
    workflow = sd_workflow()
    workflow["41"] = {"class_type": "VAELoader", "inputs": {"vae_name": "x"}}
    with pytest.raises(BadRequestError) as caught:
        apply_request(workflow, {"prompt": "x", "target_node": "41"})
    assert caught.value.message == "Target node 41 is not a text input node"
    assert caught.value.status_code == 400


def test_target_node_that_does_not_exist_is_a_bad_request() -> None:
    with pytest.raises(BadRequestError, match="99"):
        apply_request(sd_workflow(), {"prompt": "x", "target_node": "99"})


def test_workflow_without_text_node_has_the_seed_message() -> None:
    workflow = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 48, "batch_size": 1, "color": 0}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
    }
    with pytest.raises(BadRequestError) as caught:
        apply_request(workflow, {"prompt": "hello"})
    assert caught.value.message == "No suitable text input node found in workflow"


@pytest.mark.parametrize(
    "body",
    [{"prompt": 5}, {"prompt": None}, {"negative_prompt": ["x"]}, {"prompt": "x", "target_node": 1.5}],
)
def test_text_of_the_wrong_type_is_a_bad_request(body: dict[str, Any]) -> None:
    with pytest.raises(BadRequestError):
        apply_request(sd_workflow(), body)


def test_target_node_without_prompt_is_a_bad_request() -> None:
    with pytest.raises(BadRequestError, match="prompt"):
        apply_request(sd_workflow(), {"target_node": "6"})


# -- named parameters --------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["random", -1])
def test_random_seed_is_a_fresh_int_each_call(value: Any) -> None:
    seeds = set()
    for _ in range(5):
        out = apply_request(sd_workflow(), {"seed": value})
        seed = out["3"]["inputs"]["seed"]
        assert isinstance(seed, int) and not isinstance(seed, bool)
        assert 0 <= seed <= patcher.MAX_SEED
        seeds.add(seed)
    assert len(seeds) > 1


def test_seed_goes_to_seed_and_noise_seed_owners() -> None:
    workflow = sd_workflow()
    workflow["13"] = {
        "class_type": "KSamplerAdvanced",
        "inputs": {"noise_seed": 5, "steps": 20, "positive": ["6", 0], "negative": ["7", 0]},
    }
    out = apply_request(workflow, {"seed": 1234})
    assert out["3"]["inputs"]["seed"] == 1234
    assert out["13"]["inputs"]["noise_seed"] == 1234


def test_parameters_are_applied_to_their_owning_nodes() -> None:
    body = {"steps": 30, "cfg": 6.5, "width": 768, "height": 640, "batch_size": 2, "denoise": 0.75,
            "sampler_name": "dpmpp_2m", "scheduler": "karras"}
    out = apply_request(sd_workflow(), body)
    sampler = out["3"]["inputs"]
    latent = out["5"]["inputs"]
    assert (sampler["steps"], sampler["cfg"], sampler["denoise"]) == (30, 6.5, 0.75)
    assert (sampler["sampler_name"], sampler["scheduler"]) == ("dpmpp_2m", "karras")
    assert (latent["width"], latent["height"], latent["batch_size"]) == (768, 640, 2)
    assert "steps" not in out["5"]["inputs"] and "width" not in out["3"]["inputs"]


def test_parameters_are_not_written_over_links() -> None:
    workflow = sd_workflow()
    workflow["20"] = {"class_type": "PrimitiveInt", "inputs": {"value": 512}}
    workflow["21"] = {"class_type": "EmptyLatentImage", "inputs": {"width": ["20", 0], "height": 512, "batch_size": 1}}
    workflow["3"]["inputs"]["steps"] = ["20", 0]
    workflow["13"] = {"class_type": "KSampler", "inputs": {"steps": 10, "seed": 1}}
    out = apply_request(workflow, {"width": 1024, "steps": 25})
    assert out["21"]["inputs"]["width"] == ["20", 0]
    assert out["5"]["inputs"]["width"] == 1024
    assert out["3"]["inputs"]["steps"] == ["20", 0]
    assert out["13"]["inputs"]["steps"] == 25


def test_parameter_no_node_owns_is_a_bad_request() -> None:
    workflow = {"1": {"class_type": "PrimitiveStringMultiline", "inputs": {"value": "x"}}}
    with pytest.raises(BadRequestError, match="steps"):
        apply_request(workflow, {"steps": 20})


@pytest.mark.parametrize(
    "body",
    [
        {"steps": "20"},
        {"steps": 0},
        {"steps": 20.0},
        {"steps": True},
        {"seed": True},
        {"seed": -2},
        {"seed": 2**64},
        {"seed": "42"},
        {"cfg": "7"},
        {"cfg": 101},
        {"cfg": False},
        {"denoise": 1.5},
        {"denoise": -0.1},
        {"width": 8},
        {"height": 16_385},
        {"width": 512.0},
        {"batch_size": 0},
        {"batch_size": True},
        {"sampler_name": ""},
        {"sampler_name": 3},
        {"scheduler": "x" * 129},
    ],
)
def test_invalid_parameter_values_are_bad_requests(body: dict[str, Any]) -> None:
    workflow = sd_workflow()
    before = copy.deepcopy(workflow)
    with pytest.raises(BadRequestError) as caught:
        apply_request(workflow, body)
    assert next(iter(body)) in caught.value.message
    assert workflow == before


@pytest.mark.parametrize(("name", "value"), [("seed", 0), ("seed", 2**64 - 1), ("steps", 1), ("cfg", 0),
                                             ("denoise", 1), ("width", 16), ("batch_size", 4096)])
def test_boundary_values_are_accepted(name: str, value: Any) -> None:
    out = apply_request(sd_workflow(), {name: value})
    owner = "5" if name in ("width", "batch_size") else "3"
    assert out[owner]["inputs"][name] == value


def test_unknown_keys_are_named_in_the_error() -> None:
    with pytest.raises(BadRequestError) as caught:
        apply_request(sd_workflow(), {"prompt": "x", "sampler": "euler", "guidance": 3})
    assert caught.value.message == (
        "Unknown parameter(s): guidance, sampler (did you mean 'sampler_name'?)")


@pytest.mark.parametrize(("body", "message"), [
    ({"promt": "a fox"}, "Unknown parameter(s): promt (did you mean 'prompt'?)"),
    ({"negative_promt": "blur", "sed": 4}, "Unknown parameter(s): negative_promt (did you mean "
                                           "'negative_prompt'?), sed (did you mean 'seed'?)"),
    ({"imgae": {"base64": "x"}}, "Unknown parameter(s): imgae (did you mean 'image'?)"),
    ({"77": {"inputs": {}}}, "Unknown node id(s) in workflow: 77"),
])
def test_a_misspelt_simple_key_is_not_reported_as_a_node_id(body: dict[str, Any], message: str) -> None:
    """Without any known simple key the body reads as the advanced format; a key that is
    nearly a parameter name is a typo, and the answer says which name was meant."""
    with pytest.raises(BadRequestError) as caught:
        apply_request(sd_workflow(), body)
    assert caught.value.message == message


# -- advanced format -----------------------------------------------------------------------------
@pytest.mark.parametrize("update", [{"inputs": {"text": "direct", "extra": 1}}, {"text": "direct", "extra": 1}])
def test_advanced_format_merges_into_inputs(update: dict[str, Any]) -> None:
    out = apply_request(sd_workflow(), {"7": update})
    assert out["7"]["inputs"] == {"text": "direct", "clip": ["4", 1], "extra": 1}
    assert out["7"]["class_type"] == "CLIPTextEncode"
    assert out["6"] == sd_workflow()["6"]


def test_advanced_format_unknown_node_is_named() -> None:
    with pytest.raises(BadRequestError) as caught:
        apply_request(sd_workflow(), {"6": {"inputs": {"text": "x"}}, "404": {"inputs": {"a": 1}}})
    assert "404" in caught.value.message


def test_advanced_format_update_must_be_an_object() -> None:
    with pytest.raises(BadRequestError, match="6"):
        apply_request(sd_workflow(), {"6": "text"})


def test_empty_body_runs_the_workflow_unchanged() -> None:
    workflow = sd_workflow()
    out = apply_request(workflow, {})
    assert out == workflow
    assert out is not workflow


def test_advanced_format_with_client_id() -> None:
    out = apply_request(sd_workflow(), {"5": {"inputs": {"width": 640}}, "client_id": "my-client"})
    assert out["5"]["inputs"]["width"] == 640


# -- never mutate the input -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "body",
    [
        {"prompt": "p", "negative_prompt": "n", "seed": "random", "steps": 3, "width": 640},
        {"6": {"inputs": {"text": "adv", "clip": ["4", 0]}}},
    ],
)
def test_input_workflow_is_never_mutated(body: dict[str, Any]) -> None:
    workflow = sd_workflow()
    workflow["20"] = {"class_type": "PrimitiveString", "inputs": {"value": "prim"}}
    workflow["7"]["inputs"]["text"] = ["20", 0]
    before = copy.deepcopy(workflow)
    out = apply_request(workflow, body)
    assert workflow == before
    assert out != before


def test_advanced_values_are_copied_not_shared() -> None:
    link = ["4", 0]
    out = apply_request(sd_workflow(), {"6": {"clip": link}})
    link[1] = 99
    assert out["6"]["inputs"]["clip"] == ["4", 0]


# -- normalise_workflow ------------------------------------------------------------------------------
def test_normalise_bare_and_wrapped() -> None:
    graph = sd_workflow()
    assert normalise_workflow(graph) == graph
    assert normalise_workflow({"prompt": graph}) == graph


def test_normalise_refuses_ui_format_with_guidance() -> None:
    ui = {"last_node_id": 9, "nodes": [{"id": 3, "type": "KSampler"}], "links": [[1, 4, 0, 3, 0, "MODEL"]]}
    with pytest.raises(WorkflowFormatError) as caught:
        normalise_workflow(ui)
    assert caught.value.status_code == 422
    assert "Save (API Format)" in caught.value.message


@pytest.mark.parametrize("document", [[], "x", None, {}, {"prompt": {}}, {"1": "node"}, {"1": {"inputs": []}}])
def test_normalise_refuses_what_is_not_an_api_graph(document: Any) -> None:
    with pytest.raises(WorkflowFormatError) as caught:
        normalise_workflow(document)
    assert caught.value.status_code == 422
