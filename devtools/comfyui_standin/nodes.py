"""The stand-in's node table (the few core nodes the project's workflows use, described like
/object_info) and prompt validation (a close port of ComfyUI's validate_prompt)."""

from __future__ import annotations

import copy
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

from .uploads import NODE_SPECS

MAX_RESOLUTION = 16384
SEED_MAX = 0xFFFFFFFFFFFFFFFF
DEFAULT_IMAGE_SIZE = 64


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
