"""Answers that join what ComfyUI still knows with the image archive in S3.

ComfyUI forgets its history on restart and wipes temp images; the archiver keeps a manifest
per prompt. task_status, image and history answer from ComfyUI when it has the prompt and
from the manifest when it does not, so a finished prompt stays finished.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from .. import answers, deadline, status
from ..comfyui.client import ComfyUIClient
from ..config import Settings, get_settings
from ..errors import ComfyUIUnreachableError, NotFoundError, StorageError
from ..fleet.placement import Placement, get_placements
from ..fleet.pool import get_fleet
from ..fleet.routing import NoBackendAvailableError
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

    def request(self, prompt_id: str, backend: str | None = None) -> None:
        """Ask the archiver to copy this prompt now instead of at its next tick (at most once
        per ARCHIVE_REQUEST_INTERVAL_SECONDS per prompt). `backend`: the fleet backend that
        ran it, so the archiver need not look it up."""
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
        payload = {"prompt_id": prompt_id}
        if backend is not None and get_fleet().is_fleet:
            payload["backend"] = backend
        invoke_async(self.settings.archiver_function_name, payload)


def _file_key(item: dict[str, Any]) -> tuple[str, str, str, str]:
    return (str(item.get("node_id")), str(item.get("filename")), str(item.get("subfolder") or ""),
            str(item.get("type")))


def with_archive(images: list[dict[str, Any]], manifest: dict[str, Any] | None,
                 store: ImageArchive) -> list[dict[str, Any]]:
    """Add `archived`, `s3_key`, `download_url` and `size` to each image (url stays ComfyUI's)."""
    records = {_file_key(r): r for r in (manifest or {}).get("files", []) if isinstance(r, dict)}
    for image in images:
        record = records.get(_file_key(image)) or {}
        key = record.get("s3_key") if record.get("archived") else None
        image["archived"] = bool(key)
        image["s3_key"] = key
        image["download_url"] = store.download_url(key) if key else None
        # What the archived copy holds, so a client can check its download.
        image["size"] = record.get("size") if key and isinstance(record.get("size"), int) else None
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
            store.request(prompt_id, client.backend)
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


def task_status_response(placement: Placement, store: ImageArchive,
                         prompt_id: str) -> tuple[int, dict[str, Any], dict[str, str]]:
    """GET /api/task_status: the answer, with `Retry-After` while its files are copied."""
    answer = _following(placement, store, prompt_id, lambda: task_status(placement, store, prompt_id),
                        lambda manifest: _status_from_manifest(placement.client, prompt_id, manifest, store))
    if placement.backend is not None and get_fleet().is_fleet:
        answer["backend"] = placement.backend.name
    copy = copy_state(answer, store)
    headers: dict[str, str] = {}
    if copy is not None:
        answer["archive"] = copy
        if copy["retry_after"] is not None:
            headers["Retry-After"] = str(copy["retry_after"])
    return 200, answer, headers


def task_status(placement: Placement, store: ImageArchive, prompt_id: str) -> dict[str, Any]:
    client = placement.client
    entry = client.history_entry(prompt_id)
    if entry is not None:
        return _finished_with_archive(client, prompt_id, entry, store)
    answer = status.queue_status(client, prompt_id)
    if answer["status"] == "running" and store.settings.prompt_state_table:
        # What the live watcher last wrote (null before its first write).
        answer["progress"] = prompt_state.progress_answer(_state_item(placement, prompt_id, store))
    if answer["status"] != "not_found":
        return answer
    manifest = store.manifest(prompt_id, required=True)
    if manifest:
        return _status_from_manifest(client, prompt_id, manifest, store)
    return _cancelled(placement, prompt_id, store) or _lost(placement, prompt_id) or answer


def _following(placement: Placement, store: ImageArchive, prompt_id: str,
               ask: Callable[[], dict[str, Any]],
               archived: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, Any]:
    """`ask()` the prompt's backend; when it cannot be reached, a finished prompt is
    answered from its archive (`archived(manifest)`), and a prompt whose backend has been
    gone past the grace period is reported lost. Otherwise the backend's trouble (503)."""
    try:
        return ask()
    except ComfyUIUnreachableError:
        manifest = store.manifest(prompt_id)
        if manifest:
            return archived(manifest)
        lost = _lost(placement, prompt_id, reachable=False)
        if lost is not None:
            return lost
        raise


def _lost(placement: Placement, prompt_id: str, reachable: bool = True) -> dict[str, Any] | None:
    """The `error` answer for a prompt of a fleet backend that is gone: unreachable (or
    removed from the registry) and not seen for longer than BACKEND_GONE_GRACE_SECONDS.
    None while it may still come back; a removed backend within its grace is a 503."""
    if placement.recorded is None or (reachable and placement.backend is not None):
        return None  # no record, or its backend answered: not_found means not found
    away = get_placements().gone(placement)
    if away is None:
        if placement.backend is None:
            raise NoBackendAvailableError(
                f"ComfyUI backend {placement.recorded!r}, which holds this prompt, is not in the "
                "fleet now; retry later", extra={"prompt_id": prompt_id, "backend": placement.recorded})
        return None
    message = (f"ComfyUI backend {placement.recorded!r} has been gone for {int(away // 60)} minutes; "
               "the prompt did not finish there and its result is lost")
    return {
        "status": "error", "message": message, "prompt_id": prompt_id, "images": [],
        "execution_time": None, "node_errors": {}, "backend": placement.recorded,
        "error": {"type": "backend_gone", "node_id": None, "node_type": None,
                  "exception_type": None, "exception_message": message},
    }


def _state_item(placement: Placement, prompt_id: str, store: ImageArchive) -> dict[str, Any] | None:
    """The prompt's prompt-state item: the one the fleet's lookup read already, else one
    GetItem (none without the table)."""
    if placement.read:
        return placement.item
    return prompt_state.load(prompt_id, store.settings) if store.settings.prompt_state_table else None


def _cancelled(placement: Placement, prompt_id: str, store: ImageArchive) -> dict[str, Any] | None:
    """The answer for a prompt DELETE /api/task took out of the queue (ComfyUI keeps no
    trace of it), while its prompt-state item lasts; None otherwise. An interrupted running
    prompt is not one: ComfyUI's history reports it (`error`, type `interrupted`)."""
    cancelled_at = (_state_item(placement, prompt_id, store) or {}).get("cancelled_at")
    if not isinstance(cancelled_at, (int, float)):
        return None
    return {"status": "cancelled", "message": "Task was cancelled before it ran",
            "prompt_id": prompt_id, "cancelled_at": cancelled_at}


def images(placement: Placement, store: ImageArchive, prompt_id: str) -> dict[str, Any]:
    client = placement.client

    def ask() -> dict[str, Any]:
        entry = client.history_entry(prompt_id)
        if entry is not None:
            return {"images": _finished_with_archive(client, prompt_id, entry, store)["images"]}
        manifest = store.manifest(prompt_id, required=True)
        return {"images": _images_from_manifest(client, manifest, store) if manifest else []}

    found = _following(placement, store, prompt_id, ask,
                       lambda manifest: {"images": _images_from_manifest(client, manifest, store)})["images"]
    if not found:
        raise NotFoundError(f"No images found for prompt {prompt_id}")
    return {"status": "success", "prompt_id": prompt_id, "images": found}


def history_entry(placement: Placement, store: ImageArchive, prompt_id: str) -> dict[str, Any]:
    def ask() -> dict[str, Any]:
        entry = placement.client.history_entry(prompt_id)
        if entry is not None:
            return {prompt_id: answers.public_entry(entry)}
        manifest = store.manifest(prompt_id, required=True)
        if manifest is None:
            raise NotFoundError(f"No history for prompt {prompt_id}")
        return _archived_entry(prompt_id, manifest)

    return _following(placement, store, prompt_id, ask, lambda manifest: _archived_entry(prompt_id, manifest))


def _archived_entry(prompt_id: str, manifest: dict[str, Any]) -> dict[str, Any]:
    """ComfyUI forgot it (restart, eviction, a backend gone): the archived record, in
    history's shape."""
    return {prompt_id: {
        "outputs": manifest.get("outputs") or {},
        "status": {"status_str": manifest.get("status"), "completed": manifest.get("completed"),
                   "messages": []},
        "archive": manifest,
    }}


@lru_cache(maxsize=1)
def get_archive() -> ImageArchive:
    return ImageArchive(get_settings())
