"""Answers that join what ComfyUI still knows with the image archive in S3.

ComfyUI forgets its history on restart and wipes temp images; the archiver keeps a manifest
per prompt. task_status, image and history answer from ComfyUI when it has the prompt and
from the manifest when it does not, so a finished prompt stays finished.
"""

from __future__ import annotations

from collections import OrderedDict
from functools import lru_cache
from typing import Any

from .. import answers, deadline, status
from ..comfyui.client import ComfyUIClient
from ..config import Settings, get_settings
from ..errors import NotFoundError, StorageError
from ..invoke import invoke_async
from ..live import state as prompt_state
from ..observability import logger
from . import sweep as archive


# A finished prompt not archived yet is asked for at most once per this many seconds per
# container: a client polling task_status every 100 ms must not queue an archiver run per
# poll (async invokes are queued, and the archiver runs one at a time). A lost request is
# harmless: the next poll after the interval asks again, and the schedule sweeps anyway.
ARCHIVE_REQUEST_INTERVAL_SECONDS = 5.0
# Prompts remembered for that; the oldest are forgotten first (at worst, one extra request).
MAX_REMEMBERED_REQUESTS = 1024


class ImageArchive:
    """The API's view of the archive: manifests, download links, archive-now requests."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._requested: OrderedDict[str, float] = OrderedDict()  # prompt id -> when asked

    def manifest(self, prompt_id: str, *, required: bool = False) -> dict[str, Any] | None:
        """The prompt's manifest or None. With required=False an S3 failure degrades to
        None (the answer from ComfyUI is still right, just without archive links)."""
        if not self.settings.image_bucket:
            return None
        try:
            return archive.load_manifest(prompt_id, settings=self.settings)
        except StorageError:
            if required:
                raise
            logger.warning("Archive unreadable; answering without it", exc_info=True)
            return None

    def download_url(self, key: str) -> str:
        return archive.presigned_url(key, settings=self.settings)

    def request(self, prompt_id: str) -> None:
        """Ask the archiver to copy this prompt now instead of at its next tick (at most once
        per ARCHIVE_REQUEST_INTERVAL_SECONDS per prompt)."""
        if not self.settings.archiver_function_name:
            return
        now = deadline.now()
        last = self._requested.get(prompt_id)
        if last is not None and now - last < ARCHIVE_REQUEST_INTERVAL_SECONDS:
            return
        self._requested[prompt_id] = now
        self._requested.move_to_end(prompt_id)
        while len(self._requested) > MAX_REMEMBERED_REQUESTS:
            self._requested.popitem(last=False)
        invoke_async(self.settings.archiver_function_name, {"prompt_id": prompt_id})


def _file_key(item: dict[str, Any]) -> tuple[str, str, str, str]:
    return (str(item.get("node_id")), str(item.get("filename")), str(item.get("subfolder") or ""),
            str(item.get("type")))


def with_archive(images: list[dict[str, Any]], manifest: dict[str, Any] | None,
                 store: ImageArchive) -> list[dict[str, Any]]:
    """Add `archived`, `s3_key` and `download_url` to each image (url stays ComfyUI's)."""
    records = {_file_key(r): r for r in (manifest or {}).get("files", []) if isinstance(r, dict)}
    for image in images:
        record = records.get(_file_key(image)) or {}
        key = record.get("s3_key") if record.get("archived") else None
        image["archived"] = bool(key)
        image["s3_key"] = key
        image["download_url"] = store.download_url(key) if key else None
        if record.get("lost"):
            image["lost"] = True
    return images


def _images_from_manifest(client: ComfyUIClient, manifest: dict[str, Any],
                          store: ImageArchive) -> list[dict[str, Any]]:
    images = []
    for record in manifest.get("files", []):
        if not isinstance(record, dict):
            continue
        image = {
            "filename": record.get("filename"),
            "subfolder": record.get("subfolder") or "",
            "type": record.get("type"),
            "node_id": record.get("node_id"),
        }
        image["url"] = client.view_url(image)
        images.append(image)
    return with_archive(images, manifest, store)


def _status_from_manifest(client: ComfyUIClient, prompt_id: str, manifest: dict[str, Any],
                          store: ImageArchive) -> dict[str, Any]:
    base = {
        "prompt_id": prompt_id,
        "images": _images_from_manifest(client, manifest, store),
        "execution_time": manifest.get("execution_time"),
        "node_errors": {},
        "source": "archive",
    }
    failure = manifest.get("failure")  # written by the archiver exactly when status.failed()
    if failure is not None:
        return {"status": "error", "message": "Task failed (answered from the archive)",
                "error": failure, **base}
    return {"status": "completed", "message": "Image generation completed (answered from the archive)",
            **base}


def _finished_with_archive(client: ComfyUIClient, prompt_id: str, entry: dict[str, Any],
                           store: ImageArchive) -> dict[str, Any]:
    answer = status.finished_status(client, prompt_id, entry)
    if answer["images"]:
        manifest = store.manifest(prompt_id)
        with_archive(answer["images"], manifest, store)
        if manifest is None:
            store.request(prompt_id)
    return answer


# What a completed answer whose files are still being copied tells the client: ask again
# in this many seconds. The live watcher copies a prompt within about a second of its end;
# without it the archiver was just asked (above), which takes a few seconds more.
COPYING_RETRY_AFTER_SECONDS = 2


def copy_state(answer: dict[str, Any], store: ImageArchive) -> dict[str, Any] | None:
    """The `archive` object of a completed answer with images, when there is an archive:
    `archived` once every file has a download_url or is settled (lost, a type not copied),
    `copying` while the manifest is not written yet."""
    if not store.settings.image_bucket or answer.get("status") not in ("completed", "error"):
        return None
    images = answer.get("images") or []
    if not images:
        return None
    copying = not any(image.get("archived") or image.get("lost") for image in images) and \
        any(image.get("type") in store.settings.archive_types for image in images)
    if copying:
        return {"status": "copying", "retry_after": COPYING_RETRY_AFTER_SECONDS}
    return {"status": "archived", "retry_after": None}


def task_status_response(client: ComfyUIClient, store: ImageArchive,
                         prompt_id: str) -> tuple[int, dict[str, Any], dict[str, str]]:
    """GET /api/task_status: the answer, with `Retry-After` while its files are copied."""
    answer = task_status(client, store, prompt_id)
    copy = copy_state(answer, store)
    headers: dict[str, str] = {}
    if copy is not None:
        answer["archive"] = copy
        if copy["retry_after"] is not None:
            headers["Retry-After"] = str(copy["retry_after"])
    return 200, answer, headers


def task_status(client: ComfyUIClient, store: ImageArchive, prompt_id: str) -> dict[str, Any]:
    entry = client.history_entry(prompt_id)
    if entry is not None:
        return _finished_with_archive(client, prompt_id, entry, store)
    answer = status.queue_status(client, prompt_id)
    if answer["status"] == "running" and store.settings.prompt_state_table:
        # One GetItem: what the live watcher last wrote (null before its first write).
        answer["progress"] = prompt_state.progress_answer(prompt_state.load(prompt_id, store.settings))
    if answer["status"] != "not_found":
        return answer
    manifest = store.manifest(prompt_id, required=True)
    if manifest:
        return _status_from_manifest(client, prompt_id, manifest, store)
    return _cancelled(prompt_id, store) or answer


def _cancelled(prompt_id: str, store: ImageArchive) -> dict[str, Any] | None:
    """The answer for a prompt DELETE /api/task took out of the queue (ComfyUI keeps no
    trace of it), while its prompt-state item lasts; None otherwise. An interrupted running
    prompt is not one: ComfyUI's history reports it (`error`, type `interrupted`)."""
    item = prompt_state.load(prompt_id, store.settings) if store.settings.prompt_state_table else None
    cancelled_at = (item or {}).get("cancelled_at")
    if not isinstance(cancelled_at, (int, float)):
        return None
    return {"status": "cancelled", "message": "Task was cancelled before it ran",
            "prompt_id": prompt_id, "cancelled_at": cancelled_at}


def images(client: ComfyUIClient, store: ImageArchive, prompt_id: str) -> dict[str, Any]:
    entry = client.history_entry(prompt_id)
    if entry is not None:
        found = _finished_with_archive(client, prompt_id, entry, store)["images"]
    else:
        manifest = store.manifest(prompt_id, required=True)
        found = _images_from_manifest(client, manifest, store) if manifest else []
    if not found:
        raise NotFoundError(f"No images found for prompt {prompt_id}")
    return {"status": "success", "prompt_id": prompt_id, "images": found}


def history_entry(client: ComfyUIClient, store: ImageArchive, prompt_id: str) -> dict[str, Any]:
    entry = client.history_entry(prompt_id)
    if entry is not None:
        return {prompt_id: answers.public_entry(entry)}
    manifest = store.manifest(prompt_id, required=True)
    if manifest is None:
        raise NotFoundError(f"No history for prompt {prompt_id}")
    # ComfyUI forgot it (restart or eviction): the archived record, in history's shape.
    return {prompt_id: {
        "outputs": manifest.get("outputs") or {},
        "status": {"status_str": manifest.get("status"), "completed": manifest.get("completed"),
                   "messages": []},
        "archive": manifest,
    }}


@lru_cache(maxsize=1)
def get_archive() -> ImageArchive:
    return ImageArchive(get_settings())
