"""The workflow store: workflow files in S3 under a prefix, in API format or as the editor
saves them (UI format, converted before they run: see workflows.ui).

Each warm container keeps what it has read and revalidates it with a conditional GET
(If-None-Match), so an unchanged workflow costs one small 304 round trip, never a download.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from .. import validation
from ..config import Settings, get_settings
from ..errors import ConfigurationError, NotFoundError, StorageError, WorkflowFormatError
from ..storage import client_error_code, s3_client
from .patcher import Workflow, normalise_workflow

SUFFIX = ".json"


@dataclass(frozen=True)
class StoredWorkflow:
    """A workflow file as read: its parsed JSON and the S3 ETag of that version."""

    name: str
    etag: str
    document: Any


class WorkflowStore:
    def __init__(self, settings: Settings) -> None:
        if not settings.workflow_bucket:
            raise ConfigurationError("WORKFLOW_BUCKET is not configured")
        self.bucket = settings.workflow_bucket
        self.prefix = settings.workflow_prefix
        self._cache: dict[str, StoredWorkflow] = {}
        self.downloads = 0  # full bodies fetched; tests assert the cache works

    def key(self, name: str) -> str:
        return f"{self.prefix}{name}{SUFFIX}"

    def list_names(self) -> list[str]:
        from botocore.exceptions import BotoCoreError, ClientError

        names: list[str] = []
        try:
            pages = s3_client().get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix
            )
            for page in pages:
                for item in page.get("Contents", []):
                    rest = item["Key"][len(self.prefix):]
                    if "/" in rest or not rest.endswith(SUFFIX):
                        continue  # sub-folders and non-JSON files are not workflows
                    name = rest[: -len(SUFFIX)]
                    if validation.is_workflow_name(name):
                        names.append(name)
        except (ClientError, BotoCoreError) as exc:
            raise StorageError("Workflow store is unavailable") from exc
        return sorted(names)

    def load(self, name: str) -> Workflow:
        """The API-format graph of a workflow; a fresh copy is the caller's to patch. A
        UI-format file is a WorkflowFormatError here: ui.load_prompt converts it."""
        return normalise_workflow(self.fetch(name).document)

    def fetch(self, name: str) -> StoredWorkflow:
        """The workflow file's JSON, whatever its format, with the ETag of the version read."""
        from botocore.exceptions import BotoCoreError, ClientError

        validation.workflow_name(name)
        cached = self._cache.get(name)
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": self.key(name)}
        if cached is not None:
            params["IfNoneMatch"] = cached.etag
        try:
            response = s3_client().get_object(**params)
        except ClientError as exc:
            code = client_error_code(exc)
            if code in ("304", "NotModified") and cached is not None:
                return cached
            if code in ("NoSuchKey", "404", "NotFound"):
                self._cache.pop(name, None)
                raise NotFoundError(f"Workflow '{name}' not found") from exc
            raise StorageError("Workflow store is unavailable") from exc
        except BotoCoreError as exc:
            raise StorageError("Workflow store is unavailable") from exc
        with response["Body"] as body:
            raw = body.read()
        self.downloads += 1
        try:
            document = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise WorkflowFormatError(f"Workflow '{name}' is not valid JSON") from exc
        stored = StoredWorkflow(name=name, etag=response["ETag"], document=document)
        self._cache[name] = stored
        return stored


@lru_cache(maxsize=1)
def get_store() -> WorkflowStore:
    """One store (and so one workflow cache) per warm container."""
    return WorkflowStore(get_settings())
