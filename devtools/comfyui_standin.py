"""A ComfyUI stand-in: a stdlib HTTP server that answers like ComfyUI 0.3.64.

Development and test tool only, never deployed. The ground truth is the set of
recordings of a real ComfyUI in ``tests/fixtures/comfyui/`` (see NOTES.md there):
same status codes, same JSON shapes, same quirks. Where this module looks odd
(history ``{}`` for a running prompt, ``max_items=2&offset=0`` giving the *oldest*
two, 500 with a plain-text body for malformed JSON, ...) it copies ComfyUI on purpose.

WebSocket (``/ws``) is in devtools/standin_ws.py. What it does not do: ``/view?preview=`` re-encoding (the original
file is served), real image processing beyond what loaded pictures need. Generated images
are solid colours (or a simple noise pattern) written as real PNG files. Uploads
(``/upload/image``, ``/upload/mask``), input files and the nodes that read them (LoadImage,
LoadImageMask, ImageInvert and ImageCompositeMasked on real pixels) are in
devtools/standin_inputs.py, with what they approximate.

Usage::

    with ComfyUIStandIn(tmp_path, delay=0.5) as comfy:
        requests.post(f"{comfy.base_url}/prompt", json={"prompt": workflow})

    python -m devtools.comfyui_standin --port 8188 --delay 1 --root /some/dir
"""

from __future__ import annotations

import argparse
import copy
import email.utils
import hashlib
import heapq
import ipaddress
import json
import mimetypes
import os
import random
import re
import shutil
import signal
import socket
import string
import struct
import sys
import tempfile
import threading
import time
import traceback
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qs, unquote, urlparse, urlsplit

from devtools.standin_inputs import NODE_SPECS, InputFiles, PixelImage, PixelMask, composite, solid
from devtools.standin_ws import WebSocketHub

COMFYUI_VERSION = "0.3.64"
# ComfyUI drops the oldest entry only once history is *above* this, so 10,001 stay.
MAXIMUM_HISTORY_SIZE = 10000
# ComfyUI strips these from extra_data before the item is shown in /queue or /history.
SENSITIVE_EXTRA_DATA_KEYS = ("auth_token_comfy_org", "api_key_comfy_org")
SERVER_ERROR_TEXT = "500 Internal Server Error\n\nServer got itself in trouble"
JSON_CONTENT_TYPE = "application/json; charset=utf-8"
TEXT_CONTENT_TYPE = "text/plain; charset=utf-8"
MAX_RESOLUTION = 16384
SEED_MAX = 0xFFFFFFFFFFFFFFFF
DEFAULT_IMAGE_SIZE = 64
STREAM_CHUNK = 1 << 20

# --------------------------------------------------------------------------------------
# Node table: the few core nodes the project's workflows use, described like /object_info.
# --------------------------------------------------------------------------------------

_HIDDEN_PROMPT = {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}
# Nodes written against ComfyUI's "v3" API carry these extra keys in /object_info.
_V3_EXTRA = {"deprecated": False, "experimental": False, "api_node": False}

SAMPLER_NAMES = [
    "euler", "euler_cfg_pp", "euler_ancestral", "euler_ancestral_cfg_pp", "heun", "heunpp2",
    "dpm_2", "dpm_2_ancestral", "lms", "dpm_fast", "dpm_adaptive", "dpmpp_2s_ancestral",
    "dpmpp_2s_ancestral_cfg_pp", "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m", "dpmpp_2m_cfg_pp",
    "dpmpp_2m_sde", "dpmpp_2m_sde_gpu", "dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu", "dpmpp_3m_sde",
    "dpmpp_3m_sde_gpu", "ddpm", "lcm", "ipndm", "ipndm_v", "deis", "res_multistep",
    "res_multistep_cfg_pp", "res_multistep_ancestral", "res_multistep_ancestral_cfg_pp",
    "gradient_estimation", "gradient_estimation_cfg_pp", "er_sde", "seeds_2", "seeds_3", "sa_solver",
    "sa_solver_pece", "ddim", "uni_pc", "uni_pc_bh2",
]
SCHEDULER_NAMES = [
    "simple", "sgm_uniform", "karras", "exponential", "ddim_uniform", "beta", "normal",
    "linear_quadratic", "kl_optimal",
]


@dataclass
class NodeSpec:
    """One node class: its inputs (``[type]`` or ``[type, options]``) and outputs."""

    name: str
    required: dict[str, list[Any]]
    optional: dict[str, list[Any]] = field(default_factory=dict)
    hidden: dict[str, str] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)
    output_node: bool = False
    display_name: str | None = ""  # "": the class name; None: null, as some v3 nodes show
    description: str = ""
    python_module: str = "nodes"
    category: str = ""
    output_tooltips: list[Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # ComfyUI's VALIDATE_INPUTS: the inputs it takes skip the list and range checks, and
    # `validate(inputs)` gives its errors (bound per stand-in: it looks at the stand-in's files).
    validated: tuple[str, ...] = ()
    validate: Callable[[dict[str, Any]], list[dict[str, Any]]] | None = None

    def input_types(self) -> dict[str, dict[str, Any]]:
        types: dict[str, dict[str, Any]] = {"required": self.required}
        if self.optional:
            types["optional"] = self.optional
        if self.hidden:
            types["hidden"] = self.hidden
        return types

    def declared_inputs(self) -> list[str]:
        return [*self.required, *self.optional]

    def object_info(self) -> dict[str, Any]:
        types = self.input_types()
        info: dict[str, Any] = {
            "input": copy.deepcopy(types),
            "input_order": {category: list(inputs) for category, inputs in types.items()},
            "output": list(self.outputs),
            "output_is_list": [False] * len(self.outputs),
            "output_name": list(self.outputs),
            "name": self.name,
            "display_name": self.name if self.display_name == "" else self.display_name,
            "description": self.description,
            "python_module": self.python_module,
            "category": self.category,
            "output_node": self.output_node,
        }
        if self.output_tooltips is not None:
            info["output_tooltips"] = list(self.output_tooltips)
        info.update(self.extra)
        return info


def _int_input(default: int, minimum: int, maximum: int, step: int | None = None, **more: Any) -> list[Any]:
    options: dict[str, Any] = {"default": default, "min": minimum, "max": maximum}
    if step is not None:
        options["step"] = step
    options.update(more)
    return ["INT", options]


def _float_input(default: float, minimum: float, maximum: float, step: float, **more: Any) -> list[Any]:
    return ["FLOAT", {"default": default, "min": minimum, "max": maximum, "step": step, **more}]


def _multiline() -> list[Any]:
    return ["STRING", {"multiline": True}]


def _image_nodes() -> list[NodeSpec]:
    save_description = "Saves the input images to your ComfyUI output directory."
    return [
        NodeSpec(
            "EmptyImage",
            {
                "width": _int_input(512, 1, MAX_RESOLUTION, 1),
                "height": _int_input(512, 1, MAX_RESOLUTION, 1),
                "batch_size": _int_input(1, 1, 4096),
                "color": _int_input(0, 0, 0xFFFFFF, 1, display="color"),
            },
            outputs=["IMAGE"], category="image",
        ),
        NodeSpec(
            "SaveImage",
            {
                "images": ["IMAGE", {"tooltip": "The images to save."}],
                "filename_prefix": ["STRING", {
                    "default": "ComfyUI",
                    "tooltip": "The prefix for the file to save. This may include formatting information "
                    "such as %date:yyyy-MM-dd% or %Empty Latent Image.width% to include values from nodes.",
                }],
            },
            hidden=dict(_HIDDEN_PROMPT), output_node=True, display_name="Save Image",
            description=save_description, category="image",
        ),
        # Same description as SaveImage: ComfyUI's PreviewImage inherits it.
        NodeSpec(
            "PreviewImage", {"images": ["IMAGE"]}, hidden=dict(_HIDDEN_PROMPT), output_node=True,
            display_name="Preview Image", description=save_description, category="image",
        ),
        NodeSpec(
            "ImageAddNoise",
            {
                "image": ["IMAGE"],
                "seed": _int_input(0, 0, SEED_MAX, control_after_generate=True,
                                   tooltip="The random seed used for creating the noise."),
                "strength": _float_input(0.5, 0.0, 1.0, 0.01),
            },
            outputs=["IMAGE"], display_name="ImageAddNoise", python_module="comfy_extras.nodes_images",
            category="image",
        ),
        NodeSpec(
            "ImageBlur",
            {
                "image": ["IMAGE", {}],
                "blur_radius": _int_input(1, 1, 31, 1),
                "sigma": _float_input(1.0, 0.1, 10.0, 0.1),
            },
            outputs=["IMAGE"], display_name=None, python_module="comfy_extras.nodes_post_processing",
            category="image/postprocessing", output_tooltips=[None], extra=dict(_V3_EXTRA),
        ),
        NodeSpec("ImageInvert", {"image": ["IMAGE"]}, outputs=["IMAGE"], display_name="Invert Image",
                 category="image"),
        NodeSpec(
            "ImageBlend",
            {
                "image1": ["IMAGE", {}],
                "image2": ["IMAGE", {}],
                "blend_factor": _float_input(0.5, 0.0, 1.0, 0.01),
                # A v3 node: its choices come as a COMBO with options, not as a bare list.
                "blend_mode": ["COMBO", {"multiselect": False, "options": [
                    "normal", "multiply", "screen", "overlay", "soft_light", "difference"]}],
            },
            outputs=["IMAGE"], display_name=None, python_module="comfy_extras.nodes_post_processing",
            category="image/postprocessing", output_tooltips=[None], extra=dict(_V3_EXTRA),
        ),
        NodeSpec(
            "ImageScale",
            {
                "image": ["IMAGE"],
                "upscale_method": [["nearest-exact", "bilinear", "area", "bicubic", "lanczos"]],
                "width": _int_input(512, 0, MAX_RESOLUTION, 1),
                "height": _int_input(512, 0, MAX_RESOLUTION, 1),
                "crop": [["disabled", "center"]],
            },
            outputs=["IMAGE"], display_name="Upscale Image", category="image/upscaling",
        ),
    ]


def _text_nodes() -> list[NodeSpec]:
    return [
        NodeSpec("PrimitiveStringMultiline", {"value": _multiline()}, outputs=["STRING"],
                 display_name="String (Multiline)", python_module="comfy_extras.nodes_primitive",
                 category="utils/primitive", output_tooltips=[None], extra=dict(_V3_EXTRA)),
        NodeSpec("PrimitiveString", {"value": ["STRING", {"multiline": False}]}, outputs=["STRING"],
                 display_name="String",
                 python_module="comfy_extras.nodes_primitive", category="utils/primitive",
                 output_tooltips=[None], extra=dict(_V3_EXTRA)),
        NodeSpec(
            "RegexReplace",
            {"string": _multiline(), "regex_pattern": _multiline(), "replace": _multiline()},
            optional={
                "case_insensitive": ["BOOLEAN", {"default": True}],
                "multiline": ["BOOLEAN", {"default": False}],
                "dotall": ["BOOLEAN", {
                    "tooltip": "When enabled, the dot (.) character will match any character including "
                    "newline characters. When disabled, dots won't match newlines.",
                    "default": False,
                }],
                "count": ["INT", {
                    "tooltip": "Maximum number of replacements to make. Set to 0 to replace all occurrences "
                    "(default). Set to 1 to replace only the first match, 2 for the first two matches, etc.",
                    "default": 0, "min": 0, "max": 100,
                }],
            },
            outputs=["STRING"], display_name="Regex Replace",
            description="Find and replace text using regex patterns.",
            python_module="comfy_extras.nodes_string", category="utils/string", output_tooltips=[None],
            extra=dict(_V3_EXTRA),
        ),
        NodeSpec(
            "StringConcatenate",
            {"string_a": _multiline(), "string_b": _multiline(),
             "delimiter": ["STRING", {"multiline": False, "default": ""}]},
            outputs=["STRING"], display_name="Concatenate", python_module="comfy_extras.nodes_string",
            category="utils/string", output_tooltips=[None], extra=dict(_V3_EXTRA),
        ),
        NodeSpec("PreviewAny", {"source": ["*", {}]}, output_node=True, display_name="Preview Any",
                 python_module="comfy_extras.nodes_preview_any", category="utils"),
    ]


def _model_nodes(models: list[str]) -> list[NodeSpec]:
    size = {"step": 8}
    return [
        NodeSpec(
            "CheckpointLoaderSimple",
            {"ckpt_name": [list(models), {"tooltip": "The name of the checkpoint (model) to load."}]},
            outputs=["MODEL", "CLIP", "VAE"], display_name="Load Checkpoint",
            description="Loads a diffusion model checkpoint, diffusion models are used to denoise latents.",
            category="loaders",
            output_tooltips=[
                "The model used for denoising latents.",
                "The CLIP model used for encoding text prompts.",
                "The VAE model used for encoding and decoding images to and from latent space.",
            ],
        ),
        NodeSpec(
            "CLIPTextEncode",
            {
                "text": ["STRING", {"multiline": True, "dynamicPrompts": True,
                                    "tooltip": "The text to be encoded."}],
                "clip": ["CLIP", {"tooltip": "The CLIP model used for encoding the text."}],
            },
            outputs=["CONDITIONING"], display_name="CLIP Text Encode (Prompt)",
            description="Encodes a text prompt using a CLIP model into an embedding that can be used to "
            "guide the diffusion model towards generating specific images.",
            category="conditioning",
            output_tooltips=[
                "A conditioning containing the embedded text used to guide the diffusion model.",
            ],
        ),
        NodeSpec(
            "KSampler",
            {
                "model": ["MODEL", {"tooltip": "The model used for denoising the input latent."}],
                "seed": _int_input(0, 0, SEED_MAX, control_after_generate=True,
                                   tooltip="The random seed used for creating the noise."),
                "steps": _int_input(20, 1, 10000,
                                    tooltip="The number of steps used in the denoising process."),
                "cfg": _float_input(
                    8.0, 0.0, 100.0, 0.1, round=0.01,
                    tooltip="The Classifier-Free Guidance scale balances creativity and adherence to "
                    "the prompt. Higher values result in images more closely matching the prompt however too "
                    "high values will negatively impact quality.",
                ),
                "sampler_name": [list(SAMPLER_NAMES), {
                    "tooltip": "The algorithm used when sampling, this can affect the quality, speed, and "
                    "style of the generated output."}],
                "scheduler": [list(SCHEDULER_NAMES), {
                    "tooltip": "The scheduler controls how noise is gradually removed to form the image."}],
                "positive": ["CONDITIONING", {"tooltip": "The conditioning describing the attributes you "
                                                         "want to include in the image."}],
                "negative": ["CONDITIONING", {"tooltip": "The conditioning describing the attributes you "
                                                         "want to exclude from the image."}],
                "latent_image": ["LATENT", {"tooltip": "The latent image to denoise."}],
                "denoise": _float_input(
                    1.0, 0.0, 1.0, 0.01,
                    tooltip="The amount of denoising applied, lower values will maintain the structure of "
                    "the initial image allowing for image to image sampling.",
                ),
            },
            outputs=["LATENT"], display_name="KSampler",
            description="Uses the provided model, positive and negative conditioning to denoise the "
            "latent image.",
            category="sampling", output_tooltips=["The denoised latent."],
        ),
        NodeSpec(
            "EmptyLatentImage",
            {
                "width": _int_input(512, 16, MAX_RESOLUTION, **size,
                                    tooltip="The width of the latent images in pixels."),
                "height": _int_input(512, 16, MAX_RESOLUTION, **size,
                                     tooltip="The height of the latent images in pixels."),
                "batch_size": _int_input(1, 1, 4096, tooltip="The number of latent images in the batch."),
            },
            outputs=["LATENT"], display_name="Empty Latent Image",
            description="Create a new batch of empty latent images to be denoised via sampling.",
            category="latent", output_tooltips=["The empty latent image batch."],
        ),
        NodeSpec(
            "VAEDecode",
            {"samples": ["LATENT", {"tooltip": "The latent to be decoded."}],
             "vae": ["VAE", {"tooltip": "The VAE model used for decoding the latent."}]},
            outputs=["IMAGE"], display_name="VAE Decode",
            description="Decodes latent images back into pixel space images.", category="latent",
            output_tooltips=["The decoded image."],
        ),
    ]


def build_node_specs(models: list[str]) -> dict[str, NodeSpec]:
    """The node table; ``models`` is what CheckpointLoaderSimple's ``ckpt_name`` accepts."""
    specs = [*_image_nodes(), *_text_nodes(), *_model_nodes(models),
             *(NodeSpec(**copy.deepcopy(spec)) for spec in NODE_SPECS)]
    return {spec.name: spec for spec in specs}


# --------------------------------------------------------------------------------------
# Prompt validation: a close port of ComfyUI's execution.validate_prompt/validate_inputs,
# so that the error documents (and their odd corners) come out the same.
# --------------------------------------------------------------------------------------

ValidationResult = tuple[bool, list[dict[str, Any]], str]


def full_type_name(klass: type) -> str:
    module = klass.__module__
    if module == "builtins":
        return klass.__qualname__
    return f"{module}.{klass.__qualname__}"


def _input_info(class_inputs: dict[str, dict[str, Any]], name: str) -> tuple[Any, str | None, dict[str, Any]]:
    for category in ("required", "optional", "hidden"):
        if name in class_inputs.get(category, {}):
            info = class_inputs[category][name]
            extra = info[1] if isinstance(info, list) and len(info) > 1 else {}
            return (info[0] if isinstance(info, list) else info), category, extra
    return None, None, {}


def _types_compatible(received: Any, expected: Any) -> bool:
    if received == expected:
        return True
    if not isinstance(received, str) or not isinstance(expected, str):
        return False
    received_set = {t.strip() for t in received.split(",")}
    expected_set = {t.strip() for t in expected.split(",")}
    if "*" in received_set or "*" in expected_set:
        return True
    return bool(received_set & expected_set)


def _convert_widget(value: Any, input_type: Any) -> Any:
    # ComfyUI unwraps {"__value__": [...]} (a list widget value that is not a link).
    if isinstance(value, dict) and "__value__" in value:
        value = value["__value__"]
    converters: dict[str, Callable[[Any], Any]] = {"INT": int, "FLOAT": float, "STRING": str, "BOOLEAN": bool}
    if isinstance(input_type, str) and input_type in converters:
        return converters[input_type](value)
    return value


def _range_error(name: str, value: Any, info: list[Any], extra: dict[str, Any]) -> dict[str, Any] | None:
    checks = (("min", "value_smaller_than_min", "smaller"), ("max", "value_bigger_than_max", "bigger"))
    for bound, kind, word in checks:
        if bound not in extra:
            continue
        out_of_range = value < extra[bound] if bound == "min" else value > extra[bound]
        if out_of_range:
            return {
                "type": kind,
                "message": f"Value {value} {word} than {bound} of {extra[bound]}",
                "details": f"{name}",
                "extra_info": {"input_name": name, "input_config": info, "received_value": value},
            }
    return None


def _combo_error(
    name: str, value: Any, input_type: Any, info: list[Any], extra: dict[str, Any]
) -> dict[str, Any] | None:
    options = extra.get("options", input_type)
    if value in options:
        return None
    input_config: list[Any] | None = info
    # ComfyUI does not echo long lists (scanned model paths) back.
    if len(options) > 20:
        list_info = f"(list of length {len(options)})"
        input_config = None
    else:
        list_info = str(options)
    return {
        "type": "value_not_in_list",
        "message": "Value not in list",
        "details": f"{name}: '{value}' not in {list_info}",
        "extra_info": {"input_name": name, "input_config": input_config, "received_value": value},
    }


def _validate_widget(
    name: str, inputs: dict[str, Any], input_type: Any, extra: dict[str, Any], checked: bool = True
) -> dict[str, Any] | None:
    value = inputs[name]
    info = [input_type, extra]
    try:
        value = _convert_widget(value, input_type)
        inputs[name] = value  # ComfyUI stores the converted value back into the prompt
    except Exception as ex:  # noqa: BLE001 - any conversion failure is reported like ComfyUI does
        return {
            "type": "invalid_input_type",
            "message": f"Failed to convert an input value to a {input_type} value",
            "details": f"{name}, {value}, {ex}",
            "extra_info": {"input_name": name, "input_config": info, "received_value": value,
                           "exception_message": str(ex)},
        }
    if not checked:  # an input of VALIDATE_INPUTS: converted only
        return None
    range_error = _range_error(name, value, info, extra)
    if range_error is not None:
        return range_error
    if isinstance(input_type, list) or input_type == "COMBO":
        return _combo_error(name, value, input_type, info, extra)
    return None


def _validate_link(
    name: str, link: list[Any], input_type: Any, extra: dict[str, Any],
    prompt: dict[str, Any], specs: dict[str, NodeSpec], validated: dict[str, ValidationResult],
) -> tuple[dict[str, Any] | None, bool]:
    """Returns (error, upstream_ok). Lookups of a missing node raise on purpose: ComfyUI turns
    that KeyError into ``exception_during_validation`` one level up."""
    info = [input_type, extra]
    if len(link) != 2:
        return {
            "type": "bad_linked_input",
            "message": "Bad linked input, must be a length-2 list of [node_id, slot_index]",
            "details": f"{name}",
            "extra_info": {"input_name": name, "input_config": info, "received_value": link},
        }, True
    source_id = link[0]
    source_class = prompt[source_id]["class_type"]
    received_type = specs[source_class].outputs[link[1]]
    if not _types_compatible(received_type, input_type):
        return {
            "type": "return_type_mismatch",
            "message": "Return type mismatch between linked nodes",
            "details": f"{name}, received_type({received_type}) mismatch input_type({input_type})",
            "extra_info": {"input_name": name, "input_config": info, "received_type": received_type,
                           "linked_node": link},
        }, True
    try:
        upstream = validate_inputs(prompt, source_id, specs, validated)
        return None, upstream[0]
    except Exception as ex:  # noqa: BLE001 - mirrors ComfyUI's exception_during_inner_validation
        validated[source_id] = (False, [{
            "type": "exception_during_inner_validation",
            "message": "Exception when validating inner node",
            "details": str(ex),
            "extra_info": {
                "input_name": name, "input_config": info, "exception_message": str(ex),
                "exception_type": full_type_name(type(ex)),
                "traceback": traceback.format_tb(ex.__traceback__), "linked_node": link,
            },
        }], source_id)
        return None, False


def validate_inputs(
    prompt: dict[str, Any], node_id: str, specs: dict[str, NodeSpec], validated: dict[str, ValidationResult]
) -> ValidationResult:
    if node_id in validated:
        return validated[node_id]
    inputs = prompt[node_id]["inputs"]
    spec = specs[prompt[node_id]["class_type"]]
    class_inputs = spec.input_types()
    errors: list[dict[str, Any]] = []
    valid = True
    for name in spec.declared_inputs():
        input_type, category, extra = _input_info(class_inputs, name)
        if name not in inputs:
            if category == "required":
                errors.append({"type": "required_input_missing", "message": "Required input is missing",
                               "details": f"{name}", "extra_info": {"input_name": name}})
            continue
        if isinstance(inputs[name], list):
            error, upstream_ok = _validate_link(
                name, inputs[name], input_type, extra, prompt, specs, validated
            )
            valid = valid and upstream_ok
        else:
            error = _validate_widget(name, inputs, input_type, extra, name not in spec.validated)
        if error is not None:
            errors.append(error)
    if spec.validate is not None:
        errors.extend(spec.validate(inputs))
    result: ValidationResult = (False, errors, node_id) if errors or not valid else (True, [], node_id)
    validated[node_id] = result
    return result


def _prompt_error(kind: str, message: str, details: str = "") -> dict[str, Any]:
    return {"type": kind, "message": message, "details": details, "extra_info": {}}


def _output_nodes(
    prompt: dict[str, Any], specs: dict[str, NodeSpec], targets: list[str] | None
) -> tuple[list[str], dict[str, Any] | None]:
    outputs: list[str] = []
    for node_id in prompt:
        # `in` rather than isinstance on purpose: ComfyUI does the same, so odd node values
        # (lists, strings) fail the same way.
        if "class_type" not in prompt[node_id]:
            return [], _prompt_error("invalid_prompt",
                                     "Cannot execute because a node is missing the class_type property.",
                                     f"Node ID '#{node_id}'")
        class_type = prompt[node_id]["class_type"]
        spec = specs.get(class_type)
        if spec is None:
            return [], _prompt_error("invalid_prompt",
                                     f"Cannot execute because node {class_type} does not exist.",
                                     f"Node ID '#{node_id}'")
        if spec.output_node and (targets is None or node_id in targets):
            outputs.append(node_id)
    if not outputs:
        return [], _prompt_error("prompt_no_outputs", "Prompt has no outputs")
    return outputs, None


def _validate_output(
    prompt: dict[str, Any], output_id: str, specs: dict[str, NodeSpec], validated: dict[str, ValidationResult]
) -> tuple[bool, list[dict[str, Any]]]:
    try:
        valid, reasons, _ = validate_inputs(prompt, output_id, specs, validated)
        return valid, reasons
    except Exception as ex:  # noqa: BLE001 - e.g. the KeyError of a link to a missing node
        reasons = [{
            "type": "exception_during_validation",
            "message": "Exception when validating node",
            "details": str(ex),
            "extra_info": {"exception_type": full_type_name(type(ex)),
                           "traceback": traceback.format_tb(ex.__traceback__)},
        }]
        validated[output_id] = (False, reasons, output_id)
        return False, reasons


def validate_prompt(
    prompt: dict[str, Any], specs: dict[str, NodeSpec], targets: list[str] | None = None
) -> tuple[bool, dict[str, Any] | None, list[str], dict[str, Any]]:
    """(valid, error, good_outputs, node_errors) exactly like ComfyUI's validate_prompt."""
    outputs, error = _output_nodes(prompt, specs, targets)
    if error is not None:
        return False, error, [], {}
    good_outputs: list[str] = []
    failed: list[tuple[str, list[dict[str, Any]]]] = []
    node_errors: dict[str, Any] = {}
    validated: dict[str, ValidationResult] = {}
    for output_id in outputs:
        valid, reasons = _validate_output(prompt, output_id, specs, validated)
        if valid:
            good_outputs.append(output_id)
            continue
        failed.append((output_id, reasons))
        # Upstream failures make every downstream node invalid, but only nodes with their own
        # reasons are reported; each one lists the outputs it broke.
        for node_id, (node_valid, node_reasons, _) in validated.items():
            if node_valid is not True and node_reasons:
                entry = node_errors.setdefault(node_id, {
                    "errors": node_reasons, "dependent_outputs": [],
                    "class_type": prompt[node_id]["class_type"],
                })
                entry["dependent_outputs"].append(output_id)
    if not good_outputs:
        details = "\n".join(f"{r['message']}: {r['details']}" for _, reasons in failed for r in reasons)
        return False, _prompt_error("prompt_outputs_failed_validation", "Prompt outputs failed validation",
                                    details), [], node_errors
    return True, None, good_outputs, node_errors


# --------------------------------------------------------------------------------------
# PNG writing (zlib + struct, no Pillow).
# --------------------------------------------------------------------------------------

def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def _pixel_rows(
    width: int, height: int, rgb: tuple[int, int, int], noise_seed: int | None
) -> Iterator[bytes]:
    if noise_seed is None:
        row = b"\x00" + bytes(rgb) * width
        for _ in range(height):
            yield row
        return
    # A small repeating tile of noisy rows: looks like noise, costs little, and stays inside
    # zlib's window for typical widths so it still compresses.
    rng = random.Random(noise_seed)
    tile = []
    for _ in range(8):
        noise = rng.randbytes(width * 3)
        tile.append(b"\x00" + bytes(min(255, rgb[i % 3] + (n >> 1)) for i, n in enumerate(noise)))
    for y in range(height):
        yield tile[y % len(tile)]


def encode_png(width: int, height: int, rgb: tuple[int, int, int], noise_seed: int | None = None,
               text: dict[str, str] | None = None) -> bytes:
    """A valid 8-bit RGB PNG; rows are compressed in blocks so large images stay cheap."""
    compressor = zlib.compressobj(6)
    idat: list[bytes] = []
    block: list[bytes] = []
    for row in _pixel_rows(width, height, rgb, noise_seed):
        block.append(row)
        if len(block) == 256:
            idat.append(compressor.compress(b"".join(block)))
            block = []
    idat.append(compressor.compress(b"".join(block)))
    idat.append(compressor.flush())
    chunks = [_png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))]
    for key, value in (text or {}).items():
        payload = key.encode("latin-1") + b"\x00" + value.encode("latin-1", "replace")
        chunks.append(_png_chunk(b"tEXt", payload))
    chunks.append(_png_chunk(b"IDAT", b"".join(idat)))
    chunks.append(_png_chunk(b"IEND", b""))
    return b"\x89PNG\r\n\x1a\n" + b"".join(chunks)


# --------------------------------------------------------------------------------------
# Execution: values flowing between nodes, the node functions, scheduling and caching.
# --------------------------------------------------------------------------------------

@dataclass
class _Image:
    width: int
    height: int
    batch: int
    rgb: tuple[int, int, int]
    noise_seed: int | None = None

    def __str__(self) -> str:
        return f"tensor(<image batch={self.batch} height={self.height} width={self.width} rgb={self.rgb}>)"


@dataclass
class _Latent:
    width: int
    height: int
    batch: int
    seed: int | None = None

    def __str__(self) -> str:
        return f"{{'samples': tensor(<latent batch={self.batch} {self.height // 8}x{self.width // 8}>)}}"


@dataclass
class _Handle:
    """A model, CLIP, VAE or conditioning: nothing to compute, only passed along."""

    kind: str
    name: str

    def __str__(self) -> str:
        return f"<{self.kind} {self.name}>"


class _Interrupted(Exception):
    pass


def _rgb(color: int) -> tuple[int, int, int]:
    return (color >> 16) & 0xFF, (color >> 8) & 0xFF, color & 0xFF


def _is_link(value: Any) -> bool:
    return (isinstance(value, list) and len(value) == 2
            and isinstance(value[0], str) and isinstance(value[1], int))


def _now_ms() -> int:
    return int(time.time() * 1000)


def format_value(value: Any) -> Any:
    """How ComfyUI shows a node's inputs in an execution_error message."""
    if value is None or isinstance(value, (int, float, bool, str)):
        return value
    return str(value)


def _compute_vars(prefix: str, width: int, height: int) -> str:
    now = time.localtime()
    replacements = {
        "%width%": str(width), "%height%": str(height), "%year%": str(now.tm_year),
        "%month%": str(now.tm_mon).zfill(2), "%day%": str(now.tm_mday).zfill(2),
        "%hour%": str(now.tm_hour).zfill(2), "%minute%": str(now.tm_min).zfill(2),
        "%second%": str(now.tm_sec).zfill(2),
    }
    for key, value in replacements.items():
        prefix = prefix.replace(key, value)
    return prefix


def get_save_image_path(filename_prefix: str, output_dir: str, width: int = 0,
                        height: int = 0) -> tuple[str, str, int, str]:
    """Port of folder_paths.get_save_image_path: (folder, filename, counter, subfolder).

    The counter continues after the highest ``<prefix>_NNNNN_`` already in the folder, so
    numbering carries on across runs (and restarts) like in ComfyUI."""
    if "%" in filename_prefix:
        filename_prefix = _compute_vars(filename_prefix, width, height)
    subfolder = os.path.dirname(os.path.normpath(filename_prefix))
    filename = os.path.basename(os.path.normpath(filename_prefix))
    full_output_folder = os.path.join(output_dir, subfolder)
    common = os.path.commonpath((output_dir, os.path.abspath(full_output_folder)))
    if common != output_dir:
        raise Exception(
            "**** ERROR: Saving image outside the output folder is not allowed."
            f"\n full_output_folder: {os.path.abspath(full_output_folder)}"
            f"\n         output_dir: {output_dir}"
            f"\n         commonpath: {common}"
        )
    os.makedirs(full_output_folder, exist_ok=True)
    counter = 1
    for existing in os.listdir(full_output_folder):
        digits = _existing_counter(existing, filename)
        if digits is not None:
            counter = max(counter, digits + 1)
    return full_output_folder, filename, counter, subfolder


def _existing_counter(existing: str, filename: str) -> int | None:
    prefix_len = len(filename)
    same_prefix = os.path.normcase(existing[:prefix_len]) == os.path.normcase(filename)
    if not same_prefix or existing[prefix_len:prefix_len + 1] != "_":
        return None
    try:
        return int(existing[prefix_len + 1:].split("_")[0])
    except ValueError:
        return 0


@dataclass
class _RunContext:
    prompt_id: str
    node_id: str
    prompt: dict[str, Any]
    extra_data: dict[str, Any]
    state: dict[str, Any]  # per (node id, class) object state that survives between prompts


def _signatures(prompt: dict[str, Any], changed: dict[str, Any] | None = None) -> dict[str, str]:
    """Cache keys: a hash of class, widget values and the keys of everything upstream,
    so identical sub-graphs share keys whatever their node ids. `changed[node_id]` is the
    node's IS_CHANGED value (LoadImage: [the file's hash]), part of its key; NaN (IS_CHANGED
    failed) equals nothing, so that node never comes from the cache."""
    memo: dict[str, str] = {}

    def signature(node_id: str, visiting: frozenset[str]) -> str:
        if node_id in memo:
            return memo[node_id]
        node = prompt.get(node_id) if isinstance(node_id, str) else None
        if not isinstance(node, dict) or node_id in visiting:
            return f"<unresolved {node_id!r}>"
        inputs = node.get("inputs") if isinstance(node.get("inputs"), dict) else {}
        parts = []
        for name in sorted(inputs):
            value = inputs[name]
            if _is_link(value):
                parts.append([name, "LINK", signature(value[0], visiting | {node_id}), value[1]])
            else:
                parts.append([name, value])
        marker = (changed or {}).get(node_id)
        if isinstance(marker, float):
            marker = uuid.uuid4().hex
        key = [node.get("class_type"), parts] + ([marker] if marker is not None else [])
        text = json.dumps(key, sort_keys=True, default=str)
        memo[node_id] = hashlib.sha256(text.encode()).hexdigest()
        return memo[node_id]

    return {node_id: signature(node_id, frozenset()) for node_id in prompt}


def execution_order(prompt: dict[str, Any], outputs: list[str], cached: set[str],
                    is_output: Callable[[str], bool]) -> list[str]:
    """Order ComfyUI runs the needed nodes in (comfy_execution/graph.py, ExecutionList).

    Each output is added with its uncached inputs, depth first (the last input popped first),
    which fixes the order of the pending nodes. Then, again and again, among the pending nodes
    whose inputs have all run: an output node first (ComfyUI's "ux friendly" pick), else one
    feeding an output, else one two steps before an output, else the first of them. The
    recorded WebSocket run of the text workflow (ws_success_text) ran 6, 9, 1, 7, 8, 2."""
    pending: dict[str, int] = {}  # node -> inputs not run yet; insertion order matters
    blocking: dict[str, set[str]] = {}  # node -> the nodes waiting for it
    for output in outputs:
        links: list[tuple[str, str]] = []
        stack = [output]
        while stack:
            node_id = stack.pop()
            if node_id in pending:
                continue
            pending[node_id] = 0
            blocking[node_id] = set()
            for value in prompt[node_id]["inputs"].values():
                if _is_link(value):
                    if value[0] not in cached:
                        stack.append(value[0])
                    links.append((value[0], node_id))
        for source, target in links:
            if source not in cached and target not in blocking[source]:
                blocking[source].add(target)
                pending[target] += 1
    order: list[str] = []
    while pending:
        ready = [node_id for node_id, waiting in pending.items() if not waiting]
        if not ready:
            break  # a cycle; validation normally rejects those first
        picked = _pick_ready(ready, blocking, is_output)
        order.append(picked)
        del pending[picked]
        for target in blocking.pop(picked):
            pending[target] -= 1
    return order


def _pick_ready(ready: list[str], blocking: dict[str, set[str]], is_output: Callable[[str], bool]) -> str:
    for node_id in ready:
        if is_output(node_id):
            return node_id
    for node_id in ready:
        if any(is_output(target) for target in blocking[node_id]):
            return node_id
    for node_id in ready:
        if any(is_output(after) for target in blocking[node_id] for after in blocking[target]):
            return node_id
    return ready[0]


class _Executor:
    """Runs one prompt at a time (ComfyUI's PromptExecutor, much simplified)."""

    def __init__(self, specs: dict[str, NodeSpec], output_dir: str, temp_dir: str, delay: float,
                 use_cache: bool, files: InputFiles) -> None:
        self.specs = specs
        self.output_dir = output_dir
        self.temp_dir = temp_dir
        self.files = files
        self.delay = delay
        self.use_cache = use_cache
        self.interrupt = threading.Event()
        # signature -> (node outputs, ui); like ComfyUI's classic cache it only keeps what
        # the current prompt also contains, so an identical prompt *right after* is cached.
        self._cache: dict[str, tuple[tuple[Any, ...], dict[str, Any] | None]] = {}
        self._objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.ws = WebSocketHub()  # what a run tells the sockets (standin_ws.py)

    def reset(self) -> None:
        self._cache.clear()
        self._objects.clear()

    def pause(self) -> None:
        """The prompt's "work": `delay` seconds, cut short by an interrupt. The delay is read
        again while waiting, so lowering it also ends a wait that has already begun."""
        started = time.monotonic()
        while not self.interrupt.is_set():
            left = self.delay - (time.monotonic() - started)
            if left <= 0:
                return
            self.ws.working(time.monotonic() - started, self.delay)
            self.interrupt.wait(min(left, 0.05))

    def execute(self, item: tuple[Any, ...]) -> tuple[dict[str, Any], dict[str, Any]]:
        """Returns (history_result with outputs/meta, status dict)."""
        _, prompt_id, prompt, extra_data, outputs_to_execute = item[:5]
        run = _Run(self, prompt_id, prompt, extra_data, list(outputs_to_execute))
        return run.go()

    # -- caches ---------------------------------------------------------------------------

    def prepare_caches(self, prompt: dict[str, Any], signatures: dict[str, str]) -> set[str]:
        keep = set(signatures.values())
        self._cache = {sig: value for sig, value in self._cache.items() if sig in keep}
        current = {(node_id, str(node.get("class_type"))) for node_id, node in prompt.items()}
        self._objects = {key: state for key, state in self._objects.items() if key in current}
        if not self.use_cache:
            return set()
        return {node_id for node_id, sig in signatures.items() if sig in self._cache}

    def cached(self, signature: str) -> tuple[tuple[Any, ...], dict[str, Any] | None]:
        return self._cache[signature]

    def remember(self, signature: str, outputs: tuple[Any, ...], ui: dict[str, Any] | None) -> None:
        if self.use_cache:
            self._cache[signature] = (outputs, ui)

    def object_state(self, node_id: str, class_type: str) -> dict[str, Any]:
        return self._objects.setdefault((node_id, class_type), {})

    # -- node functions -------------------------------------------------------------------

    def call(self, ctx: _RunContext, class_type: str,
             kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any] | None]:
        return getattr(self, f"_node_{class_type}")(ctx, **kwargs)

    def _node_EmptyImage(self, ctx: _RunContext, width: int, height: int, batch_size: int = 1,
                         color: int = 0) -> tuple[tuple[Any, ...], None]:
        return (_Image(width, height, batch_size, _rgb(color)),), None

    def _node_EmptyLatentImage(self, ctx: _RunContext, width: int, height: int,
                               batch_size: int = 1) -> tuple[tuple[Any, ...], None]:
        return (_Latent(width, height, batch_size),), None

    def _node_CheckpointLoaderSimple(self, ctx: _RunContext, ckpt_name: str) -> tuple[tuple[Any, ...], None]:
        return (_Handle("MODEL", ckpt_name), _Handle("CLIP", ckpt_name), _Handle("VAE", ckpt_name)), None

    def _node_CLIPTextEncode(self, ctx: _RunContext, text: str,
                             clip: _Handle) -> tuple[tuple[Any, ...], None]:
        return (_Handle("CONDITIONING", text),), None

    def _node_KSampler(self, ctx: _RunContext, model: Any, seed: int, steps: int, cfg: float,
                       sampler_name: str, scheduler: str, positive: Any, negative: Any,
                       latent_image: _Latent, denoise: float = 1.0) -> tuple[tuple[Any, ...], None]:
        return (replace(latent_image, seed=seed),), None

    def _node_VAEDecode(self, ctx: _RunContext, samples: _Latent, vae: Any) -> tuple[tuple[Any, ...], None]:
        seed = samples.seed or 0
        rgb = _rgb(zlib.crc32(str(seed).encode()) & 0xFFFFFF)
        size = (max(8, samples.width // 8 * 8), max(8, samples.height // 8 * 8))
        return (_Image(size[0], size[1], samples.batch, rgb, seed),), None

    def _node_ImageAddNoise(self, ctx: _RunContext, image: _Image, seed: int,
                            strength: float = 0.5) -> tuple[tuple[Any, ...], None]:
        return (replace(image, noise_seed=seed),), None

    def _node_ImageBlur(self, ctx: _RunContext, image: _Image, blur_radius: int,
                        sigma: float) -> tuple[tuple[Any, ...], None]:
        return (replace(image),), None

    def _node_ImageInvert(self, ctx: _RunContext, image: _Image) -> tuple[tuple[Any, ...], None]:
        if isinstance(image, PixelImage):
            return (image.inverted(),), None
        r, g, b = image.rgb
        return (replace(image, rgb=(255 - r, 255 - g, 255 - b)),), None

    def _node_ImageBlend(self, ctx: _RunContext, image1: _Image, image2: _Image, blend_factor: float,
                         blend_mode: str) -> tuple[tuple[Any, ...], None]:
        pairs = zip(image1.rgb, image2.rgb)
        mixed = tuple(round(a * (1 - blend_factor) + b * blend_factor) for a, b in pairs)
        return (replace(image1, rgb=mixed),), None  # type: ignore[arg-type]

    def _node_ImageScale(self, ctx: _RunContext, image: _Image, upscale_method: str, width: int, height: int,
                         crop: str) -> tuple[tuple[Any, ...], None]:
        if width == 0 and height == 0:
            width, height = image.width, image.height
        elif width == 0:
            width = max(1, round(image.width * height / image.height))
        elif height == 0:
            height = max(1, round(image.height * width / image.width))
        return (replace(image, width=width, height=height),), None

    def _node_LoadImage(self, ctx: _RunContext, image: str) -> tuple[tuple[Any, ...], None]:
        return self.files.load_image(image), None

    def _node_LoadImageMask(self, ctx: _RunContext, image: str, channel: str) -> tuple[tuple[Any, ...], None]:
        return (self.files.load_image_mask(image, channel),), None

    def _node_ImageCompositeMasked(self, ctx: _RunContext, destination: Any, source: Any, x: int, y: int,
                                   resize_source: bool, mask: PixelMask | None = None
                                   ) -> tuple[tuple[Any, ...], None]:
        pictures = [image if isinstance(image, PixelImage) else solid(image.width, image.height, image.batch,
                                                                       image.rgb)
                    for image in (destination, source)]
        return (composite(pictures[0], pictures[1], x, y, resize_source, mask),), None

    def _node_PrimitiveString(self, ctx: _RunContext, value: str) -> tuple[tuple[Any, ...], None]:
        return (value,), None

    def _node_PrimitiveStringMultiline(self, ctx: _RunContext, value: str) -> tuple[tuple[Any, ...], None]:
        return (value,), None

    def _node_RegexReplace(self, ctx: _RunContext, string: str, regex_pattern: str, replace: str,
                           case_insensitive: bool = True, multiline: bool = False, dotall: bool = False,
                           count: int = 0) -> tuple[tuple[Any, ...], None]:
        flags = (re.IGNORECASE if case_insensitive else 0) | (re.MULTILINE if multiline else 0)
        flags |= re.DOTALL if dotall else 0
        return (re.sub(regex_pattern, replace, string, count=count, flags=flags),), None

    def _node_StringConcatenate(self, ctx: _RunContext, string_a: str, string_b: str,
                                delimiter: str = "") -> tuple[tuple[Any, ...], None]:
        return (delimiter.join([string_a, string_b]),), None

    def _node_PreviewAny(self, ctx: _RunContext,
                         source: Any = None) -> tuple[tuple[Any, ...], dict[str, Any]]:
        if isinstance(source, str):
            value = source
        elif isinstance(source, (int, float, bool)):
            value = str(source)
        elif source is None:
            value = "None"
        else:
            try:
                value = json.dumps(source)
            except (TypeError, ValueError):
                value = str(source)
        return (), {"text": [value]}

    def _node_SaveImage(self, ctx: _RunContext, images: _Image,
                        filename_prefix: str = "ComfyUI") -> tuple[tuple[Any, ...], dict[str, Any]]:
        return (), {"images": self._write_images(ctx, images, filename_prefix, self.output_dir, "output")}

    def _node_PreviewImage(self, ctx: _RunContext, images: _Image) -> tuple[tuple[Any, ...], dict[str, Any]]:
        # ComfyUI picks the random part once per node object, which lives while the node id
        # (and class) stays in the prompts.
        suffix = ctx.state.setdefault("prefix_append", "".join(random.choices(string.ascii_lowercase, k=5)))
        prefix = f"ComfyUI_temp_{suffix}"
        return (), {"images": self._write_images(ctx, images, prefix, self.temp_dir, "temp")}

    def _write_images(self, ctx: _RunContext, images: Any, prefix: str, base_dir: str,
                      kind: str) -> list[dict[str, str]]:
        if not isinstance(images, (_Image, PixelImage)):  # nothing says how big: ComfyUI-ish default
            images = _Image(DEFAULT_IMAGE_SIZE, DEFAULT_IMAGE_SIZE, 1, (0, 0, 0))
        folder, filename, counter, subfolder = get_save_image_path(
            prefix, base_dir, images.width, images.height
        )
        text = {"prompt": json.dumps(ctx.prompt)}
        for key, value in (ctx.extra_data.get("extra_pnginfo") or {}).items():
            text[key] = json.dumps(value)
        results = []
        for batch_number in range(images.batch):
            name = f"{filename.replace('%batch_num%', str(batch_number))}_{counter:05}_.png"
            seed = None if images.noise_seed is None else images.noise_seed + batch_number
            if isinstance(images, PixelImage):
                data = images.png(batch_number, text)
            else:
                data = encode_png(images.width, images.height, images.rgb, seed, text)
            with open(os.path.join(folder, name), "wb") as handle:
                handle.write(data)
            results.append({"filename": name, "subfolder": subfolder, "type": kind})
            counter += 1
        return results


class _Run:
    """One execution of one prompt; builds the status messages ComfyUI keeps in history."""

    def __init__(self, executor: _Executor, prompt_id: str, prompt: dict[str, Any],
                 extra_data: dict[str, Any], outputs: list[str]) -> None:
        self.executor = executor
        self.prompt_id = prompt_id
        self.prompt = prompt
        self.extra_data = extra_data
        self.outputs = outputs
        self.messages: list[list[Any]] = []
        self.results: dict[str, tuple[Any, ...]] = {}
        self.ui: dict[str, dict[str, Any]] = {}
        self.executed: list[str] = []

    def add(self, event: str, data: dict[str, Any]) -> None:
        self.messages.append([event, {**data, "timestamp": _now_ms()}])
        self.executor.ws.history_message(event, self.messages[-1][1])

    def is_output(self, node_id: str) -> bool:
        return self.executor.specs[self.prompt[node_id]["class_type"]].output_node

    def go(self) -> tuple[dict[str, Any], dict[str, Any]]:
        self.add("execution_start", {"prompt_id": self.prompt_id})
        changed = self.executor.files.is_changed(self.prompt)
        signatures = _signatures(self.prompt, changed)
        for node_id, value in changed.items():
            # ComfyUI keeps the value in the executed prompt (what SaveImage writes in its
            # PNG), not in the queue's copy that /queue and /history show.
            self.prompt[node_id]["is_changed"] = value
        cached = self.executor.prepare_caches(self.prompt, signatures)
        cached_in_order = [node_id for node_id in self.prompt if node_id in cached]
        self.add("execution_cached", {"nodes": cached_in_order, "prompt_id": self.prompt_id})
        for node_id in cached:
            self.results[node_id] = self.executor.cached(signatures[node_id])[0]
        success = self._run_nodes(execution_order(self.prompt, self.outputs, cached, self.is_output),
                                  cached, signatures)
        if success:
            self.add("execution_success", {"prompt_id": self.prompt_id})
        status = {"status_str": "success" if success else "error", "completed": success,
                  "messages": self.messages}
        meta = {node_id: {"node_id": node_id, "display_node": node_id, "parent_node": None,
                          "real_node_id": node_id} for node_id in self.ui}
        return {"outputs": self.ui, "meta": meta}, status

    def _run_nodes(self, order: list[str], cached: set[str], signatures: dict[str, str]) -> bool:
        slept = False
        for node_id in order:
            class_type = self.prompt[node_id]["class_type"]
            if not slept and self.is_output(node_id):
                # The "work" happens before the first output node, so an interrupt is seen at
                # that node boundary, as in the recordings (node_id = the output node).
                self.executor.pause()
                slept = True
            self.executor.ws.node_started(self.prompt_id, node_id, node_id in cached)
            if self.executor.interrupt.is_set():
                self.add("execution_interrupted", {"prompt_id": self.prompt_id, "node_id": node_id,
                                                   "node_type": class_type, "executed": list(self.executed)})
                return False
            if not self._run_node(node_id, class_type, node_id in cached, signatures[node_id]):
                return False
            self.executor.ws.node_finished(self.prompt_id, node_id, self.ui.get(node_id), node_id in cached)
            self.executed.append(node_id)
        return True

    def _run_node(self, node_id: str, class_type: str, is_cached: bool, signature: str) -> bool:
        if is_cached:
            outputs, ui = self.executor.cached(signature)
        else:
            kwargs = self._inputs(node_id)
            ctx = _RunContext(self.prompt_id, node_id, self.prompt, self.extra_data,
                              self.executor.object_state(node_id, class_type))
            try:
                outputs, ui = self.executor.call(ctx, class_type, kwargs)
            except Exception as ex:  # noqa: BLE001 - any node failure becomes an execution_error
                self._add_error(node_id, class_type, ex, kwargs)
                return False
            self.executor.remember(signature, outputs, ui)
        self.results[node_id] = outputs
        if ui is not None:
            self.ui[node_id] = ui
        return True

    def _inputs(self, node_id: str) -> dict[str, Any]:
        node = self.prompt[node_id]
        spec = self.executor.specs[node["class_type"]]
        kwargs: dict[str, Any] = {}
        for name in spec.declared_inputs():
            if name not in node["inputs"]:
                continue
            value = node["inputs"][name]
            kwargs[name] = self.results[value[0]][value[1]] if _is_link(value) else value
        return kwargs

    def _add_error(self, node_id: str, class_type: str, ex: Exception, kwargs: dict[str, Any]) -> None:
        current_inputs = {name: [format_value(value)] for name, value in kwargs.items()}
        if self.executor.specs[class_type].hidden:
            current_inputs["prompt"] = [str(self.prompt)]
            current_inputs["extra_pnginfo"] = [format_value(self.extra_data.get("extra_pnginfo"))]
        self.add("execution_error", {
            "prompt_id": self.prompt_id,
            "node_id": node_id,
            "node_type": class_type,
            "executed": list(self.executed),
            "exception_message": f"{ex}\n",
            "exception_type": full_type_name(type(ex)),
            "traceback": traceback.format_tb(ex.__traceback__),
            "current_inputs": current_inputs,
            "current_outputs": list(self.prompt),
        })


# --------------------------------------------------------------------------------------
# Queue and history (ComfyUI's PromptQueue).
# --------------------------------------------------------------------------------------

class _PromptQueue:
    def __init__(self, history_limit: int) -> None:
        self.mutex = threading.RLock()
        self.not_empty = threading.Condition(self.mutex)
        self.queue: list[tuple[Any, ...]] = []  # a heap, shown as-is (heap order) like ComfyUI
        self.currently_running: dict[int, tuple[Any, ...]] = {}
        self.task_counter = 0
        self.history: dict[str, dict[str, Any]] = {}
        self.history_limit = history_limit
        # Bumped by restart(): work picked up before it must not reach the new history.
        self.epoch = 0

    def put(self, item: tuple[Any, ...]) -> None:
        with self.mutex:
            heapq.heappush(self.queue, item)
            self.not_empty.notify()

    def get(self, timeout: float, on_start: Callable[[], None]) -> tuple[tuple[Any, ...], int, int] | None:
        with self.not_empty:
            if not self.queue:
                self.not_empty.wait(timeout)
            if not self.queue:
                return None
            item = heapq.heappop(self.queue)
            item_id = self.task_counter
            self.currently_running[item_id] = copy.deepcopy(item)
            self.task_counter += 1
            on_start()
            return item, item_id, self.epoch

    def task_done(self, item_id: int, epoch: int, history_result: dict[str, Any],
                  status: dict[str, Any]) -> None:
        with self.mutex:
            prompt = self.currently_running.pop(item_id, None)
            if prompt is None or epoch != self.epoch:
                return
            if len(self.history) > self.history_limit:
                self.history.pop(next(iter(self.history)))
            entry = {"prompt": list(prompt[:5]), "outputs": {}, "status": status}
            entry.update(history_result)
            self.history[prompt[1]] = entry

    def discard(self, item_id: int) -> None:
        with self.mutex:
            self.currently_running.pop(item_id, None)

    def current_queue(self) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        with self.mutex:
            return copy.deepcopy(list(self.currently_running.values())), copy.deepcopy(self.queue)

    def tasks_remaining(self) -> int:
        with self.mutex:
            return len(self.queue) + len(self.currently_running)

    def running_ids(self) -> list[str]:
        with self.mutex:
            return [item[1] for item in self.currently_running.values()]

    def wipe_queue(self) -> None:
        with self.mutex:
            self.queue = []

    def delete_queue_item(self, prompt_id: Any) -> None:
        with self.mutex:
            for index, item in enumerate(self.queue):
                if item[1] == prompt_id:
                    self.queue.pop(index)
                    heapq.heapify(self.queue)
                    return

    def get_history(self, prompt_id: str | None = None, max_items: int | None = None,
                    offset: int = -1) -> dict[str, Any]:
        with self.mutex:
            if prompt_id is not None:
                if prompt_id not in self.history:
                    return {}
                return {prompt_id: copy.deepcopy(self.history[prompt_id])}
            # Same arithmetic as ComfyUI: without an offset, max_items means "the newest N";
            # with offset=0 it means "the oldest N".
            if offset < 0 and max_items is not None:
                offset = len(self.history) - max_items
            out: dict[str, Any] = {}
            for index, key in enumerate(self.history):
                if index >= offset:
                    out[key] = self.history[key]
                    if max_items is not None and len(out) >= max_items:
                        break
            return out

    def wipe_history(self) -> None:
        with self.mutex:
            self.history = {}

    def delete_history_item(self, prompt_id: Any) -> None:
        with self.mutex:
            self.history.pop(prompt_id, None)


# --------------------------------------------------------------------------------------
# HTTP layer.
# --------------------------------------------------------------------------------------

@dataclass
class _Response:
    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    file_path: str | None = None
    file_start: int = 0
    file_length: int = 0
    close: bool = False


# GET /object_info of the real ComfyUI 0.3.64 the recordings come from (496 node classes).
RECORDED_OBJECT_INFO = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                    "tests", "fixtures", "comfyui", "object_info_full.json")
_recorded_object_info_cache: list[dict[str, Any]] = []


def _recorded_object_info() -> dict[str, Any]:
    """The recorded node list, read once; empty where the recording is not at hand (the
    stand-in copied out of the repository), and /object_info lists the stand-in's own nodes."""
    if not _recorded_object_info_cache:
        try:
            with open(RECORDED_OBJECT_INFO, encoding="utf-8") as file:
                _recorded_object_info_cache.append(json.load(file))
        except (OSError, ValueError):
            _recorded_object_info_cache.append({})
    return _recorded_object_info_cache[0]


def _json(data: Any, status: int = 200) -> _Response:
    return _Response(status, json.dumps(data).encode(), JSON_CONTENT_TYPE)


def _empty(status: int = 200) -> _Response:
    return _Response(status)


def _text(status: int, text: str, **kwargs: Any) -> _Response:
    return _Response(status, text.encode(), TEXT_CONTENT_TYPE, **kwargs)


def _server_error() -> _Response:
    return _text(500, SERVER_ERROR_TEXT, close=True)


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # ComfyUI resolves names here; a stand-in should not do DNS lookups


def origin_forbidden(host: str | None, origin: str | None) -> bool:
    """ComfyUI's origin_only_middleware: a loopback Host with a different Origin gets 403."""
    if not host or not origin:
        return False
    host_domain: str | None = host.lower()
    parsed = urlparse(origin)
    origin_domain: str | None = parsed.netloc.lower()
    host_parsed = urlsplit("//" + host.lower())
    loopback = _is_loopback(host_parsed.hostname)
    if parsed.port is None:  # compare without ports when either side has none
        host_domain = host_parsed.hostname
    if host_parsed.port is None:
        origin_domain = parsed.hostname
    return bool(loopback and host_domain and origin_domain and host_domain != origin_domain)


def _parse_json_body(body: bytes) -> Any:
    # aiohttp's request.json(): decode and json.loads; failures end up as a 500.
    return json.loads(body.decode("utf-8"))


def _first(query: dict[str, list[str]], name: str, default: str | None = None) -> str | None:
    values = query.get(name)
    return values[0] if values else default


def _byte_range(header: str | None, size: int) -> tuple[int, int] | None | bool:
    """(start, length) for a single 'bytes=' range; None when absent; False when unsatisfiable."""
    if not header or not header.startswith("bytes=") or "," in header:
        return None
    first, _, last = header[6:].strip().partition("-")
    try:
        if first == "":
            suffix = int(last)
            start, end = max(0, size - suffix), size - 1
        else:
            start = int(first)
            end = int(last) if last else size - 1
    except ValueError:
        return None
    end = min(end, size - 1)
    if start >= size or start > end:
        return False
    return start, end - start + 1


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body leave in separate writes; without TCP_NODELAY each keep-alive
    # response waits ~40 ms for the client's delayed ACK.
    disable_nagle_algorithm = True
    server: _Server

    def version_string(self) -> str:
        return f"Python/{sys.version_info[0]}.{sys.version_info[1]} comfyui-standin/{COMFYUI_VERSION}"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        if self.server.standin.verbose:
            super().log_message(format, *args)

    def do_GET(self) -> None:
        self._dispatch()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_GET

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _read_chunked(self) -> bytes:
        parts = []
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(parts)
            parts.append(self.rfile.read(size))
            self.rfile.readline()

    def _dispatch(self) -> None:
        standin = self.server.standin
        standin._record(self.command, self.path)
        if standin.ws.upgrade(self):  # GET /ws: this thread serves the socket until it closes
            return
        try:
            body = self._read_body()
        except (ValueError, OSError):
            self._send(_text(400, "400: Bad Request", close=True))
            return
        try:
            if origin_forbidden(self.headers.get("Host"), self.headers.get("Origin")):
                response = _empty(403)
            elif self.command == "OPTIONS":
                response = _empty(200)
            else:
                response = standin._route(self.command, self.path, body, self.headers)
        except Exception:  # noqa: BLE001 - aiohttp answers any handler crash with a plain 500
            if standin.verbose:
                traceback.print_exc()
            response = _server_error()
        self._send(response)

    def _send(self, response: _Response) -> None:
        self.send_response(response.status)
        if response.content_type:
            self.send_header("Content-Type", response.content_type)
        for name, value in response.headers:
            self.send_header(name, value)
        length = response.file_length if response.file_path else len(response.body)
        self.send_header("Content-Length", str(length))
        if response.close:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command == "HEAD":
            return
        try:
            if response.file_path:
                self._stream_file(response)
            else:
                self.wfile.write(response.body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _stream_file(self, response: _Response) -> None:
        assert response.file_path is not None
        with open(response.file_path, "rb") as handle:
            if response.file_start == 0 and response.file_length == os.fstat(handle.fileno()).st_size:
                shutil.copyfileobj(handle, self.wfile, STREAM_CHUNK)
                return
            handle.seek(response.file_start)
            remaining = response.file_length
            while remaining > 0:
                chunk = handle.read(min(STREAM_CHUNK, remaining))
                if not chunk:
                    break
                self.wfile.write(chunk)
                remaining -= len(chunk)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    standin: ComfyUIStandIn

    def __init__(self, address: tuple[str, int], standin: ComfyUIStandIn) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.standin = standin
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Wake handler threads blocked on idle keep-alive connections so stop() is prompt."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        if self.standin.verbose:
            super().handle_error(request, client_address)


# --------------------------------------------------------------------------------------
# The stand-in.
# --------------------------------------------------------------------------------------

RouteHandler = Callable[[dict[str, list[str]], bytes, Any], _Response]


class ComfyUIStandIn:
    """A fake ComfyUI on a real socket. See the module docstring."""

    def __init__(self, root_dir: str | os.PathLike[str], host: str = "127.0.0.1", port: int = 0,
                 delay: float = 0.0, models: list[str] | None = None, *, verbose: bool = False,
                 cache: bool = True, history_limit: int = MAXIMUM_HISTORY_SIZE) -> None:
        self.root_dir = os.path.abspath(os.fspath(root_dir))
        self.output_dir = os.path.join(self.root_dir, "output")
        self.temp_dir = os.path.join(self.root_dir, "temp")
        self.input_dir = os.path.join(self.root_dir, "input")
        self.host = host
        self.port = port
        self.models = list(models or [])
        self.verbose = verbose
        self.requests: list[tuple[str, str]] = []
        self._requests_lock = threading.Lock()
        self._specs = build_node_specs(self.models)
        self._files = InputFiles(self.input_dir, self.temp_dir, self.output_dir)
        for spec in self._specs.values():
            if spec.validated:
                spec.validate = self._files.validate
        self._queue = _PromptQueue(history_limit)
        self._executor = _Executor(self._specs, self.output_dir, self.temp_dir, delay, cache, self._files)
        self.ws = self._executor.ws
        self.ws.queue_size = self._queue.tasks_remaining
        self._number = 0
        self._number_lock = threading.Lock()
        self._exec_lock = threading.Lock()  # held while a prompt executes; restart() waits on it
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._threads: list[threading.Thread] = []
        self._route_table = self._routes()

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> ComfyUIStandIn:
        if self._server is not None:
            return self
        os.makedirs(self.output_dir, exist_ok=True)
        self._files.prepare()  # input/ with example.png, as a fresh install has
        self._clear_temp()  # ComfyUI deletes its temp folder when it starts
        self._stopping.clear()
        self._server = _Server((self.host, self.port), self)
        self.port = self._server.server_address[1]
        self._threads = [
            threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02},
                             name="comfyui-standin-http", daemon=True),
            threading.Thread(target=self._worker_loop, name="comfyui-standin-worker", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        return self

    @property
    def delay(self) -> float:
        """Seconds each prompt takes; may be changed while running (a prompt already waiting
        waits the new total, so setting 0 lets it finish at once)."""
        return self._executor.delay

    @delay.setter
    def delay(self, seconds: float) -> None:
        self._executor.delay = seconds

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("ComfyUIStandIn is not started")
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.host, self.host)
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    def restart(self) -> None:
        """Like a ComfyUI restart: history, queue, caches and temp files go; output stays."""
        self.ws.close_all()  # a restarting ComfyUI drops every WebSocket
        with self._queue.mutex:
            self._queue.epoch += 1
            self._queue.wipe_queue()
            self._queue.currently_running.clear()
            self._queue.wipe_history()
            self._executor.interrupt.set()  # cut a running prompt short; its result is dropped
        # No second history wipe once the running prompt is done: its epoch is the old one,
        # so task_done drops its result, and prompts queued since then belong to the new run.
        with self._exec_lock:
            with self._queue.mutex:
                self._executor.reset()
            with self._number_lock:
                self._number = 0
            self._clear_temp()

    def stop(self) -> None:
        server = self._server
        if server is None:
            return
        self._stopping.set()
        self._executor.interrupt.set()
        with self._queue.not_empty:
            self._queue.not_empty.notify_all()  # wake an idle worker now rather than at its next poll
        server.shutdown()
        server.close_connections()
        server.server_close()
        for thread in self._threads:
            thread.join(timeout=10)
        self._server = None
        self._threads = []

    def __enter__(self) -> ComfyUIStandIn:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _clear_temp(self) -> None:
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        os.makedirs(self.temp_dir, exist_ok=True)

    def _record(self, method: str, path: str) -> None:
        with self._requests_lock:
            self.requests.append((method, path))

    # -- worker ---------------------------------------------------------------------------

    def _worker_loop(self) -> None:
        while not self._stopping.is_set():
            # The interrupt flag is reset when an item becomes "running" (under the queue lock),
            # so an interrupt sent once /queue shows it running always reaches it.
            got = self._queue.get(0.1, self._executor.interrupt.clear)
            if got is None:
                continue
            item, item_id, epoch = got
            with self._exec_lock:
                if epoch != self._queue.epoch or self._stopping.is_set():
                    self._queue.discard(item_id)
                    continue
                self.ws.prompt_started(item)
                history_result, status = self._executor.execute(item)
            self._queue.task_done(item_id, epoch, history_result, status)
            self.ws.prompt_finished(item)

    # -- routing --------------------------------------------------------------------------

    def _routes(self) -> dict[str, dict[str, RouteHandler]]:
        """The static routes; built once, in __init__."""
        return {
            "/": {"GET": self._get_index},
            "/prompt": {"GET": self._get_prompt, "POST": self._post_prompt},
            "/queue": {"GET": self._get_queue, "POST": self._post_queue},
            "/interrupt": {"POST": self._post_interrupt},
            "/history": {"GET": self._get_history, "POST": self._post_history},
            "/view": {"GET": self._get_view},
            "/upload/image": {"POST": lambda q, b, h: self._post_upload(b, h, self._files.upload_image)},
            "/upload/mask": {"POST": lambda q, b, h: self._post_upload(b, h, self._files.upload_mask)},
            "/system_stats": {"GET": self._get_system_stats},
            "/object_info": {"GET": self._get_object_info},
            "/features": {"GET": lambda q, b, h: _json({"supports_preview_metadata": True,
                                                        "max_upload_size": 104857600})},
            "/free": {"POST": self._post_free},
            "/embeddings": {"GET": lambda q, b, h: _json([])},
            "/extensions": {"GET": lambda q, b, h: _json([])},
            "/models": {"GET": lambda q, b, h: _json(["checkpoints"])},
        }

    def _dynamic_route(self, path: str) -> dict[str, RouteHandler] | None:
        for prefix, handler in (("/history/", self._get_history_item),
                                ("/object_info/", self._get_object_info_item),
                                ("/models/", self._get_models_folder)):
            rest = path[len(prefix):]
            if path.startswith(prefix) and rest and "/" not in rest:
                return {"GET": lambda q, b, h, rest=rest, handler=handler: handler(rest)}
        return None

    def _route(self, method: str, raw_path: str, body: bytes, headers: Any) -> _Response:
        parts = urlsplit(raw_path)
        path = unquote(parts.path)
        if path.startswith("/api/"):  # ComfyUI serves every API route under /api as well
            path = path[4:]
        query = parse_qs(parts.query, keep_blank_values=True)
        methods = self._route_table.get(path) or self._dynamic_route(path)
        if methods is None:
            return _text(404, "404: Not Found")
        lookup = "GET" if method == "HEAD" else method  # aiohttp answers HEAD on every GET route
        handler = methods.get(lookup)
        if handler is None:
            allowed = sorted(set(methods) | ({"HEAD"} if "GET" in methods else set()))
            return _text(405, "405: Method Not Allowed", headers=[("Allow", ",".join(allowed))])
        return handler(query, body, headers)

    # -- handlers -------------------------------------------------------------------------

    def _get_index(self, query: dict[str, list[str]], body: bytes, headers: Any) -> _Response:
        page = "<!doctype html><title>ComfyUI stand-in</title><p>ComfyUI stand-in (no frontend).</p>"
        return _Response(200, page.encode(), "text/html; charset=utf-8")

    def _get_prompt(self, query: dict[str, list[str]], body: bytes, headers: Any) -> _Response:
        return _json({"exec_info": {"queue_remaining": self._queue.tasks_remaining()}})

    def _next_number(self, json_data: Any) -> Any:
        if "number" in json_data:
            return float(json_data["number"])
        with self._number_lock:
            number = self._number
            self._number += 1  # even for prompts that then fail validation, like ComfyUI
        if "front" in json_data and json_data["front"]:
            number = -number
        return number

    def _post_prompt(self, query: dict[str, list[str]], body: bytes, headers: Any) -> _Response:
        json_data = _parse_json_body(body)
        number = self._next_number(json_data)
        if "prompt" not in json_data:
            error = _prompt_error("no_prompt", "No prompt provided", "No prompt provided")
            return _json({"error": error, "node_errors": {}}, 400)
        prompt = json_data["prompt"]
        prompt_id = str(json_data.get("prompt_id", uuid.uuid4()))
        valid, error, outputs, node_errors = validate_prompt(prompt, self._specs,
                                                             json_data.get("partial_execution_targets"))
        extra_data = json_data.get("extra_data", {})
        if "client_id" in json_data:
            extra_data["client_id"] = json_data["client_id"]
        if not valid:
            return _json({"error": error, "node_errors": node_errors}, 400)
        sensitive = {key: extra_data.pop(key) for key in SENSITIVE_EXTRA_DATA_KEYS if key in extra_data}
        self._queue.put((number, prompt_id, prompt, extra_data, outputs, sensitive))
        self.ws.queue_changed()
        return _json({"prompt_id": prompt_id, "number": number, "node_errors": node_errors})

    def _get_queue(self, query: dict[str, list[str]], body: bytes, headers: Any) -> _Response:
        running, pending = self._queue.current_queue()
        return _json({"queue_running": [list(item[:5]) for item in running],
                      "queue_pending": [list(item[:5]) for item in pending]})

    def _post_queue(self, query: dict[str, list[str]], body: bytes, headers: Any) -> _Response:
        json_data = _parse_json_body(body)
        if "clear" in json_data and json_data["clear"]:
            self._queue.wipe_queue()
        if "delete" in json_data:
            for prompt_id in json_data["delete"]:
                self._queue.delete_queue_item(prompt_id)
        self.ws.queue_changed()
        return _empty()

    def _post_interrupt(self, query: dict[str, list[str]], body: bytes, headers: Any) -> _Response:
        try:
            json_data = _parse_json_body(body)
        except json.JSONDecodeError:
            json_data = {}
        prompt_id = json_data.get("prompt_id")
        with self._queue.mutex:  # check and set together: the worker resets the flag under it
            if not prompt_id or prompt_id in self._queue.running_ids():
                self._executor.interrupt.set()
        return _empty()

    def _get_history(self, query: dict[str, list[str]], body: bytes, headers: Any) -> _Response:
        max_items = _first(query, "max_items")
        offset = _first(query, "offset")
        return _json(self._queue.get_history(
            max_items=int(max_items) if max_items is not None else None,
            offset=int(offset) if offset is not None else -1,
        ))

    def _get_history_item(self, prompt_id: str) -> _Response:
        return _json(self._queue.get_history(prompt_id=prompt_id))

    def _post_history(self, query: dict[str, list[str]], body: bytes, headers: Any) -> _Response:
        json_data = _parse_json_body(body)
        if "clear" in json_data and json_data["clear"]:
            self._queue.wipe_history()
        if "delete" in json_data:
            for prompt_id in json_data["delete"]:
                self._queue.delete_history_item(prompt_id)
        return _empty()

    def _post_free(self, query: dict[str, list[str]], body: bytes, headers: Any) -> _Response:
        json_data = _parse_json_body(body)
        json_data.get("unload_models", False)  # parsed like ComfyUI (a list body is a 500); nothing to free
        return _empty()

    def _get_system_stats(self, query: dict[str, list[str]], body: bytes, headers: Any) -> _Response:
        ram_total, ram_free = _memory()
        return _json({
            "system": {
                "os": os.name,
                "ram_total": ram_total,
                "ram_free": ram_free,
                "comfyui_version": COMFYUI_VERSION,
                "required_frontend_version": "1.27.10",
                "installed_templates_version": "0.1.95",
                "required_templates_version": "0.1.95",
                "python_version": sys.version,
                "pytorch_version": "0.0.0+standin",
                "embedded_python": False,
                "argv": ["main.py", "--cpu", "--listen", self.host, "--port", str(self.port),
                         "--disable-auto-launch"],
            },
            "devices": [{
                "name": "cpu", "type": "cpu", "index": None, "vram_total": ram_total, "vram_free": ram_free,
                "torch_vram_total": ram_total, "torch_vram_free": ram_free,
            }],
        })

    def _get_object_info(self, query: dict[str, list[str]], body: bytes, headers: Any) -> _Response:
        # The real server's whole node list (what the UI-format converter reads), with the
        # nodes this stand-in runs described by its own table: the same as recorded, except
        # file lists (LoadImage) that follow this stand-in's folders.
        info = dict(_recorded_object_info())
        info.update((name, spec.object_info()) for name, spec in self._specs.items())
        return _json(self._files.with_file_lists(info))

    def _get_object_info_item(self, class_type: str) -> _Response:
        spec = self._specs.get(class_type)
        return _json(self._files.with_file_lists({class_type: spec.object_info()} if spec else {}))

    def _post_upload(self, body: bytes, headers: Any, upload: Callable[..., Any]) -> _Response:
        """POST /upload/image or /upload/mask: the JSON answer, or an empty 400."""
        status, answer = upload(body, headers.get("Content-Type"))
        return _json(answer) if answer is not None else _empty(status)

    def _get_models_folder(self, folder: str) -> _Response:
        return _json(self.models) if folder == "checkpoints" else _empty(404)

    def _directory_for(self, kind: str) -> str | None:
        return {"output": self.output_dir, "temp": self.temp_dir, "input": self.input_dir}.get(kind)

    def _get_view(self, query: dict[str, list[str]], body: bytes, headers: Any) -> _Response:
        filename = _first(query, "filename")
        if filename is None:
            return _empty(404)
        filename, base_dir = self._annotated_filepath(filename)
        # ComfyUI's guard against arbitrary paths: 400 for a leading "/" or any "..".
        if not filename or filename[0] == "/" or ".." in filename:
            return _empty(400)
        if base_dir is None:
            base_dir = self._directory_for(_first(query, "type", "output") or "")
        if base_dir is None:
            return _empty(400)
        subfolder = _first(query, "subfolder")
        if subfolder is not None:
            full = os.path.join(base_dir, subfolder)
            if os.path.commonpath((os.path.abspath(full), base_dir)) != base_dir:
                return _empty(403)
            base_dir = full
        filename = os.path.basename(filename)
        path = os.path.join(base_dir, filename)
        if not os.path.isfile(path):
            return _empty(404)
        return self._file_response(path, filename, headers)

    def _annotated_filepath(self, name: str) -> tuple[str, str | None]:
        for suffix, kind in (("[output]", "output"), ("[input]", "input"), ("[temp]", "temp")):
            if name.endswith(suffix):
                return name[:-(len(suffix) + 1)], self._directory_for(kind)
        return name, None

    def _file_response(self, path: str, filename: str, headers: Any) -> _Response:
        stat = os.stat(path)
        content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        if content_type in {"text/html", "text/html-sandboxed", "application/xhtml+xml", "text/javascript",
                            "text/css"}:
            content_type = "application/octet-stream"  # ComfyUI forces these to download
        etag = f'"{stat.st_mtime_ns:x}-{stat.st_size:x}"'
        response_headers = [
            ("Content-Disposition", f'filename="{filename}"'),
            ("Etag", etag),
            ("Last-Modified", email.utils.formatdate(stat.st_mtime, usegmt=True)),
            ("Accept-Ranges", "bytes"),
        ]
        if headers.get("If-None-Match") == etag:
            return _Response(304, headers=response_headers)
        byte_range = _byte_range(headers.get("Range"), stat.st_size)
        if byte_range is False:
            return _Response(416, headers=[("Content-Range", f"bytes */{stat.st_size}")])
        if isinstance(byte_range, tuple):
            start, length = byte_range
            response_headers.append(("Content-Range", f"bytes {start}-{start + length - 1}/{stat.st_size}"))
            return _Response(206, content_type=content_type, headers=response_headers, file_path=path,
                             file_start=start, file_length=length)
        return _Response(200, content_type=content_type, headers=response_headers, file_path=path,
                         file_length=stat.st_size)


def _memory() -> tuple[int, int]:
    try:
        page = os.sysconf("SC_PAGE_SIZE")
        return os.sysconf("SC_PHYS_PAGES") * page, os.sysconf("SC_AVPHYS_PAGES") * page
    except (AttributeError, ValueError, OSError):
        return 16 * 1024**3, 8 * 1024**3  # platforms without sysconf: plausible numbers


# --------------------------------------------------------------------------------------
# Command line.
# --------------------------------------------------------------------------------------

def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m devtools.comfyui_standin",
                                     description="Run a ComfyUI stand-in until Ctrl-C.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8188)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds each prompt takes to execute")
    parser.add_argument("--root", default=None,
                        help="folder for output/ and temp/ (default: a new temporary folder)")
    parser.add_argument("--model", "--models", dest="models", action="append", default=[],
                        help="checkpoint name(s) CheckpointLoaderSimple accepts; repeat or comma-separate")
    parser.add_argument("--no-cache", action="store_true",
                        help="run identical prompts again instead of answering from the cache")
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    root = args.root or tempfile.mkdtemp(prefix="comfyui-standin-")
    models = [name.strip() for value in args.models for name in value.split(",") if name.strip()]
    stop_requested = threading.Event()
    received: list[int] = []
    previous: dict[int, Any] = {}

    def on_signal(signum: int, _frame: Any) -> None:
        received.append(signum)
        stop_requested.set()

    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, on_signal)
    standin = ComfyUIStandIn(root, host=args.host, port=args.port, delay=args.delay, models=models,
                             verbose=args.verbose, cache=not args.no_cache).start()
    print(f"ComfyUI stand-in on {standin.base_url} (root {root}, delay {args.delay}s); Ctrl-C to stop",
          flush=True)
    try:
        while not stop_requested.wait(0.5):  # a timed wait keeps signal handling prompt
            pass
    finally:
        standin.stop()
        if signal.SIGINT in received:
            standin._clear_temp()  # ComfyUI empties temp/ on exit after Ctrl-C (not after SIGTERM)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 0


if __name__ == "__main__":
    sys.exit(main())
