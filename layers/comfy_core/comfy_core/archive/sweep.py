"""Copy finished prompts' files from ComfyUI into S3 before ComfyUI loses them.

ComfyUI wipes its temp folder (PreviewImage outputs) when it starts and keeps history in
memory only, so a file that is not copied soon may be gone for good. Layout in S3:

    <image_prefix><prompt_id>/<node_id>/<filename>   the files, streamed from GET /view
    <image_prefix><prompt_id>/manifest.json          written last: the prompt is done

A prompt is done when its manifest exists; every file in it is either stored or confirmed
lost (404). Work stopped halfway is finished by the next run without storing a file twice:
each stored object carries its source size in metadata, and a HEAD says whether it is whole.
Files are streamed part by part: memory stays at a few parts whatever the file size.

A fleet (fleet.backends): the scheduled sweep (run_sweep without a client) covers every
backend, draining ones too (what they hold must still be archived), at most
MAX_PARALLEL_SWEEPS at a time, each on its own: one backend down is that backend's failure
in the summary, the others are archived. Each backend is asked its queue first (GET /queue,
the run's only extra request): a backend that does not answer it is not swept this minute,
and its running and pending counts become the fleet's metrics (emit_fleet_metrics) for
scaling. Prompt ids are unique across backends, so one S3 layout holds them all; each
manifest and event names the prompt's backend.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import requests
import urllib3.exceptions
from aws_lambda_powertools.metrics import MetricUnit

from .. import validation
from ..announce import events, notify
from ..comfyui.client import ComfyUIClient, get_client
from ..config import Settings, get_settings
from ..errors import (
    BadRequestError,
    ComfyUIError,
    ComfyUIFileMissingError,
    ComfyUITimeoutError,
    ComfyUIUnreachableError,
    ConfigurationError,
    StorageError,
)
from ..fleet.backends import Backend
from ..fleet.placement import get_placements
from ..fleet.pool import get_fleet
from ..live import state as prompt_state
from ..observability import emit_dimensioned, logger, metrics
from ..status import execution_time, failed, failure_details, iter_file_outputs
from ..storage import client_error_code, s3_client

MIB = 1024 * 1024
# 8 MiB parts: above S3's 5 MiB minimum, 10,000 parts reach 80 GiB. Larger files get larger
# parts (computed from Content-Length) so the part count limit is never hit.
PART_SIZE = 8 * MIB
MAX_PARTS = 10_000
# Parts uploading while the next one is read from ComfyUI. Memory is about
# (PARTS_IN_FLIGHT + 1) x part size; two overlap the download with the upload.
PARTS_IN_FLIGHT = 2
READ_CHUNK = 1 * MIB

LIST_PAGE_SIZE = 1000  # S3's maximum keys per LIST page
MANIFEST_NAME = "manifest.json"
SIZE_METADATA = "source-size"  # S3 lower-cases user metadata names
EVENT_DETAIL_TYPE = "ComfyUI Images Archived"
MAX_EVENT_KEYS = 500
# Stop starting prompts when the Lambda has less than this left: a prompt cut off halfway
# is safe (the next run finishes it) but wastes the bytes already sent.
TIME_MARGIN_SECONDS = 10.0

# Backends swept side by side: each holds a few S3 parts in memory while it copies a file,
# so memory grows with this, not with the size of the fleet.
MAX_PARALLEL_SWEEPS = 4

# Errors that mean ComfyUI as a whole is gone or hung: stop the run instead of waiting
# for the same timeout once per file.
_RUN_FATAL = (ComfyUIUnreachableError, ComfyUITimeoutError)


class FileFailed(Exception):
    """One file could not be stored this run; the prompt stays without a manifest."""


# -- keys ------------------------------------------------------------------------------
_UNSAFE_CHARS = re.compile(r"[\x00-\x1f\x7f/\\]")


def safe_key_part(value: str) -> str:
    """One S3 key segment from a ComfyUI name: no separators, no `..`, never empty."""
    cleaned = _UNSAFE_CHARS.sub("_", value).replace("..", "_").strip()
    return "_" if cleaned in ("", ".") else cleaned


def prompt_prefix(settings: Settings, prompt_id: str) -> str:
    return f"{settings.image_prefix}{prompt_id}/"


def manifest_key(settings: Settings, prompt_id: str) -> str:
    return f"{prompt_prefix(settings, prompt_id)}{MANIFEST_NAME}"


@dataclass(frozen=True)
class PlannedFile:
    """A file output of a prompt and the S3 key it is stored under."""

    node_id: str
    filename: str
    subfolder: str
    type: str
    key: str

    def source(self) -> dict[str, str]:
        return {"filename": self.filename, "subfolder": self.subfolder, "type": self.type}

    def describe(self) -> dict[str, Any]:
        return {"node_id": self.node_id, **self.source()}


def _disambiguate(name: str, node_id: str, file: dict[str, Any], used: set[tuple[str, str]]) -> str:
    """A name not yet used in this node. Derived from the file's subfolder and type, so a
    later run picks the same key for the same file (history order is stable)."""
    tag = hashlib.sha1(
        f"{file.get('type', '')}\0{file.get('subfolder', '')}\0{file.get('filename', '')}".encode()
    ).hexdigest()[:8]
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        stem, ext = name, ""
    suffix = f".{ext}" if ext else ""
    candidate, counter = f"{stem}~{tag}{suffix}", 2
    while (node_id, candidate) in used:
        candidate, counter = f"{stem}~{tag}-{counter}{suffix}", counter + 1
    return candidate


def plan_files(settings: Settings, prompt_id: str, entry: dict[str, Any]) -> list[PlannedFile]:
    """Every file of the entry whose type is archived, each with its own key."""
    planned: list[PlannedFile] = []
    used: set[tuple[str, str]] = set()
    seen: set[tuple[str, str, str, str]] = set()
    for node_id, file in iter_file_outputs(entry.get("outputs")):
        filename, subfolder, kind = file.get("filename"), file.get("subfolder") or "", file.get("type")
        if not isinstance(filename, str) or not filename or kind not in settings.archive_types:
            continue
        source = (node_id, filename, str(subfolder), str(kind))
        if source in seen:  # the same file listed twice is stored once
            continue
        seen.add(source)
        node_part, name = safe_key_part(node_id), safe_key_part(filename)
        if (node_part, name) in used:  # same name from another subfolder, or after cleaning
            name = _disambiguate(name, node_part, file, used)
        used.add((node_part, name))
        key = f"{prompt_prefix(settings, prompt_id)}{node_part}/{name}"
        planned.append(PlannedFile(node_id, filename, str(subfolder), str(kind), key))
    return planned


def is_finished(entry: Any) -> bool:
    """ComfyUI only has a history entry for a finished prompt (success, error, interrupt)."""
    return isinstance(entry, dict)


# -- streaming -------------------------------------------------------------------------
class _CountingReader:
    """Reads a streamed HTTP body in fixed-size parts, counting bytes, so a short or long
    body is caught before the S3 object is completed."""

    def __init__(self, raw: Any, expected: int | None) -> None:
        self._raw = raw
        self.expected = expected
        self.count = 0
        self._held: bytearray | None = None

    def unread(self, part: bytearray) -> None:
        """Give a part back: the next read_part returns it. Lets the caller peek at the first
        part (one PUT or multipart?) without keeping a reference to it for the whole upload."""
        self._held = part
        self.count -= len(part)

    def read_part(self, size: int) -> bytearray:
        """Up to `size` bytes; fewer only at the end of the body. A bytearray is filled in
        place: no second copy of the part."""
        if self._held is not None:
            part, self._held = self._held, None
            self.count += len(part)
            return part
        buffer = bytearray(size)
        filled = 0
        while filled < size:
            data = self._read(min(READ_CHUNK, size - filled))
            if not data:
                break
            buffer[filled : filled + len(data)] = data
            filled += len(data)
        del buffer[filled:]
        self.count += filled
        return buffer

    def _read(self, size: int) -> bytes:
        try:
            return self._raw.read(size)
        except urllib3.exceptions.ReadTimeoutError as exc:
            raise ComfyUITimeoutError("ComfyUI stopped sending the file") from exc
        except (urllib3.exceptions.HTTPError, requests.exceptions.RequestException, OSError) as exc:
            # Includes IncompleteRead: urllib3 enforces Content-Length itself.
            raise FileFailed(f"download broke off after {self.count} bytes: {exc!r}") from exc

    def check_complete(self) -> None:
        if self.expected is not None and self.count != self.expected:
            raise FileFailed(f"read {self.count} bytes, Content-Length said {self.expected}")


def _content_length(response: requests.Response) -> int | None:
    try:
        value = int(response.headers.get("Content-Length", ""))
    except ValueError:
        return None
    return value if value >= 0 else None


def _part_size(expected: int | None) -> int:
    if expected is None or expected <= PART_SIZE * MAX_PARTS:
        return PART_SIZE
    per_part = -(-expected // MAX_PARTS)
    return -(-per_part // MIB) * MIB  # whole MiB


def _upload_part(s3: Any, bucket: str, key: str, upload_id: str, number: int, body: bytearray) -> dict:
    answer = s3.upload_part(
        Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body, ChecksumAlgorithm="CRC32"
    )
    part = {"PartNumber": number, "ETag": answer["ETag"]}
    if answer.get("ChecksumCRC32"):
        part["ChecksumCRC32"] = answer["ChecksumCRC32"]
    return part


def _multipart(
    s3: Any, bucket: str, key: str, reader: _CountingReader, part_size: int, extra: dict[str, Any]
) -> None:
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key=key, ChecksumAlgorithm="CRC32", **extra)[
        "UploadId"
    ]
    try:
        parts: list[dict] = []
        with ThreadPoolExecutor(max_workers=PARTS_IN_FLIGHT, thread_name_prefix="archive-part") as pool:
            pending: deque[Future] = deque()
            number, body = 1, reader.read_part(part_size)
            while body:
                if len(pending) >= PARTS_IN_FLIGHT:  # bound memory: wait for the oldest part
                    parts.append(pending.popleft().result())
                pending.append(pool.submit(_upload_part, s3, bucket, key, upload_id, number, body))
                del body  # the worker holds the only reference; freed once sent
                number += 1
                body = reader.read_part(part_size)
            while pending:
                parts.append(pending.popleft().result())
        reader.check_complete()  # before completing: a short file never becomes an object
        s3.complete_multipart_upload(
            Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
        )
    except BaseException:
        try:
            s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
        except Exception:  # noqa: BLE001 - the original error matters; a lifecycle rule cleans up
            logger.warning("Could not abort multipart upload", extra={"key": key})
        raise


def stream_to_s3(s3: Any, bucket: str, key: str, response: requests.Response) -> dict[str, Any]:
    """Copy one streamed /view response into S3 part by part and verify the stored size.
    Returns the manifest fields size, content_type and etag."""
    expected = _content_length(response)
    content_type = response.headers.get("Content-Type") or "application/octet-stream"
    reader = _CountingReader(response.raw, expected)
    part_size = _part_size(expected)
    first = reader.read_part(part_size)
    # SIZE_METADATA lets a later run tell a whole object from a partial one with a HEAD.
    if len(first) < part_size:  # the whole file fits in one part: one PUT
        reader.check_complete()
        metadata = {SIZE_METADATA: str(reader.count)}
        s3.put_object(Bucket=bucket, Key=key, Body=first, ContentType=content_type, Metadata=metadata)
    else:
        # Without Content-Length the size is unknown until the end: store no size, so a
        # later run copies the file again instead of trusting an object it cannot check.
        metadata = {SIZE_METADATA: str(expected)} if expected is not None else {}
        reader.unread(first)
        del first  # only the reader holds it now; dropped once uploaded
        _multipart(s3, bucket, key, reader, part_size, {"ContentType": content_type, "Metadata": metadata})
    head = s3.head_object(Bucket=bucket, Key=key)
    if head.get("ContentLength") != reader.count:
        s3.delete_object(Bucket=bucket, Key=key)
        raise FileFailed(f"S3 holds {head.get('ContentLength')} bytes, {reader.count} were sent")
    return {"size": reader.count, "content_type": content_type, "etag": head.get("ETag")}


def _stored_copy(s3: Any, bucket: str, key: str) -> dict[str, Any] | None:
    """The manifest fields of an object a previous run stored whole, else None."""
    try:
        head = s3.head_object(Bucket=bucket, Key=key)
    except Exception as exc:  # noqa: BLE001 - botocore error types are generated
        if client_error_code(exc) in ("404", "NoSuchKey", "NotFound"):
            return None
        raise FileFailed(f"HEAD {key} failed: {exc!r}") from exc
    declared = (head.get("Metadata") or {}).get(SIZE_METADATA)
    if declared is None or not declared.isdigit() or int(declared) != head.get("ContentLength"):
        return None  # not ours, or stored without a known size: copy again
    return {"size": head["ContentLength"], "content_type": head.get("ContentType"), "etag": head.get("ETag")}


# -- one prompt ------------------------------------------------------------------------
@dataclass
class PromptResult:
    prompt_id: str
    status: str = "archived"  # archived | incomplete | nothing_to_archive
    stored: int = 0  # uploaded this run
    reused: int = 0  # already in S3 from an earlier, interrupted run
    lost: int = 0
    failed: int = 0
    bytes: int = 0
    manifest_key: str | None = None
    event_sent: bool = False
    records: list[dict[str, Any]] = field(default_factory=list)
    backend: str | None = None  # the fleet's name of the ComfyUI it came from

    def summary(self) -> dict[str, Any]:
        return {
            "prompt_id": self.prompt_id,
            "status": self.status,
            "stored": self.stored,
            "reused": self.reused,
            "lost": self.lost,
            "failed": self.failed,
            "bytes": self.bytes,
            "manifest_key": self.manifest_key,
        }


def _archive_file(
    client: ComfyUIClient, s3: Any, bucket: str, file: PlannedFile
) -> tuple[str, dict[str, Any]]:
    """('reused' | 'stored' | 'lost', manifest record). Raises FileFailed or a run-fatal error."""
    stored = _stored_copy(s3, bucket, file.key)
    if stored is not None:
        return "reused", {**file.describe(), "s3_key": file.key, **stored, "archived": True}
    try:
        response = client.open_view(file.source())
    except ComfyUIFileMissingError:
        return "lost", {
            **file.describe(),
            "s3_key": None,
            "size": None,
            "content_type": None,
            "etag": None,
            "archived": False,
            "lost": True,
        }
    except _RUN_FATAL:
        raise
    except ComfyUIError as exc:
        raise FileFailed(f"ComfyUI: {exc.message}") from exc
    try:
        fields = stream_to_s3(s3, bucket, file.key, response)
    except (FileFailed, *_RUN_FATAL):
        raise
    except Exception as exc:  # noqa: BLE001 - S3 failed after botocore's own retries
        raise FileFailed(f"S3: {exc!r}") from exc
    finally:
        response.close()
    return "stored", {**file.describe(), "s3_key": file.key, **fields, "archived": True}


def _manifest(prompt_id: str, entry: dict[str, Any], records: list[dict[str, Any]],
              backend: str | None) -> dict[str, Any]:
    status = entry.get("status") if isinstance(entry.get("status"), dict) else {}
    return {
        "prompt_id": prompt_id,
        "backend": backend,  # the ComfyUI that ran it ("default" for a lone server)
        # Who asked (recorded in extra_data when submitted through this API), else None.
        "workflow": notify.origin(entry).get("workflow"),
        "job_id": notify.origin(entry).get("job_id"),
        "archived_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "status": status.get("status_str"),
        "completed": status.get("completed"),
        "execution_time": execution_time(entry),
        "files": records,
        # What went wrong, for a prompt ComfyUI has since forgotten (restart, eviction).
        "failure": failure_details(entry) if failed(entry) else None,
        # The outputs as ComfyUI listed them (text too); never the workflow graph (`prompt`).
        "outputs": entry.get("outputs") or {},
    }


def _archive_detail(settings: Settings, result: PromptResult) -> dict[str, Any]:
    """Where the prompt's files are: part of every event about an archived prompt."""
    archived = [r for r in result.records if r.get("archived")]
    shown = archived[:MAX_EVENT_KEYS]
    return {
        "bucket": settings.image_bucket,
        "manifest_key": result.manifest_key,
        "keys": [r["s3_key"] for r in shown],
        "sizes": [r["size"] for r in shown],
        "lost": result.lost,
        "truncated": len(shown) < len(archived),
    }


def _send_event(settings: Settings, result: PromptResult) -> bool:
    detail = {"prompt_id": result.prompt_id, "backend": result.backend, **_archive_detail(settings, result)}
    return events.put_event(EVENT_DETAIL_TYPE, detail, settings.event_bus_name)


def _emit_metrics(result: PromptResult) -> None:
    if result.stored:
        metrics.add_metric(name="ImagesArchived", unit=MetricUnit.Count, value=result.stored)
        metrics.add_metric(name="BytesArchived", unit=MetricUnit.Bytes, value=result.bytes)
    if result.lost:
        metrics.add_metric(name="ImagesLost", unit=MetricUnit.Count, value=result.lost)


def _require_bucket(settings: Settings) -> str:
    if not settings.image_bucket:
        raise ConfigurationError("IMAGE_BUCKET is not set")
    return settings.image_bucket


def archive_prompt(
    prompt_id: str,
    entry: dict[str, Any],
    *,
    client: ComfyUIClient | None = None,
    s3: Any = None,
    settings: Settings | None = None,
) -> PromptResult:
    """Copy one finished prompt's files to S3 and, when all are stored or lost, write its
    manifest and announce it. Raises ComfyUIUnreachableError / ComfyUITimeoutError when
    ComfyUI itself is gone (the caller ends the run); any other failure leaves the prompt
    incomplete for the next run."""
    settings = settings or get_settings()
    bucket = _require_bucket(settings)
    client = client or get_client()
    s3 = s3 or s3_client()
    result = PromptResult(prompt_id, backend=client.backend)
    planned = plan_files(settings, prompt_id, entry)
    if not planned:
        result.status = "nothing_to_archive"
        # A small manifest all the same: it keeps the outcome after ComfyUI forgets the
        # prompt, and marks it announced so later sweeps do not announce it again.
        _write_manifest(s3, settings, prompt_id, entry, result)
        return result
    try:
        for file in planned:
            try:
                outcome, record = _archive_file(client, s3, bucket, file)
            except FileFailed as exc:
                result.failed += 1
                logger.warning(
                    "File not archived; retried next run",
                    extra={"prompt_id": prompt_id, "file": file.describe(), "reason": str(exc)},
                )
                continue
            result.records.append(record)
            if outcome == "stored":
                result.stored += 1
                result.bytes += record["size"]
            elif outcome == "reused":
                result.reused += 1
            else:
                result.lost += 1
                logger.warning(
                    "File gone from ComfyUI; recorded as lost",
                    extra={"prompt_id": prompt_id, "file": file.describe()},
                )
    finally:
        _emit_metrics(result)  # also when ComfyUI vanished mid-prompt: those bytes are in S3
    if result.failed:
        result.status = "incomplete"
        return result
    _write_manifest(s3, settings, prompt_id, entry, result)
    return result


def _write_manifest(
    s3: Any, settings: Settings, prompt_id: str, entry: dict[str, Any], result: PromptResult
) -> None:
    key = manifest_key(settings, prompt_id)
    body = json.dumps(_manifest(prompt_id, entry, result.records, result.backend), ensure_ascii=False, default=str)
    try:
        s3.put_object(
            Bucket=settings.image_bucket, Key=key, Body=body.encode("utf-8"), ContentType="application/json"
        )
    except Exception as exc:  # noqa: BLE001 - botocore error types are generated
        result.status = "incomplete"
        logger.warning(
            "Manifest not written; prompt retried next run",
            extra={"prompt_id": prompt_id, "error": repr(exc)},
        )
        return
    result.manifest_key = key
    logger.info("Prompt archived", extra={**result.summary(), "backend": result.backend})
    # Right after the manifest: a prompt with one is never swept again. Two archivers that
    # reach the same prompt at once (the live watcher, the schedule, an API-triggered run)
    # could both get here, so the announcement is claimed in the prompt-state table first:
    # each prompt's events and webhook go out once, whoever wins.
    if not prompt_state.claim_announcement(prompt_id, settings):
        return
    if result.status != "nothing_to_archive":
        result.event_sent = _send_event(settings, result)
    notify.prompt_finished(prompt_id, entry, _archive_detail(settings, result), settings, backend=result.backend)
    _remember_duration(entry, settings)


def _remember_duration(entry: dict[str, Any], settings: Settings) -> None:
    """A successful run's time feeds the ETA of the same workflow's next runs."""
    workflow = notify.origin(entry).get("workflow")
    seconds = execution_time(entry)
    if isinstance(workflow, str) and seconds is not None and not failed(entry):
        prompt_state.record_duration(workflow, seconds, settings)


# -- runs ------------------------------------------------------------------------------
def archived_prompt_ids(s3: Any, settings: Settings, candidates: Iterable[str]) -> set[str]:
    """Which candidates already have a manifest.

    One LIST page covers 1,000 keys of any prompts, one HEAD a single prompt: list the
    prefix while that takes fewer requests than asking per prompt, then HEAD the rest.
    A small archive is answered by a single LIST; a huge one costs at most a few pages
    plus one HEAD per recent prompt, never a walk of the whole bucket.
    """
    wanted = set(candidates)
    if not wanted:
        return set()
    prefix, suffix = settings.image_prefix, f"/{MANIFEST_NAME}"
    found: set[str] = set()
    page_budget = max(1, len(wanted) // 10)
    complete = False
    pages = s3.get_paginator("list_objects_v2").paginate(
        Bucket=settings.image_bucket, Prefix=prefix, PaginationConfig={"PageSize": LIST_PAGE_SIZE}
    )
    for number, page in enumerate(pages, start=1):
        for item in page.get("Contents") or []:
            key = item["Key"]
            if key.endswith(suffix):
                prompt_id = key[len(prefix) : -len(suffix)]
                if prompt_id in wanted:
                    found.add(prompt_id)
        if not page.get("IsTruncated"):
            complete = True
            break
        if number >= page_budget:
            break
    if not complete:
        found |= {
            pid for pid in wanted - found if _exists(s3, settings.image_bucket, manifest_key(settings, pid))
        }
    return found


def _exists(s3: Any, bucket: str, key: str) -> bool:
    try:
        s3.head_object(Bucket=bucket, Key=key)
    except Exception as exc:  # noqa: BLE001 - botocore error types are generated
        if client_error_code(exc) in ("404", "NoSuchKey", "NotFound"):
            return False
        raise
    return True


@dataclass
class RunSummary:
    status: str = "ok"  # ok | failed | out_of_time
    prompts_seen: int = 0
    prompts_already_archived: int = 0
    prompts_archived: int = 0
    prompts_incomplete: int = 0
    images_archived: int = 0
    images_reused: int = 0
    images_lost: int = 0
    images_failed: int = 0
    bytes_archived: int = 0
    error: str | None = None
    prompts: list[dict[str, Any]] = field(default_factory=list)

    def add(self, result: PromptResult) -> None:
        self.prompts.append(result.summary())
        if result.status == "archived":
            self.prompts_archived += 1
        elif result.status == "incomplete":
            self.prompts_incomplete += 1
        self.images_archived += result.stored
        self.images_reused += result.reused
        self.images_lost += result.lost
        self.images_failed += result.failed
        self.bytes_archived += result.bytes

    def fail(self, message: str, exc: Exception) -> None:
        self.status = "failed"
        self.error = message
        metrics.add_metric(name="ArchiveRunFailed", unit=MetricUnit.Count, value=1)
        logger.warning("Archive run failed", extra={"error": message, "cause": repr(exc)})

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def compact(entry: dict[str, Any]) -> dict[str, Any]:
    """What archiving a prompt needs of its history entry: outputs, status, and who asked
    (our extra_data key). The workflow graph and the editor's extra_pnginfo, which make up
    most of a big history, are dropped as the entry streams past."""
    result = {key: entry[key] for key in ("outputs", "status", "meta") if key in entry}
    item = entry.get("prompt")
    if isinstance(item, list) and len(item) >= 4:
        extra = item[3] if isinstance(item[3], dict) else {}
        kept = {key: extra[key] for key in (notify.EXTRA_DATA_KEY, "client_id") if key in extra}
        result["prompt"] = [item[0], item[1], {}, kept, *item[4:5]]
    return result


def _candidates(items: Iterable[tuple[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """Finished prompts, oldest first (as ComfyUI lists them): the oldest are the first to
    fall out of its history. Those without files too: their outcome is announced. Each entry
    is compacted as it streams past, so memory stays flat whatever the history's size, and a
    ComfyUI restart during the sweep cannot take the entries from under it."""
    found = []
    for prompt_id, entry in items:
        if not is_finished(entry):
            continue
        if not validation.PROMPT_ID.fullmatch(str(prompt_id)):
            # Not a usable S3 key segment, and the API could never look it up either.
            logger.warning("Skipping prompt with an unusable id", extra={"prompt_id": str(prompt_id)[:200]})
            continue
        found.append((str(prompt_id), compact(entry)))
    return found


def _sweep_history(client: ComfyUIClient, s3: Any, settings: Settings,
                   seconds_left: Callable[[], float] | None, summary: RunSummary) -> bool:
    """Archive every finished prompt in `client`'s recent history that has no manifest yet,
    counted in `summary`. False when ComfyUI failed the run (unreachable, hung, a broken
    answer); an S3 failure is the run's, not ComfyUI's."""
    try:
        candidates = _candidates(client.history_items(settings.archive_max_items))
    except ComfyUIError as exc:
        summary.fail(f"ComfyUI history unavailable: {exc.message}", exc)
        return False
    summary.prompts_seen = len(candidates)
    try:
        done = archived_prompt_ids(s3, settings, (pid for pid, _ in candidates))
    except Exception as exc:  # noqa: BLE001 - botocore error types are generated
        summary.fail("Could not list archived prompts in S3", exc)
        return True
    summary.prompts_already_archived = len(done)
    for prompt_id, entry in candidates:
        if prompt_id in done:
            continue
        if seconds_left is not None and seconds_left() < TIME_MARGIN_SECONDS:
            summary.status = "out_of_time"
            break
        try:
            summary.add(archive_prompt(prompt_id, entry, client=client, s3=s3, settings=settings))
        except _RUN_FATAL as exc:
            summary.fail(f"ComfyUI went away: {exc.message}", exc)
            return False
    return True


def run_sweep(
    *,
    client: ComfyUIClient | None = None,
    s3: Any = None,
    settings: Settings | None = None,
    seconds_left: Callable[[], float] | None = None,
) -> dict[str, Any]:
    """Archive every finished prompt in recent history that has no manifest yet: `client`'s
    ComfyUI (the watcher's catch-up), or without one every backend of the fleet (the
    schedule), which also stamps the backends that answered (prompt_state.record_seen) and
    emits the fleet's metrics. With nothing new it downloads and uploads nothing: one GET
    /history (streamed) and one LIST per backend, and the fleet sweep's one GET /queue."""
    settings = settings or get_settings()
    _require_bucket(settings)
    s3 = s3 or s3_client()
    if client is None:
        return _sweep_fleet(s3, settings, seconds_left)
    summary = RunSummary()
    _sweep_history(client, s3, settings, seconds_left, summary)
    logger.info("Archive run finished", extra={k: v for k, v in summary.as_dict().items() if k != "prompts"})
    return summary.as_dict()


# -- the fleet -------------------------------------------------------------------------
_COUNTS = ("prompts_seen", "prompts_already_archived", "prompts_archived", "prompts_incomplete",
           "images_archived", "images_reused", "images_lost", "images_failed", "bytes_archived")
# The summary's status when backends differ: the first of these any backend has.
_WORST_FIRST = ("failed", "out_of_time", "ok")


@dataclass
class BackendSweep:
    """One backend's part of the scheduled sweep: its run, and what its queue said."""

    backend: Backend
    run: RunSummary = field(default_factory=RunSummary)
    running: int | None = None  # None: the backend did not answer GET /queue
    pending: int | None = None
    healthy: bool = False  # answered its queue and history, and did not go away mid-run

    @property
    def answered(self) -> bool:
        return self.running is not None

    @property
    def depth(self) -> int:
        return (self.running or 0) + (self.pending or 0)

    def as_dict(self) -> dict[str, Any]:
        counts = {key: value for key, value in self.run.as_dict().items() if key != "prompts"}
        return {**counts, "healthy": self.healthy, "draining": self.backend.draining,
                "queue_running": self.running, "queue_pending": self.pending}


def _queue_length(queue: dict[str, Any], key: str) -> int:
    items = queue.get(key)
    return len(items) if isinstance(items, list) else 0


def _sweep_backend(backend: Backend, client: ComfyUIClient, s3: Any, settings: Settings,
                   seconds_left: Callable[[], float] | None) -> BackendSweep:
    """Ask the backend's queue, then sweep its history. Never raises: whatever goes wrong is
    this backend's failure in the summary, and the other backends are swept all the same."""
    swept = BackendSweep(backend)
    # Each backend's own log keys: this runs on a thread of its own (a copy of the caller's
    # context) or, for a lone backend, inline, where the key is taken off again below.
    logger.thread_safe_append_keys(backend=backend.name)
    try:
        try:
            queue = client.queue()
        except ComfyUIError as exc:
            # Not swept: its history would fail the same way, after another timeout.
            swept.run.fail(f"ComfyUI queue unavailable: {exc.message}", exc)
            return swept
        swept.running = _queue_length(queue, "queue_running")
        swept.pending = _queue_length(queue, "queue_pending")
        swept.healthy = _sweep_history(client, s3, settings, seconds_left, swept.run)
    except Exception as exc:  # noqa: BLE001 - one backend's failure must not stop the others
        logger.exception("Archive run of one backend failed")
        swept.run.fail("Archive run failed unexpectedly", exc)
    finally:
        logger.info("Backend swept", extra={k: v for k, v in swept.as_dict().items()})
        logger.thread_safe_remove_keys(["backend"])
    return swept


def _sweep_fleet(s3: Any, settings: Settings, seconds_left: Callable[[], float] | None) -> dict[str, Any]:
    fleet = get_fleet()
    backends = fleet.backends()
    by_name = {backend.name: backend for backend in backends}
    outcomes = fleet.each(
        lambda client: _sweep_backend(by_name[client.backend], client, s3, settings, seconds_left),
        backends, workers=MAX_PARALLEL_SWEEPS,
    )
    swept = []
    for outcome in outcomes:
        if outcome.ok:
            swept.append(outcome.value)
        else:  # _sweep_backend catches ComfyUI's errors itself; kept as a failure all the same
            failed_sweep = BackendSweep(outcome.backend)
            failed_sweep.run.fail(f"ComfyUI unavailable: {outcome.error.message}", outcome.error)
            swept.append(failed_sweep)
    prompt_state.record_seen([one.backend.name for one in swept if one.answered], settings)
    emit_fleet_metrics(swept)
    summary = _fleet_summary(swept)
    logger.info("Archive run finished",
                extra={k: v for k, v in summary.items() if k not in ("prompts", "backends")})
    return summary


def _fleet_summary(swept: list[BackendSweep]) -> dict[str, Any]:
    """The run's summary: the keys of one backend's run, as totals, plus `backends`, each
    backend's own counts, status and error, keyed by name."""
    total = RunSummary()
    for one in swept:
        for key in _COUNTS:
            setattr(total, key, getattr(total, key) + getattr(one.run, key))
        total.prompts += [{**prompt, "backend": one.backend.name} for prompt in one.run.prompts]
    statuses = {one.run.status for one in swept}
    total.status = next((status for status in _WORST_FIRST if status in statuses), "ok")
    errors = [(one.backend.name, one.run.error) for one in swept if one.run.error]
    if len(swept) == 1 and errors:
        total.error = errors[0][1]  # a lone server's error reads as it always did
    elif errors:
        total.error = "; ".join(f"{name}: {error}" for name, error in errors)
    return {**total.as_dict(), "backends": {one.backend.name: one.as_dict() for one in swept}}


def emit_fleet_metrics(swept: list[BackendSweep]) -> None:
    """What a scaling policy needs, once a minute (docs/archive-and-events.md#fleet-metrics).

    Per backend, dimension `Backend`: BackendQueueDepth (running + pending) and
    BackendRunning when its queue answered (no data point otherwise: an unknown depth is
    not a zero), BackendHealthy and BackendDraining (1 or 0) always. Fleet totals, without
    that dimension, over the backends that serve (healthy and not draining):
    FleetQueueDepth, FleetRunning, FleetHealthyBackends; and FleetBackends (all of them)
    and FleetDrainingBackends. A draining backend's queue finishes where it is, so new
    capacity would not take it: it is left out of the totals a policy scales on."""
    for one in swept:
        values: list[tuple[str, MetricUnit, float]] = [
            ("BackendHealthy", MetricUnit.Count, int(one.healthy)),
            ("BackendDraining", MetricUnit.Count, int(one.backend.draining)),
        ]
        if one.answered:
            values += [("BackendQueueDepth", MetricUnit.Count, one.depth),
                       ("BackendRunning", MetricUnit.Count, one.running or 0)]
        emit_dimensioned({"Backend": one.backend.name}, values)
    serving = [one for one in swept if one.healthy and not one.backend.draining]
    totals = {
        "FleetQueueDepth": sum(one.depth for one in serving),
        "FleetRunning": sum(one.running or 0 for one in serving),
        "FleetHealthyBackends": len(serving),
        "FleetDrainingBackends": sum(1 for one in swept if one.backend.draining),
        "FleetBackends": len(swept),
    }
    for name, value in totals.items():
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)


# -- one prompt, now -------------------------------------------------------------------
def _client_for(prompt_id: str, backend: str | None) -> ComfyUIClient | None:
    """The client of the backend holding the prompt: the one named, when the fleet has it;
    else the one fleet.placement finds (recorded at submission, or asked of every backend;
    no lookup for a lone server). None when no backend knows the prompt."""
    fleet = get_fleet()
    if backend is not None:
        named = fleet.find(backend)
        if named is not None:
            return fleet.client(named)
        logger.info("Archive request names a backend not in the fleet; locating the prompt",
                    extra={"prompt_id": prompt_id, "backend": backend[:40]})
    placement = get_placements().locate(prompt_id)
    return placement.client if placement.backend is not None else None


def archive_one(
    prompt_id: str,
    *,
    client: ComfyUIClient | None = None,
    backend: str | None = None,
    s3: Any = None,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """Archive one prompt now (e.g. right after it finished). Idempotent: an archived
    prompt is reported as such without touching ComfyUI's files. Asked of `client`, else of
    the backend named `backend`, else of the backend the fleet finds the prompt on."""
    prompt_id = validation.prompt_id(prompt_id)
    settings = settings or get_settings()
    _require_bucket(settings)
    s3 = s3 or s3_client()
    client = client or _client_for(prompt_id, backend)
    if client is None:  # no backend has it (yet, or any more): nothing to copy from
        return {"prompt_id": prompt_id, "status": "not_finished"}
    try:
        entry = client.history_entry(prompt_id)
    except ComfyUIError as exc:
        summary = RunSummary()
        summary.fail(f"ComfyUI history unavailable: {exc.message}", exc)
        return {"prompt_id": prompt_id, **summary.as_dict()}
    if entry is None:
        return {"prompt_id": prompt_id, "status": "not_finished"}
    summary = RunSummary()
    try:
        if _exists(s3, settings.image_bucket, manifest_key(settings, prompt_id)):
            return {"prompt_id": prompt_id, "status": "already_archived"}
    except Exception as exc:  # noqa: BLE001 - botocore error types are generated
        summary.fail("Could not check the archive in S3", exc)
        return {"prompt_id": prompt_id, **summary.as_dict()}
    try:
        result = archive_prompt(prompt_id, entry, client=client, s3=s3, settings=settings)
    except _RUN_FATAL as exc:
        summary.fail(f"ComfyUI went away: {exc.message}", exc)
        return {"prompt_id": prompt_id, **summary.as_dict()}
    return result.summary()


# -- reading the archive (for the API) -------------------------------------------------
def load_manifest(
    prompt_id: str, *, s3: Any = None, settings: Settings | None = None
) -> dict[str, Any] | None:
    """The prompt's manifest, or None when it is not archived (yet)."""
    prompt_id = validation.prompt_id(prompt_id)
    settings = settings or get_settings()
    s3 = s3 or s3_client()
    try:
        answer = s3.get_object(Bucket=_require_bucket(settings), Key=manifest_key(settings, prompt_id))
    except Exception as exc:  # noqa: BLE001 - botocore error types are generated
        if client_error_code(exc) in ("NoSuchKey", "404", "NotFound"):
            return None
        raise StorageError("Could not read the image archive") from exc
    try:
        data = json.loads(answer["Body"].read())
    except ValueError as exc:
        raise StorageError("The archived manifest is not valid JSON") from exc
    return data if isinstance(data, dict) else None


def presigned_url(key: str, *, s3: Any = None, settings: Settings | None = None) -> str:
    """A time-limited GET URL for an archived file (expiry: PRESIGN_EXPIRY_SECONDS)."""
    settings = settings or get_settings()
    if not key.startswith(settings.image_prefix) or ".." in key.split("/"):
        # Only archive keys: the API must not become a way to read anything in the bucket.
        raise BadRequestError("Not an archived image key")
    s3 = s3 or s3_client()
    return s3.generate_presigned_url(
        "get_object",
        Params={"Bucket": _require_bucket(settings), "Key": key},
        ExpiresIn=settings.presign_expiry,
    )
