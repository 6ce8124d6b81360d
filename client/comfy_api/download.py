"""Outputs to local files: streamed to a temporary file beside the target, checked against
the sizes the answer and S3 give, then renamed. A partial file never has the final name."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import requests
import urllib3

from .client import TRANSFER_TIMEOUT, ComfyAPI, without_api_key
from .errors import ComfyAPIError, DownloadError
from .models import Image, TaskStatus

CHUNK_BYTES = 1 << 16
# A body cut short: the raw urllib3 stream raises its own errors, not requests' wrappers.
TRANSFER_ERRORS = (requests.RequestException, urllib3.exceptions.HTTPError, ConnectionError)
# Characters that cannot be in a file name here or on another system (Windows' set, and
# control characters); ComfyUI's names rarely have them, subgraph node ids ("6:3") do.
_UNSAFE = re.compile(r'[\x00-\x1f\x7f<>:"/\\|?*]')


@dataclass(frozen=True)
class SavedFile:
    path: Path
    size: int
    image: Image


@dataclass(frozen=True)
class Skipped:
    image: Image
    reason: str


@dataclass(frozen=True)
class DownloadReport:
    saved: tuple[SavedFile, ...]
    skipped: tuple[Skipped, ...]


def output_name(prompt_id: str, image: Image) -> str:
    """`<prompt_id>_<node>_<filename>`, made safe as one file name."""
    name = f"{prompt_id}_{image.node_id}_{Path(image.filename.replace(chr(92), '/')).name}"
    name = _UNSAFE.sub("_", name).strip(" .") or f"{prompt_id}_output"
    return name[:255]


def target_names(prompt_id: str, images: tuple[Image, ...]) -> list[str]:
    """One distinct name per image: two files of one node with one name (in two subfolders,
    say) get `-2`, `-3`... before the extension."""
    names: list[str] = []
    seen: set[str] = set()
    for image in images:
        name = candidate = output_name(prompt_id, image)
        number = 1
        while name in seen:
            number += 1
            stem, dot, ext = candidate.rpartition(".")
            name = f"{stem}-{number}.{ext}" if dot and stem else f"{candidate}-{number}"
        seen.add(name)
        names.append(name)
    return names


def why_not_downloadable(image: Image, final: TaskStatus) -> str | None:
    if image.download_url:
        return None
    if image.lost:
        return "lost from ComfyUI before it was archived"
    if final.copying:
        return "still being copied to S3; ask again later with `comfy-api status`"
    if final.archive_status is None:
        return "no download_url: this deployment keeps no archive of this file"
    return f"no download_url (type {image.type or 'unknown'} is not archived)"


def download_outputs(
    api: ComfyAPI,
    final: TaskStatus,
    out_dir: str | Path,
    *,
    on_start: Callable[[Image, Path, int | None], None] | None = None,
    on_bytes: Callable[[int], None] | None = None,
) -> DownloadReport:
    """Every output of a finished prompt with a download_url into `out_dir` (created)."""
    directory = Path(out_dir)
    directory.mkdir(parents=True, exist_ok=True)
    saved: list[SavedFile] = []
    skipped: list[Skipped] = []
    for image, name in zip(final.images, target_names(final.prompt_id, final.images)):
        reason = why_not_downloadable(image, final)
        if reason is not None:
            skipped.append(Skipped(image, reason))
            continue
        target = directory / name
        size = download(api, image, target, on_start=on_start, on_bytes=on_bytes)
        saved.append(SavedFile(target, size, image))
    return DownloadReport(tuple(saved), tuple(skipped))


def download(
    api: ComfyAPI,
    image: Image,
    target: Path,
    *,
    on_start: Callable[[Image, Path, int | None], None] | None = None,
    on_bytes: Callable[[int], None] | None = None,
) -> int:
    """One file to `target`; its size. A transfer cut short is tried again (the API
    client's retry policy); DownloadError when it cannot be had whole."""
    assert image.download_url, "why_not_downloadable() first"
    attempt = 0
    while True:
        attempt += 1
        try:
            return _download_once(api, image, target, on_start=on_start, on_bytes=on_bytes)
        except _Incomplete as exc:
            if attempt >= api.retry.max_attempts:
                raise DownloadError(f"{image.path}: {exc}") from None
            api.sleep(api.retry.delay(attempt, None))


class _Incomplete(Exception):
    """The body ended early, or its size was not the expected one: worth another try."""


def _download_once(api: ComfyAPI, image: Image, target: Path, *,
                   on_start: Callable[[Image, Path, int | None], None] | None,
                   on_bytes: Callable[[int], None] | None) -> int:
    assert image.download_url
    try:
        response = api.send("GET", image.download_url, idempotent=True, stream=True,
                            timeout=TRANSFER_TIMEOUT, auth=without_api_key)
    except ComfyAPIError as exc:
        # S3's refusals are XML, not the API's envelope: say what failed, not just "403 Forbidden".
        hint = " (the link may have expired: ask again with `comfy-api status`)" if exc.status_code == 403 else ""
        raise DownloadError(f"{image.path}: download failed: {exc}{hint}", status_code=exc.status_code) from exc
    expected = _content_length(response)
    if image.size is not None and expected is not None and image.size != expected:
        response.close()
        raise DownloadError(f"{image.path}: S3 has {expected} bytes, the answer says {image.size}")
    if on_start is not None:
        on_start(image, target, expected if expected is not None else image.size)
    partial = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.part")
    received = 0
    try:
        with response, open(partial, "xb") as handle:
            try:
                # The stored bytes as they are (no content decoding): what S3 holds, byte for byte.
                for chunk in response.raw.stream(CHUNK_BYTES, decode_content=False):
                    handle.write(chunk)
                    received += len(chunk)
                    if on_bytes is not None:
                        on_bytes(len(chunk))
            except TRANSFER_ERRORS as exc:
                raise _Incomplete(f"transfer cut after {received} bytes") from exc
            handle.flush()
            os.fsync(handle.fileno())
        for wanted, said_by in ((expected, "Content-Length"), (image.size, "the answer")):
            if wanted is not None and received != wanted:
                raise _Incomplete(f"received {received} bytes, {said_by} says {wanted}")
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return received


def _content_length(response: requests.Response) -> int | None:
    value = response.headers.get("Content-Length", "")
    return int(value) if value.isdigit() else None
