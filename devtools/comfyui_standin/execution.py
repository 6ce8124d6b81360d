"""Running a prompt in the stand-in: PNG writing, the values flowing between nodes, the node
functions, scheduling and caching."""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import string
import struct
import threading
import time
import traceback
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any, Callable

from .nodes import DEFAULT_IMAGE_SIZE, NodeSpec, full_type_name
from .uploads import InputFiles, PixelImage, PixelMask, composite, solid
from .websocket import WebSocketHub


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
        self.ws = WebSocketHub()  # what a run tells the sockets (websocket.py)

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
