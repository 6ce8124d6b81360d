"""Input images: from the request to ComfyUI's input folder, checked on the way.

A run request names a picture by reference (an `<ref>`):

    {"upload_id": "<id>"}        a file the client PUT to S3 through POST /api/uploads
    {"base64": "<data>"}         inline, small files (a `data:image/...;base64,` URL too)
    {"url": "https://..."}       fetched here, under the webhook SSRF rules + InputUrlAllowlist
    {"s3": "s3://bucket/key"}    event-driven jobs only, under the configured input prefix

Simple format: `"image"` fills the workflow's one LoadImage node, `"mask"` its one
LoadImageMask, `"images": {"<node id>": <ref>}` names nodes. Advanced format: an object in
place of a LoadImage/LoadImageMask `image` input.

Every input is first read into a spooled temporary file (memory up to SPOOL_MEMORY_BYTES,
then /tmp), hashed, counted and recognised by its bytes; only when all inputs of a request
passed does any go to ComfyUI (`POST /upload/image`), under a content-addressed name
(`<sha256>.<ext>`): identical bytes reuse one file, concurrent requests never collide, a
different file is never overwritten. ComfyUI writes nothing for an upload that broke off,
and an upload that is no image is deleted from S3: nothing half-done is left behind.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

from .. import deadline
from ..comfyui.client import ComfyUIClient
from ..config import Settings
from ..errors import BadRequestError, ConfigurationError, FetchError, StorageError
from ..storage import client_error_code, s3_client
from . import images

if TYPE_CHECKING:  # imported where an input URL is checked and fetched: most inputs have none
    from .. import netguard

# Node classes whose `image` input names a file in ComfyUI's input folder.
INPUT_CLASSES = {"LoadImage": "image", "LoadImageMask": "image"}
SIMPLE_KEYS = ("image", "mask", "images")
REF_KINDS = ("upload_id", "base64", "url", "s3")
SPOOL_MEMORY_BYTES = 1024 * 1024  # past this an input is spooled to /tmp
CHUNK_BYTES = 256 * 1024
UPLOAD_ID = re.compile(r"[0-9a-f]{32}")
FILENAME = re.compile(r"[^\x00-\x1f\x7f/\\]{1,255}")
UPLOAD_TYPES = {"image/png": (".png",), "image/jpeg": (".jpg", ".jpeg"), "image/webp": (".webp",),
                "image/gif": (".gif",)}
_DATA_URL = re.compile(r"data:(image/[A-Za-z0-9.+-]+)?(;[^,;]*)*;base64,(?P<data>.*)", re.DOTALL)


class InputTooLargeError(BadRequestError):
    status_code = 413


# -- where inputs go -----------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    """One input reference and the node input it fills. `field` names it in errors."""

    node_id: str
    ref: Any
    field: str


def _one_node(workflow: dict[str, Any], class_type: str, key: str) -> str:
    found = sorted(node_id for node_id, node in workflow.items()
                   if isinstance(node, dict) and node.get("class_type") == class_type)
    if len(found) != 1:
        named = ", ".join(found) if found else "none"
        raise BadRequestError(
            f"'{key}' needs exactly one {class_type} node in the workflow (found: {named}); "
            f"name the node with \"images\": {{\"<node id>\": <ref>}}"
        )
    return found[0]


def _input_node(workflow: dict[str, Any], node_id: str, field: str) -> None:
    node = workflow.get(node_id)
    if not isinstance(node, dict):
        raise BadRequestError(f"'{field}': the workflow has no node {node_id}")
    if node.get("class_type") not in INPUT_CLASSES:
        raise BadRequestError(
            f"'{field}': node {node_id} is a {node.get('class_type')}, not an image loader "
            f"({', '.join(INPUT_CLASSES)})"
        )


def is_ref(value: Any) -> bool:
    """An input reference (an object, or a data URL string), as opposed to a file name."""
    return isinstance(value, dict) or (isinstance(value, str) and value.startswith("data:"))


def take_targets(workflow: dict[str, Any], body: dict[str, Any]) -> tuple[dict[str, Any], list[Target]]:
    """The request body without its input references, and where each reference goes."""
    rest = dict(body)
    targets: list[Target] = []
    if "image" in rest:
        targets.append(Target(_one_node(workflow, "LoadImage", "image"), rest.pop("image"), "image"))
    if "mask" in rest:
        targets.append(Target(_one_node(workflow, "LoadImageMask", "mask"), rest.pop("mask"), "mask"))
    if "images" in rest:
        named = rest.pop("images")
        if not isinstance(named, dict) or not named:
            raise BadRequestError("'images' must be an object of node id -> input reference")
        for node_id, ref in named.items():
            _input_node(workflow, str(node_id), f"images.{node_id}")
            targets.append(Target(str(node_id), ref, f"images.{node_id}"))
    for node_id, update in list(rest.items()):
        # Advanced format: {"<id>": {"inputs": {"image": <ref>}}} or {"<id>": {"image": <ref>}}.
        if not isinstance(update, dict):
            continue
        inputs = update.get("inputs") if set(update) == {"inputs"} else update
        if not isinstance(inputs, dict) or not is_ref(inputs.get("image")):
            continue
        field_name = f"{node_id}.inputs.image"
        _input_node(workflow, node_id, field_name)
        target = Target(node_id, inputs["image"], field_name)
        inputs = {key: value for key, value in inputs.items() if key != "image"}
        if inputs:
            rest[node_id] = {"inputs": inputs}
        else:
            del rest[node_id]
        targets.append(target)
    if len({t.node_id for t in targets}) != len(targets):
        raise BadRequestError("Two input references name the same node")
    for target in targets:
        check_ref(target.ref, target.field)
    return rest, targets


def check_ref(ref: Any, field: str) -> None:
    """The reference's shape, before any I/O."""
    if isinstance(ref, str) and ref.startswith("data:"):
        return
    if not isinstance(ref, dict) or len(ref) != 1 or next(iter(ref)) not in REF_KINDS:
        raise BadRequestError(
            f"'{field}' must be an input reference: {{\"upload_id\"}}, {{\"base64\"}}, a data URL, "
            f"{{\"url\"}} or (jobs) {{\"s3\"}}"
        )
    kind, value = next(iter(ref.items()))
    if not isinstance(value, str) or not value:
        raise BadRequestError(f"'{field}.{kind}' must be a non-empty string")
    if kind == "upload_id" and not UPLOAD_ID.fullmatch(value):
        raise BadRequestError(f"'{field}.upload_id' is not an upload id from POST /api/uploads")


# -- reading an input ----------------------------------------------------------------------
@dataclass
class Spooled:
    """One input, read whole into a temporary file, with what its bytes are."""

    file: IO[bytes]
    size: int
    sha256: str
    info: images.ImageInfo
    field: str
    source: dict[str, str] = field(default_factory=dict)  # S3 object to delete if refused

    @property
    def name(self) -> str:
        """Content-addressed: the same bytes always get the same name."""
        return f"{self.sha256[:40]}{self.info.extension}"

    def close(self) -> None:
        self.file.close()


class _Spool:
    def __init__(self, field: str, max_bytes: int) -> None:
        self.field = field
        self.max_bytes = max_bytes
        self.file = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY_BYTES)
        self.digest = hashlib.sha256()
        self.size = 0

    def write_all(self, chunks: Iterable[bytes]) -> None:
        for chunk in chunks:
            self.size += len(chunk)
            if self.size > self.max_bytes:
                raise InputTooLargeError(f"'{self.field}' is larger than {self.max_bytes} bytes")
            self.digest.update(chunk)
            self.file.write(chunk)

    def finish(self, settings: Settings) -> Spooled:
        if self.size == 0:
            raise images.NotAnImageError(f"'{self.field}' is empty")
        self.file.seek(0)
        head = self.file.read(images.HEAD_BYTES)
        self.file.seek(0)
        try:
            info = images.sniff(head)
        except images.NotAnImageError as exc:
            raise images.NotAnImageError(f"'{self.field}': {exc.message}") from exc
        if info.pixels > settings.max_input_pixels:
            raise InputTooLargeError(
                f"'{self.field}' is {info.width}x{info.height} pixels, more than the "
                f"{settings.max_input_pixels} this deployment takes"
            )
        return Spooled(self.file, self.size, self.digest.hexdigest(), info, self.field)


def _s3_chunks(body: Any) -> Iterator[bytes]:
    try:
        while chunk := body.read(CHUNK_BYTES):
            yield chunk
    except Exception as exc:  # noqa: BLE001 - botocore/urllib3 errors while streaming
        raise StorageError("Reading the input from S3 broke off") from exc


def _from_s3(spool: _Spool, bucket: str, key: str, missing: str) -> dict[str, str]:
    try:
        answer = s3_client().get_object(Bucket=bucket, Key=key)
    except Exception as exc:  # noqa: BLE001 - botocore error types are generated
        if client_error_code(exc) in ("NoSuchKey", "404", "NotFound"):
            raise BadRequestError(missing) from exc
        raise StorageError("Could not read the input from S3") from exc
    with answer["Body"] as body:
        if answer.get("ContentLength", 0) > spool.max_bytes:
            raise InputTooLargeError(f"'{spool.field}' is larger than {spool.max_bytes} bytes")
        spool.write_all(_s3_chunks(body))
    return {"Bucket": bucket, "Key": key}


def _decode_base64(text: str, spool: _Spool) -> None:
    # 4 characters carry 3 bytes: refuse before decoding what cannot fit.
    if len(text) * 3 // 4 > spool.max_bytes + 3:
        raise InputTooLargeError(f"'{spool.field}' is larger than {spool.max_bytes} bytes")
    try:
        data = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadRequestError(f"'{spool.field}' is not valid base64") from exc
    spool.write_all([data])


def url_rules(settings: Settings) -> netguard.Rules:
    """The webhook rules (https, public addresses only) plus INPUT_URL_ALLOWLIST."""
    from .. import netguard

    return netguard.Rules(allowlist=settings.input_url_allowlist)


def _from_url(url: str, spool: _Spool, settings: Settings) -> None:
    from .. import netguard

    limit = netguard.Deadline.after(deadline.bounded(settings.input_fetch_timeout))
    checked = netguard.check_url(url, url_rules(settings), field=f"{spool.field}.url", deadline=limit)
    with netguard.open_url(checked, "GET", deadline=limit, headers={"Accept": "image/*"}) as response:
        if response.status != 200:
            error = BadRequestError if 400 <= response.status < 500 else FetchError
            raise error(f"'{spool.field}.url': {checked.host} answered HTTP {response.status}")
        spool.write_all(response.iter_bytes(spool.max_bytes))


def _s3_location(value: str, field: str, settings: Settings) -> tuple[str, str]:
    bucket, _, key = value.removeprefix("s3://").partition("/")
    if (not value.startswith("s3://") or bucket != settings.image_bucket
            or not key.startswith(settings.input_prefix) or ".." in key.split("/")):
        raise BadRequestError(
            f"'{field}.s3' must name an object under s3://{settings.image_bucket}/{settings.input_prefix}"
        )
    return bucket, key


def upload_key(settings: Settings, upload_id: str) -> str:
    return f"{settings.input_prefix}{upload_id}"


def spool(target: Target, settings: Settings, *, allow_s3: bool) -> Spooled:
    """Read one input whole, checked: BadRequestError (400), InputTooLargeError (413),
    NotAnImageError (415), FetchError (502/504, the URL's host), StorageError (503)."""
    spool = _Spool(target.field, settings.max_input_bytes)
    source: dict[str, str] = {}
    try:
        ref = target.ref
        if isinstance(ref, str):
            match = _DATA_URL.fullmatch(ref)
            if match is None:
                raise BadRequestError(f"'{target.field}' is not a data:image/...;base64, URL")
            _decode_base64(match.group("data"), spool)
        else:
            kind, value = next(iter(ref.items()))
            if kind == "base64":
                _decode_base64(value, spool)
            elif kind == "upload_id":
                # Known before reading: an upload refused while it is read (over the byte cap)
                # is deleted too, not only one refused once read (no image, too many pixels).
                source = {"Bucket": settings.image_bucket, "Key": upload_key(settings, value)}
                _from_s3(spool, source["Bucket"], source["Key"],
                         f"'{target.field}.upload_id' is unknown or expired")
            elif kind == "url":
                _from_url(value, spool, settings)
            elif allow_s3:
                bucket, key = _s3_location(value, target.field, settings)
                _from_s3(spool, bucket, key, f"'{target.field}.s3' names no object")
            else:
                raise BadRequestError(f"'{target.field}.s3' is for event-driven jobs only")
        result = spool.finish(settings)
    except BaseException as exc:
        spool.file.close()
        if source and _refused(exc):
            _delete_quietly(source)
        raise
    result.source = source
    return result


def _refused(exc: BaseException | None) -> bool:
    """An upload that can never be used (no image, too large): not kept in S3."""
    return isinstance(exc, (images.NotAnImageError, InputTooLargeError))


def _delete_quietly(source: dict[str, str]) -> None:
    try:
        s3_client().delete_object(**source)
    except Exception:  # noqa: BLE001 - the lifecycle rule removes it anyway
        pass


# -- into ComfyUI --------------------------------------------------------------------------
def prepare(targets: list[Target], settings: Settings, *, allow_s3: bool) -> list[Spooled]:
    """Every input read and checked, before any goes to ComfyUI; all closed on failure."""
    spooled: list[Spooled] = []
    try:
        for target in targets:
            spooled.append(spool(target, settings, allow_s3=allow_s3))
    except BaseException:
        for item in spooled:
            item.close()
        raise
    return spooled


def send(client: ComfyUIClient, workflow: dict[str, Any], targets: list[Target],
         spooled: list[Spooled]) -> dict[str, Any]:
    """Upload each distinct input once and point its node at the name ComfyUI gave it.
    The files stay open (a fleet sends them again to the next backend if this one refused
    the connection): the caller closes them, see `close`."""
    names: dict[str, str] = {}
    for target, item in zip(targets, spooled):
        if item.sha256 not in names:
            item.file.seek(0)
            names[item.sha256] = client.upload_image(item.name, item.file, item.info.content_type)
        workflow[target.node_id].setdefault("inputs", {})["image"] = names[item.sha256]
    return workflow


def close(spooled: list[Spooled]) -> None:
    for item in spooled:
        item.close()


def apply(client: ComfyUIClient, workflow: dict[str, Any], targets: list[Target], settings: Settings,
          *, allow_s3: bool) -> dict[str, Any]:
    """The patched workflow with its inputs uploaded to ComfyUI (no-op without targets)."""
    if not targets:
        return workflow
    spooled = prepare(targets, settings, allow_s3=allow_s3)
    try:
        return send(client, workflow, targets, spooled)
    finally:
        close(spooled)


# -- POST /api/uploads ---------------------------------------------------------------------
def create_upload(body: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """A presigned S3 PUT for one input file: the bytes go straight to S3, never through a
    function (API Gateway and Lambda cap bodies at 10 MB / 6 MB)."""
    if not settings.image_bucket:
        raise ConfigurationError("Uploads are not configured (no image bucket)")
    unknown = sorted(set(body) - {"filename", "content_type", "size"})
    if unknown:
        raise BadRequestError(f"Unknown field(s): {', '.join(unknown)}")
    filename, content_type, size = body.get("filename"), body.get("content_type"), body.get("size")
    if not isinstance(filename, str) or not FILENAME.fullmatch(filename):
        raise BadRequestError("'filename' must be a file name of 1-255 characters, without '/' or '\\'")
    if not isinstance(content_type, str) or content_type not in UPLOAD_TYPES:
        raise images.NotAnImageError(f"'content_type' must be one of {', '.join(UPLOAD_TYPES)}")
    if not filename.lower().endswith(UPLOAD_TYPES[content_type]):
        raise BadRequestError(
            f"'filename' must end in {' or '.join(UPLOAD_TYPES[content_type])} for {content_type}")
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise BadRequestError("'size' must be the file's size in bytes, a positive integer")
    if size > settings.max_input_bytes:
        raise InputTooLargeError(f"'size' is larger than {settings.max_input_bytes} bytes")
    upload_id = uuid.uuid4().hex
    try:
        # Content-Type and Content-Length are signed: S3 refuses another type or size.
        url = s3_client().generate_presigned_url(
            "put_object",
            Params={"Bucket": settings.image_bucket, "Key": upload_key(settings, upload_id),
                    "ContentType": content_type, "ContentLength": size},
            ExpiresIn=settings.upload_expiry,
        )
    except Exception as exc:  # noqa: BLE001 - botocore error types are generated
        raise StorageError("Could not create the upload URL") from exc
    return {
        "upload_id": upload_id,
        "upload_url": url,
        "method": "PUT",
        "headers": {"Content-Type": content_type},
        "expires_in": settings.upload_expiry,
        "max_bytes": settings.max_input_bytes,
    }
