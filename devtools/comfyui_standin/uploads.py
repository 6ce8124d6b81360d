"""The input side of the ComfyUI stand-in: uploads, input files and the nodes that read them.

Used by the stand-in's server.py and execution.py (never deployed). Ground truth: the recordings of a real
ComfyUI 0.3.64 in tests/fixtures/comfyui/ (`upload_*`, `view_input_*`, `view_mask_*`,
`object_info_LoadImage*_after_uploads`, the `load_image_*` and inpaint prompts; NOTES.md,
"Inputs, uploads and WebSocket"). This module copies ComfyUI's code paths for them:

* ``POST /upload/image``: multipart field ``image``; ``type`` input (default), temp or output
  (anything else is a crash: 500, plain text); ``subfolder``; a name that escapes the folder
  is 400 with an empty body; an existing name with other bytes is renamed ``"<stem> (N)<ext>"``
  unless ``overwrite`` is exactly ``true`` or ``1``; the same bytes under the same name keep
  the one file. The bytes are stored as sent, never looked at.
* ``POST /upload/mask``: the same, then the file written is the original's (``original_ref``)
  pixels as RGBA with the mask's alpha, and the original's PNG text chunks. A missing or
  unreadable original writes nothing and still answers 200 (ComfyUI ignores what its save
  function returns).
* LoadImage / LoadImageMask: the list of files in ``/object_info`` (a fresh install's
  ``example.png`` included), the custom validation ("Invalid image file: ..."), annotated
  names (``x.png [temp]``, ``[output]``, ``[input]``) and ``sub/x.png``, the file's hash as
  IS_CHANGED (in the cache key, and as ``is_changed`` in the executed prompt that SaveImage
  writes into its PNG, as recorded), and the execution (``PIL.UnidentifiedImageError`` for
  bytes that are no image).
* ImageInvert, ImageCompositeMasked and SaveImage on loaded pictures, in float32 as torch
  computes them (``1 - x``, ``mask * source + (1 - mask) * destination``, then
  ``uint8(clip(255 * x))``), so the saved pixels are ComfyUI's to the bit for PNG inputs.

What is approximated (no Pillow here; PNG is decoded with zlib and struct):

* PNG: 8-bit (and 1/2/4-bit grey or palette) images decode exactly; 16-bit channels keep
  their high byte; interlaced (Adam7) PNGs are refused with an execution error; the tRNS
  colour key of a grey or RGB PNG is ignored (Pillow applies it when converting to RGBA, so
  LoadImageMask of such a file differs).
* JPEG, WebP and GIF are not decoded: a loaded one is an opaque mid-grey (128) picture of
  the size in its header, and as the original of a mask upload the same.
* EXIF orientation is ignored; animated images give their first frame only.
* ImageCompositeMasked with a mask or ``resize_source`` of another size scales bilinearly
  in double precision (torch's float32 interpolation can differ in the last bit).
* ImageScale, ImageBlend and ImageAddNoise on a loaded picture are not modelled (an
  execution error, and no noise respectively); ImageBlur leaves it as it is.
* The multipart parser takes what clients send (``filename="..."`` parameters); aiohttp's
  size limit (100 MiB) is not enforced. Saved and composed PNGs have ComfyUI's pixels and text
  chunks, not Pillow's compressed bytes (so their sha256 differs from a real server's).
"""

from __future__ import annotations

import copy
import hashlib
import json
import mimetypes
import os
import struct
import zlib
from array import array
from dataclasses import dataclass, field
from typing import Any

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# ComfyUI's input folder holds this picture from the start (listed in object_info_full).
EXAMPLE_IMAGE = "example.png"
INSTALL_FOLDERS = ("3d",)  # made at start, like ComfyUI's; folders are never listed as images
EXAMPLE_SIZE = 64  # the real one is a photo; any valid PNG lists and loads the same
APPROXIMATED_GREY = 128  # the colour of a JPEG, WebP or GIF the stand-in cannot decode
NO_MASK_SIZE = 64  # LoadImage's mask of a picture without alpha: 64x64 zeros
FILE_READING_NODES = ("LoadImage", "LoadImageMask")
UPLOAD_TYPES = ("input", "temp", "output")
# mimetypes does not know .webp on every Python version; folder_paths registers it too.
mimetypes.add_type("image/webp", ".webp")


class UnidentifiedImageError(OSError):
    """What Pillow raises for bytes that are no image it knows."""

    __module__ = "PIL"  # named PIL.UnidentifiedImageError in execution errors, as recorded


class StandInLimitError(ValueError):
    """A picture or operation this stand-in does not model (see the module docstring)."""


# --------------------------------------------------------------------------------------
# Pictures: PNG decoded to 8-bit channels, other formats by their header's size.
# --------------------------------------------------------------------------------------

_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # PNG colour type -> samples per pixel
_MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}


@dataclass(frozen=True)
class Picture:
    """Decoded pixels: `mode` L, LA, RGB or RGBA, `data` rows of width * channels bytes."""

    width: int
    height: int
    mode: str
    data: bytes
    text: dict[str, str] = field(default_factory=dict)

    def rgb(self) -> bytes:
        if self.mode == "RGB":
            return self.data
        if self.mode == "RGBA":
            return _drop_every_fourth(self.data)
        grey = self.data if self.mode == "L" else self.data[0::2]
        return bytes(value for value in grey for _ in range(3))

    def alpha(self) -> bytes | None:
        if self.mode == "RGBA":
            return self.data[3::4]
        if self.mode == "LA":
            return self.data[1::2]
        return None

    def rgba(self) -> bytes:
        """Pillow's convert("RGBA"): opaque where there was no alpha."""
        alpha = self.alpha()
        return with_alpha(self.rgb(), alpha if alpha is not None else b"\xff" * (self.width * self.height))


def _drop_every_fourth(data: bytes) -> bytes:
    out = bytearray(len(data) // 4 * 3)
    for channel in range(3):
        out[channel::3] = data[channel::4]
    return bytes(out)


def with_alpha(rgb: bytes, alpha: bytes) -> bytes:
    out = bytearray(len(alpha) * 4)
    for channel in range(3):
        out[channel::4] = rgb[channel::3]
    out[3::4] = alpha
    return bytes(out)


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    chunks = []
    position = len(PNG_SIGNATURE)
    while position + 8 <= len(data):
        length = struct.unpack(">I", data[position:position + 4])[0]
        tag = data[position + 4:position + 8]
        body = data[position + 8:position + 8 + length]
        if len(body) != length:
            raise OSError("image file is truncated")
        chunks.append((tag, body))
        position += 12 + length
        if tag == b"IEND":
            break
    return chunks


def _text_chunk(tag: bytes, body: bytes) -> tuple[str, str] | None:
    key, _, rest = body.partition(b"\x00")
    if tag == b"tEXt":
        return key.decode("latin-1"), rest.decode("latin-1")
    if tag == b"zTXt":
        return key.decode("latin-1"), zlib.decompress(rest[1:]).decode("latin-1")
    if tag == b"iTXt":
        compressed, rest = rest[0], rest[2:]
        _language, _, rest = rest.partition(b"\x00")
        _translated, _, text = rest.partition(b"\x00")
        return key.decode("latin-1"), (zlib.decompress(text) if compressed else text).decode("utf-8")
    return None


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def _unfilter(raw: bytes, height: int, stride: int, bpp: int) -> bytes:
    out = bytearray(height * stride)
    previous = bytearray(stride)
    position = 0
    for y in range(height):
        kind = raw[position]
        row = bytearray(raw[position + 1:position + 1 + stride])
        position += 1 + stride
        if len(row) != stride:
            raise OSError("image file is truncated")
        if kind == 1:
            for i in range(bpp, stride):
                row[i] = (row[i] + row[i - bpp]) & 0xFF
        elif kind == 2:
            row = bytearray((x + p) & 0xFF for x, p in zip(row, previous))
        elif kind == 3:
            for i in range(stride):
                left = row[i - bpp] if i >= bpp else 0
                row[i] = (row[i] + ((left + previous[i]) >> 1)) & 0xFF
        elif kind == 4:
            for i in range(stride):
                left = row[i - bpp] if i >= bpp else 0
                upper_left = previous[i - bpp] if i >= bpp else 0
                row[i] = (row[i] + _paeth(left, previous[i], upper_left)) & 0xFF
        elif kind != 0:
            raise OSError(f"unknown PNG filter type {kind}")
        out[y * stride:(y + 1) * stride] = row
        previous = row
    return bytes(out)


def _unpack_bits(data: bytes, width: int, height: int, depth: int, stride: int) -> bytes:
    """1, 2 or 4-bit samples to one byte each (still indexes or raw grey levels)."""
    mask = (1 << depth) - 1
    per_byte = 8 // depth
    out = bytearray()
    for y in range(height):
        row = data[y * stride:(y + 1) * stride]
        samples = [(byte >> (8 - depth * (k + 1))) & mask for byte in row for k in range(per_byte)]
        out += bytes(samples[:width])
    return bytes(out)


def decode_png(data: bytes) -> Picture:
    """8-bit L/LA/RGB/RGBA pixels of a PNG (palette and 1/2/4/16-bit expanded)."""
    chunks = _png_chunks(data)
    if not chunks or chunks[0][0] != b"IHDR":
        raise OSError("broken PNG file")
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    if colour not in _CHANNELS or depth not in (1, 2, 4, 8, 16):
        raise OSError(f"unknown PNG colour type {colour} / depth {depth}")
    if interlace:
        raise StandInLimitError("the stand-in does not decode interlaced PNGs")
    palette, transparency, text, idat = b"", b"", {}, []
    for tag, body in chunks[1:]:
        if tag == b"IDAT":
            idat.append(body)
        elif tag == b"PLTE":
            palette = body
        elif tag == b"tRNS":
            transparency = body
        else:
            found = _text_chunk(tag, body)
            if found is not None:
                text[found[0]] = found[1]
    channels = _CHANNELS[colour]
    stride = (width * channels * depth + 7) // 8
    try:
        raw = zlib.decompress(b"".join(idat))
    except zlib.error as exc:
        raise OSError("image file is truncated") from exc
    pixels = _unfilter(raw, height, stride, max(1, channels * depth // 8))
    if depth == 16:
        pixels = pixels[0::2]
    elif depth < 8:
        pixels = _unpack_bits(pixels, width, height, depth, stride)
        if colour == 0:
            pixels = bytes(value * 255 // ((1 << depth) - 1) for value in pixels)
    if colour == 3:
        return _from_palette(width, height, pixels, palette, transparency, text)
    return Picture(width, height, _MODES[channels], pixels, text)


def _from_palette(width: int, height: int, indexes: bytes, palette: bytes, transparency: bytes,
                  text: dict[str, str]) -> Picture:
    colours = [palette[i:i + 3] for i in range(0, len(palette), 3)]
    if not transparency:
        return Picture(width, height, "RGB", b"".join(colours[i] for i in indexes), text)
    alphas = list(transparency) + [255] * (len(colours) - len(transparency))
    return Picture(width, height, "RGBA", b"".join(colours[i] + bytes([alphas[i]]) for i in indexes), text)


def header_size(data: bytes) -> tuple[str, int, int] | None:
    """(format, width, height) of a JPEG, WebP or GIF from its header; None otherwise."""
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        return ("GIF", *struct.unpack("<HH", data[6:10]))
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        chunk = data[12:16]
        if chunk == b"VP8 " and len(data) >= 30:
            width, height = struct.unpack("<HH", data[26:30])
            return "WEBP", width & 0x3FFF, height & 0x3FFF
        if chunk == b"VP8L" and len(data) >= 25:
            bits = int.from_bytes(data[21:25], "little")
            return "WEBP", (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
        if chunk == b"VP8X" and len(data) >= 30:
            width, height = (int.from_bytes(data[start:start + 3], "little") + 1 for start in (24, 27))
            return "WEBP", width, height
    if data[:3] == b"\xff\xd8\xff":
        position = 2
        while position + 9 <= len(data) and data[position] == 0xFF:
            marker = data[position + 1]
            if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
                position += 1 if marker == 0xFF else 2
                continue
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                height, width = struct.unpack(">HH", data[position + 5:position + 9])
                return "JPEG", width, height
            position += 2 + struct.unpack(">H", data[position + 2:position + 4])[0]
    return None


def open_picture(path: str) -> Picture:
    """Image.open(path) as far as this stand-in goes (see the module docstring)."""
    with open(path, "rb") as handle:
        data = handle.read()
    if data.startswith(PNG_SIGNATURE):
        return decode_png(data)
    found = header_size(data)
    if found is None:
        raise UnidentifiedImageError(f"cannot identify image file {path!r}")
    _, width, height = found
    return Picture(width, height, "RGB", bytes([APPROXIMATED_GREY]) * (width * height * 3))


def encode_pixels(width: int, height: int, mode: str, data: bytes,
                  text: dict[str, str] | None = None) -> bytes:
    """A PNG of 8-bit RGB or RGBA rows (filter 0), with tEXt chunks."""
    channels = {"RGB": 3, "RGBA": 4}[mode]
    stride = width * channels
    compressor = zlib.compressobj(6)
    rows = b"".join(b"\x00" + data[y * stride:(y + 1) * stride] for y in range(height))
    parts = [compressor.compress(rows)]
    parts.append(compressor.flush())

    def chunk(tag: bytes, body: bytes) -> bytes:
        checksum = zlib.crc32(tag + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", checksum)

    header = struct.pack(">IIBBBBB", width, height, 8, 6 if channels == 4 else 2, 0, 0, 0)
    texts = [chunk(b"tEXt", key.encode("latin-1") + b"\x00" + value.encode("latin-1", "replace"))
             for key, value in (text or {}).items()]
    return PNG_SIGNATURE + chunk(b"IHDR", header) + b"".join(texts) + chunk(b"IDAT", b"".join(parts)) \
        + chunk(b"IEND", b"")


def example_png() -> bytes:
    """The stand-in's input/example.png: a small opaque gradient."""
    size = EXAMPLE_SIZE
    data = bytes(value for y in range(size) for x in range(size) for value in (x * 4, y * 4, 128))
    return encode_pixels(size, size, "RGB", data)


# --------------------------------------------------------------------------------------
# Tensors: IMAGE [batch, height, width, 3] and MASK [batch, height, width], float32.
# array("f") stores C floats, so each value is rounded to float32 when stored: one
# arithmetic step per stored array gives torch's float32 result.
# --------------------------------------------------------------------------------------

_TO_FLOAT = list(array("f", [value / 255 for value in range(256)]))  # numpy: uint8 / 255.0
_ONE_MINUS = list(array("f", [1.0 - value for value in _TO_FLOAT]))  # 1. - alpha / 255


def _floats(values: bytes, table: list[float] = _TO_FLOAT) -> array:
    return array("f", map(table.__getitem__, values))


@dataclass
class PixelImage:
    """A loaded picture as ComfyUI's IMAGE tensor; `frames` holds one array per batch item."""

    width: int
    height: int
    batch: int
    frames: tuple[array, ...]
    noise_seed: int | None = None  # ImageAddNoise on a picture: kept, not applied

    def __post_init__(self) -> None:
        if len(self.frames) != self.batch or any(len(f) != self.width * self.height * 3 for f in self.frames):
            raise StandInLimitError("the stand-in does not resize or re-batch loaded pictures")

    def __str__(self) -> str:
        return f"tensor(<image batch={self.batch} height={self.height} width={self.width}>)"

    def inverted(self) -> PixelImage:
        """ImageInvert: 1.0 - image."""
        frames = tuple(array("f", [1.0 - value for value in frame]) for frame in self.frames)
        return PixelImage(self.width, self.height, self.batch, frames)

    def rgb_bytes(self, index: int) -> bytes:
        """SaveImage: np.clip(255. * image, 0, 255).astype(np.uint8), in float32."""
        scaled = array("f", [255.0 * value for value in self.frames[index]])
        return bytes(255 if value >= 255 else int(value) if value > 0 else 0 for value in scaled)

    def png(self, index: int, text: dict[str, str]) -> bytes:
        return encode_pixels(self.width, self.height, "RGB", self.rgb_bytes(index), text)


@dataclass
class PixelMask:
    width: int
    height: int
    frames: tuple[array, ...]

    def __str__(self) -> str:
        return f"tensor(<mask batch={len(self.frames)} height={self.height} width={self.width}>)"


def _bilinear(values: array, width: int, height: int, new_width: int, new_height: int,
              channels: int = 1) -> array:
    """torch.nn.functional.interpolate(mode="bilinear", align_corners=False), in double."""
    if (width, height) == (new_width, new_height):
        return values
    out = array("f", bytes(4 * new_width * new_height * channels))

    def source(position: int, scale: float, size: int) -> tuple[int, int, float]:
        real = max(0.0, (position + 0.5) * scale - 0.5)
        low = min(int(real), size - 1)
        return low, min(low + 1, size - 1), real - low

    for y in range(new_height):
        y0, y1, fy = source(y, height / new_height, height)
        for x in range(new_width):
            x0, x1, fx = source(x, width / new_width, width)
            corners = [(yy * width + xx) * channels for yy, xx in ((y0, x0), (y0, x1), (y1, x0), (y1, x1))]
            for c in range(channels):
                a, b, d, e = (values[corner + c] for corner in corners)
                top, bottom = a * (1 - fx) + b * fx, d * (1 - fx) + e * fx
                out[(y * new_width + x) * channels + c] = top * (1 - fy) + bottom * fy
    return out


def composite(destination: PixelImage, source: PixelImage, x: int, y: int, resize_source: bool,
              mask: PixelMask | None) -> PixelImage:
    """ImageCompositeMasked (comfy_extras/nodes_mask.py, multiplier 1)."""
    width, height = destination.width, destination.height
    sources = list(source.frames)
    source_width, source_height = source.width, source.height
    if resize_source:
        sources = [_bilinear(frame, source_width, source_height, width, height, 3) for frame in sources]
        source_width, source_height = width, height
    x, y = min(x, width), min(y, height)
    if mask is None:
        masks = [array("f", [1.0]) * (source_width * source_height)]
    else:
        masks = [_bilinear(frame, mask.width, mask.height, source_width, source_height)
                 for frame in mask.frames]
    frames = []
    for index, destination_frame in enumerate(destination.frames):
        source_frame = sources[index % len(sources)]  # repeat_to_batch_size
        mask_frame = masks[index % len(masks)]
        frames.append(_composite_frame(destination_frame, width, height, source_frame, source_width,
                                       source_height, mask_frame, x, y))
    return PixelImage(width, height, destination.batch, tuple(frames))


def _composite_frame(destination: array, width: int, height: int, source: array, source_width: int,
                     source_height: int, mask: array, x: int, y: int) -> array:
    out = array("f", destination)
    left, top = x, y  # validation keeps both at 0 or more (ImageCompositeMasked's min)
    # The source pixels that land inside the destination (ComfyUI's visible_width/height).
    columns, rows = min(source_width, width - left), min(source_height, height - top)
    for row in range(max(0, rows)):
        for column in range(max(0, columns)):
            m = mask[row * source_width + column]
            first = (row * source_width + column) * 3
            target = ((top + row) * width + left + column) * 3
            if m == 1.0:  # exact in float32 too: 1 * s + 0 * d
                out[target:target + 3] = source[first:first + 3]
            elif m != 0.0:  # 0 keeps the destination exactly
                out[target:target + 3] = _blend(m, source[first:first + 3], out[target:target + 3])
    return out


def _blend(m: float, source: array, destination: array) -> array:
    """mask * source + (1 - mask) * destination, each step rounded to float32 as torch does."""
    inverse = array("f", [1.0 - m])[0]
    source_part = array("f", [m * value for value in source])
    destination_part = array("f", [inverse * value for value in destination])
    return array("f", [a + b for a, b in zip(source_part, destination_part)])


def solid(width: int, height: int, batch: int, rgb: tuple[int, int, int]) -> PixelImage:
    """A solid-colour image of the stand-in's own nodes (EmptyImage...) as pixels."""
    frame = _floats(bytes(rgb) * (width * height))
    return PixelImage(width, height, batch, tuple(array("f", frame) for _ in range(batch)))


# --------------------------------------------------------------------------------------
# multipart/form-data, as aiohttp's request.post() gives it.
# --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FileField:
    name: str
    filename: str
    data: bytes
    content_type: str


def _parameters(header: str) -> tuple[str, dict[str, str]]:
    value, *rest = _split_unquoted(header, ";")
    parameters = {}
    for item in rest:
        key, _, raw = item.strip().partition("=")
        raw = raw.strip()
        if len(raw) >= 2 and raw[0] == raw[-1] == '"':
            raw = raw[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        parameters[key.strip().lower()] = raw
    return value.strip().lower(), parameters


def _split_unquoted(text: str, separator: str) -> list[str]:
    parts, current, quoted, escaped = [], [], False, False
    for char in text:
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == separator and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return parts


def parse_form(body: bytes, content_type: str | None) -> dict[str, str | FileField]:
    """The first value of each field; a part with a filename is a FileField."""
    kind, parameters = _parameters(content_type or "")
    if kind != "multipart/form-data":
        return {}
    delimiter = b"--" + parameters["boundary"].encode("latin-1")
    fields: dict[str, str | FileField] = {}
    position = body.find(delimiter)
    if position < 0:
        raise ValueError("multipart body without its boundary")
    while True:
        position += len(delimiter)
        if body[position:position + 2] == b"--":
            return fields
        headers_end = body.find(b"\r\n\r\n", position)
        end = body.find(b"\r\n" + delimiter, headers_end)
        if headers_end < 0 or end < 0:
            raise ValueError("multipart body cut short")
        headers = {}
        for line in body[position:headers_end].decode("utf-8").split("\r\n"):
            if ":" in line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        _, disposition = _parameters(headers.get("content-disposition", ""))
        content = body[headers_end + 4:end]
        name = disposition.get("name", "")
        if "filename" in disposition:
            field_value: str | FileField = FileField(
                name, disposition["filename"], content,
                headers.get("content-type", "application/octet-stream"))
        else:
            field_value = content.decode("utf-8")
        fields.setdefault(name, field_value)
        position = end + 2


# --------------------------------------------------------------------------------------
# The files: uploads, listing, annotated names, and the nodes that read them.
# --------------------------------------------------------------------------------------

def _same_bytes(path: str, data: bytes) -> bool:
    """compare_image_hash: the existing file's hash against the upload's."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.digest() == hashlib.sha256(data).digest()


class InputFiles:
    """ComfyUI's input, temp and output folders as the upload routes and loaders see them."""

    def __init__(self, input_dir: str, temp_dir: str, output_dir: str) -> None:
        self.input_dir = input_dir
        self.temp_dir = temp_dir
        self.output_dir = output_dir

    def prepare(self) -> None:
        """A fresh install's input folder: example.png and the 3d folder (kept if there)."""
        for folder in INSTALL_FOLDERS:
            os.makedirs(os.path.join(self.input_dir, folder), exist_ok=True)
        example = os.path.join(self.input_dir, EXAMPLE_IMAGE)
        if not os.path.exists(example):
            with open(example, "wb") as handle:
                handle.write(example_png())

    def directory(self, kind: str | None) -> str | None:
        return {"input": self.input_dir, "temp": self.temp_dir, "output": self.output_dir}.get(kind or "")

    # -- LoadImage's list and paths -----------------------------------------------------
    def image_files(self) -> list[str]:
        """The files at the top of input/ whose extension says image, sorted."""
        try:
            names = os.listdir(self.input_dir)
        except FileNotFoundError:
            return []
        files = [name for name in names if os.path.isfile(os.path.join(self.input_dir, name))]
        return sorted(name for name in files
                      if (mimetypes.guess_type(name, strict=False)[0] or "").split("/")[0] == "image")

    def with_file_lists(self, info: dict[str, Any]) -> dict[str, Any]:
        """An /object_info answer with the LoadImage and LoadImageMask lists as of now."""
        info = dict(info)
        for class_type in FILE_READING_NODES:
            if class_type in info:
                info[class_type] = copy.deepcopy(info[class_type])  # never a shared description
                info[class_type]["input"]["required"]["image"][0] = self.image_files()
        return info

    def annotated(self, name: str) -> tuple[str, str]:
        """folder_paths.annotated_filepath, the input folder when nothing is annotated."""
        for suffix, kind in (("[output]", "output"), ("[input]", "input"), ("[temp]", "temp")):
            if name.endswith(suffix):
                return name[:-(len(suffix) + 1)], self.directory(kind) or self.input_dir
        return name, self.input_dir

    def path(self, name: str) -> str:
        base_name, folder = self.annotated(name)
        return os.path.join(folder, base_name)

    def validate(self, inputs: dict[str, Any]) -> list[dict[str, Any]]:
        """LoadImage/LoadImageMask.VALIDATE_INPUTS(image): the file must exist."""
        image = inputs.get("image")
        if not isinstance(image, str) or os.path.exists(self.path(image)):
            return []
        return [{
            "type": "custom_validation_failed",
            "message": "Custom validation failed for node",
            "details": f"image - Invalid image file: {image}",
            "extra_info": {"input_name": "image"},
        }]

    def is_changed(self, prompt: dict[str, Any]) -> dict[str, Any]:
        """IS_CHANGED of the file-reading nodes: [sha256 of the file], NaN when unreadable.
        Part of the cache key, so new bytes under the same name run again."""
        found: dict[str, Any] = {}
        for node_id, node in prompt.items():
            if not isinstance(node, dict) or node.get("class_type") not in FILE_READING_NODES:
                continue
            image = (node.get("inputs") if isinstance(node.get("inputs"), dict) else {}).get("image")
            if not isinstance(image, str):
                continue
            try:
                with open(self.path(image), "rb") as handle:
                    found[node_id] = [hashlib.sha256(handle.read()).hexdigest()]
            except OSError:
                found[node_id] = float("nan")
        return found

    # -- nodes --------------------------------------------------------------------------
    def load_image(self, image: str) -> tuple[PixelImage, PixelMask]:
        picture = open_picture(self.path(image))
        pixels = PixelImage(picture.width, picture.height, 1, (_floats(picture.rgb()),))
        alpha = picture.alpha()
        if alpha is None:
            mask = PixelMask(NO_MASK_SIZE, NO_MASK_SIZE, (array("f", bytes(4 * NO_MASK_SIZE ** 2)),))
        else:
            mask = PixelMask(picture.width, picture.height, (_floats(alpha, _ONE_MINUS),))
        return pixels, mask

    def load_image_mask(self, image: str, channel: str) -> PixelMask:
        picture = open_picture(self.path(image))
        rgba = picture.rgba()
        index = "RGBA".index(channel[0].upper())
        table = _ONE_MINUS if index == 3 else _TO_FLOAT
        return PixelMask(picture.width, picture.height, (_floats(rgba[index::4], table),))

    # -- POST /upload/image and /upload/mask -----------------------------------------------
    def upload_image(self, body: bytes, content_type: str | None) -> tuple[int, dict[str, str] | None]:
        return self._upload(parse_form(body, content_type), None)

    def upload_mask(self, body: bytes, content_type: str | None) -> tuple[int, dict[str, str] | None]:
        form = parse_form(body, content_type)
        return self._upload(form, lambda image, path: self._save_masked(form, image, path))

    def _upload(self, form: dict[str, Any], save: Any) -> tuple[int, dict[str, str] | None]:
        """server.py image_upload: (status, JSON answer or None for an empty body). A crash
        (type=bogus, a text field named image) raises: the server answers 500."""
        image, overwrite, kind = form.get("image"), form.get("overwrite"), form.get("type")
        kind = kind if kind is not None else "input"
        upload_dir = self.directory(kind) if kind in UPLOAD_TYPES else None
        if upload_dir is None:
            raise UnboundLocalError("cannot access local variable 'type_dir'")  # ComfyUI's own crash
        if not image:
            return 400, None
        if not isinstance(image, FileField):
            raise AttributeError("'str' object has no attribute 'file'")
        filename = image.filename
        if not filename:
            return 400, None
        subfolder = form.get("subfolder", "")
        folder = os.path.join(upload_dir, os.path.normpath(subfolder))
        path = os.path.abspath(os.path.join(folder, filename))
        if os.path.commonpath((upload_dir, path)) != upload_dir:
            return 400, None
        os.makedirs(folder, exist_ok=True)
        stem, extension = os.path.splitext(filename)
        duplicate = False
        if overwrite not in ("true", "1"):
            number = 1
            while os.path.exists(path):
                if _same_bytes(path, image.data):
                    duplicate = True
                    break
                filename = f"{stem} ({number}){extension}"
                path = os.path.join(folder, filename)
                number += 1
        if not duplicate:
            if save is not None:
                save(image, path)
            else:
                with open(path, "wb") as handle:
                    handle.write(image.data)
        return 200, {"name": filename, "subfolder": subfolder, "type": kind}

    def _save_masked(self, form: dict[str, Any], mask: FileField, path: str) -> None:
        """upload_mask's save function: the original's RGB with the mask's alpha. Its early
        returns (bad reference, missing original) are ignored by ComfyUI: nothing written."""
        reference = json.loads(form.get("original_ref"))  # type: ignore[arg-type]
        name, folder = self._reference_path(reference)
        if name is None or folder is None:
            return
        original_path = os.path.join(folder, name)
        if not os.path.isfile(original_path):
            return
        original = open_picture(original_path)
        alpha = _mask_picture(mask.data).rgba()[3::4]
        if len(alpha) != original.width * original.height:
            raise ValueError("images do not match")  # Pillow's putalpha
        with open(path, "wb") as handle:
            handle.write(encode_pixels(original.width, original.height, "RGBA",
                                       with_alpha(original.rgb(), alpha), original.text))

    def _reference_path(self, reference: dict[str, Any]) -> tuple[str | None, str | None]:
        name = reference["filename"]
        folder: str | None = None
        for suffix, kind in (("[output]", "output"), ("[input]", "input"), ("[temp]", "temp")):
            if name.endswith(suffix):
                name, folder = name[:-(len(suffix) + 1)], self.directory(kind)
                break
        if not name or name[0] == "/" or ".." in name:
            return None, None
        if folder is None:
            folder = self.directory(reference.get("type", "output"))
        if folder is None:
            return None, None
        subfolder = reference.get("subfolder", "")
        if subfolder != "":
            full = os.path.join(folder, subfolder)
            if os.path.commonpath((os.path.abspath(full), folder)) != folder:
                return None, None
            folder = full
        return name, folder


def _mask_picture(data: bytes) -> Picture:
    if data.startswith(PNG_SIGNATURE):
        return decode_png(data)
    found = header_size(data)
    if found is None:
        raise UnidentifiedImageError("cannot identify image file <_io.BytesIO>")
    _, width, height = found
    return Picture(width, height, "RGB", bytes([APPROXIMATED_GREY]) * (width * height * 3))


# --------------------------------------------------------------------------------------
# Node descriptions (keyword arguments of nodes.NodeSpec), as object_info_full.
# --------------------------------------------------------------------------------------

def _load_image_input() -> list[Any]:
    return [[EXAMPLE_IMAGE], {"image_upload": True}]


NODE_SPECS: list[dict[str, Any]] = [
    {"name": "LoadImage", "required": {"image": _load_image_input()}, "outputs": ["IMAGE", "MASK"],
     "display_name": "Load Image", "category": "image", "validated": ("image",)},
    {"name": "LoadImageMask",
     "required": {"image": _load_image_input(), "channel": [["alpha", "red", "green", "blue"]]},
     "outputs": ["MASK"], "display_name": "Load Image (as Mask)", "category": "mask",
     "validated": ("image",)},
    {"name": "ImageCompositeMasked",
     "required": {
         "destination": ["IMAGE"], "source": ["IMAGE"],
         "x": ["INT", {"default": 0, "min": 0, "max": 16384, "step": 1}],
         "y": ["INT", {"default": 0, "min": 0, "max": 16384, "step": 1}],
         "resize_source": ["BOOLEAN", {"default": False}],
     },
     "optional": {"mask": ["MASK"]}, "outputs": ["IMAGE"], "python_module": "comfy_extras.nodes_mask",
     "category": "image"},
]
