"""What an input file really is, from its first bytes: type and pixel size, stdlib only.

A file's name and declared content type say nothing (ComfyUI itself stores text bytes named
`x.png` and fails later, while running, recorded as `history_id_load_image_not_an_image`).
So the type comes from the signature, and the size from the header every such file starts
with: PNG's IHDR, GIF's logical screen, WebP's VP8/VP8L/VP8X chunk, JPEG's SOF marker.
Decoding the pixels is ComfyUI's job; refusing what is no image, or is larger than the
deployment allows, before it reaches ComfyUI is ours.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ..errors import BadRequestError

# Bytes that must be read before `sniff` can answer (JPEG's SOF can follow a long EXIF block).
HEAD_BYTES = 256 * 1024


@dataclass(frozen=True)
class ImageInfo:
    kind: str  # png | jpeg | webp | gif
    extension: str
    content_type: str
    width: int
    height: int

    @property
    def pixels(self) -> int:
        return self.width * self.height


class NotAnImageError(BadRequestError):
    """The bytes are not a PNG, JPEG, WebP or GIF image (or its header is broken)."""

    status_code = 415


_TYPES = {
    "png": (".png", "image/png"),
    "jpeg": (".jpg", "image/jpeg"),
    "webp": (".webp", "image/webp"),
    "gif": (".gif", "image/gif"),
}


def _info(kind: str, width: int, height: int) -> ImageInfo:
    if width <= 0 or height <= 0:
        raise NotAnImageError(f"the {kind.upper()} header gives no size")
    extension, content_type = _TYPES[kind]
    return ImageInfo(kind, extension, content_type, width, height)


def _png(head: bytes) -> ImageInfo:
    # Signature (8), then the IHDR chunk: length (4), b"IHDR", width and height (big-endian).
    if len(head) < 24 or head[12:16] != b"IHDR":
        raise NotAnImageError("the PNG has no IHDR header")
    width, height = struct.unpack(">II", head[16:24])
    return _info("png", width, height)


def _gif(head: bytes) -> ImageInfo:
    if len(head) < 10:
        raise NotAnImageError("the GIF header is cut short")
    width, height = struct.unpack("<HH", head[6:10])
    return _info("gif", width, height)


def _webp(head: bytes) -> ImageInfo:
    chunk = head[12:16]
    if chunk == b"VP8 " and len(head) >= 30 and head[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack("<HH", head[26:30])
        return _info("webp", width & 0x3FFF, height & 0x3FFF)
    if chunk == b"VP8L" and len(head) >= 25 and head[20] == 0x2F:
        bits = int.from_bytes(head[21:25], "little")
        return _info("webp", (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)
    if chunk == b"VP8X" and len(head) >= 30:
        width = int.from_bytes(head[24:27], "little") + 1
        height = int.from_bytes(head[27:30], "little") + 1
        return _info("webp", width, height)
    raise NotAnImageError("the WebP header is not VP8, VP8L or VP8X")


# JPEG start-of-frame markers (baseline, progressive, lossless...; not DHT/JPG/DAC).
_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


def _jpeg(head: bytes) -> ImageInfo:
    position = 2
    while position + 4 <= len(head):
        if head[position] != 0xFF:
            raise NotAnImageError("the JPEG's segments are broken")
        marker = head[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # no length
            position += 2
            continue
        length = struct.unpack(">H", head[position + 2 : position + 4])[0]
        if marker in _SOF:
            if position + 9 > len(head):
                break
            height, width = struct.unpack(">HH", head[position + 5 : position + 9])
            return _info("jpeg", width, height)
        if marker == 0xDA or length < 2:  # image data before any frame header
            break
        position += 2 + length
    raise NotAnImageError(f"the JPEG has no frame header in its first {HEAD_BYTES // 1024} KB")


def sniff(head: bytes) -> ImageInfo:
    """Type and size of the image whose first bytes are `head` (at least HEAD_BYTES of it,
    or the whole file); NotAnImageError for anything else."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return _png(head)
    if head.startswith(b"\xff\xd8\xff"):
        return _jpeg(head)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return _webp(head)
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return _gif(head)
    raise NotAnImageError("not a PNG, JPEG, WebP or GIF image")
