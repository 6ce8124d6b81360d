"""Local input images: what type they are (by their bytes, as the API checks them) and
the file name to announce for the upload (its extension must fit the type)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import InputFileError

# content type -> (magic test, extension the API expects for it)
_EXTENSIONS = {"image/png": (".png",), "image/jpeg": (".jpg", ".jpeg"), "image/webp": (".webp",),
               "image/gif": (".gif",)}
# Bytes enough to recognise any of the four.
HEAD_BYTES = 12


def sniff(head: bytes) -> str | None:
    """The image type of a file from its first bytes, or None."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    return None


@dataclass(frozen=True)
class InputFile:
    path: Path
    content_type: str
    size: int
    upload_name: str  # the name sent to POST /api/uploads, its extension fitting content_type

    @classmethod
    def open(cls, source: str | Path) -> "InputFile":
        """InputFileError when the file cannot be read or is no PNG, JPEG, WebP or GIF (the
        API would refuse it, after the upload)."""
        path = Path(source)
        try:
            with open(path, "rb") as handle:
                head = handle.read(HEAD_BYTES)
            size = path.stat().st_size
        except OSError as exc:
            raise InputFileError(f"cannot read {path}: {exc.strerror or exc}") from exc
        content_type = sniff(head)
        if content_type is None:
            raise InputFileError(f"{path} is not a PNG, JPEG, WebP or GIF image")
        name = path.name if path.name.lower().endswith(_EXTENSIONS[content_type]) else (
            (path.stem or "input") + _EXTENSIONS[content_type][0])
        return cls(path, content_type, size, name[-255:])
