"""UI-format workflows (as the editor saves them) where the service meets them: the body of
POST /api/convert, and stored workflows that POST /api/workflow/{name} and event-driven jobs
run. Both are converted (comfy_core.workflows.convert) with the node definitions of the ComfyUI that
will run the prompt, read from its GET /object_info.

Costs, per warm container: GET /object_info once every OBJECT_INFO_TTL seconds per backend
(about 0.5 MB and 50 ms from a bare ComfyUI; several MB and up to seconds with many custom
nodes), and a conversion once per stored workflow version (its ETag) and set of node
definitions; a conversion itself takes milliseconds.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from ..comfyui.client import ComfyUIClient, get_client
from ..errors import BadRequestError, ComfyUIBadResponseError, WorkflowConversionError
from ..observability import logger
from . import patcher
from .store import WorkflowStore

if TYPE_CHECKING:  # the converter (1,400 lines) is imported when a workflow is converted
    from . import convert

# How long a container trusts a backend's node definitions. Installing a custom node needs a
# ComfyUI restart; within this time, a workflow using it may still be refused as unknown.
OBJECT_INFO_TTL = 300.0
MAX_CACHED_CONVERSIONS = 64  # stored workflows are few; a bound keeps a warm container's memory flat
# POST /api/convert bodies: editor workflows of hundreds of nodes are a few hundred KB, and
# Lambda takes at most 6 MB of request payload.
MAX_UI_WORKFLOW_BYTES = 5 * 1024 * 1024


@dataclass(frozen=True)
class NodeDefinitions:
    info: dict[str, Any]
    digest: str  # identifies this set of definitions in conversion cache keys
    fetched_at: float


class ConversionCache:
    """Node definitions per backend (a short TTL), and conversions of stored workflows by
    (ETag, definitions digest): a new version of the file or of the backend converts anew."""

    def __init__(self, ttl: float = OBJECT_INFO_TTL, size: int = MAX_CACHED_CONVERSIONS) -> None:
        self.ttl = ttl
        self.size = size
        self._definitions: dict[str, NodeDefinitions] = {}
        self._conversions: OrderedDict[tuple[str, str], convert.Conversion] = OrderedDict()
        self.object_info_fetches = 0  # tests assert the caching on these counts
        self.conversions = 0

    def definitions(self, client: ComfyUIClient, *, refresh: bool = False) -> NodeDefinitions:
        """`client`'s backend's node definitions; `refresh` fetches them again now (the
        fleet's router does when a backend seems to lack a node or a model)."""
        cached = self._definitions.get(client.base_url)
        now = time.monotonic()
        if cached is not None and now - cached.fetched_at < self.ttl and not refresh:
            return cached
        info = client.object_info()
        self.object_info_fetches += 1
        if not all(isinstance(definition, dict) for definition in info.values()):
            raise ComfyUIBadResponseError("ComfyUI /object_info answer has an unexpected shape")
        digest = hashlib.sha256(
            json.dumps(info, sort_keys=True, separators=(",", ":"), default=str).encode("utf-8", "surrogatepass")
        ).hexdigest()
        definitions = NodeDefinitions(info, digest, now)
        self._definitions[client.base_url] = definitions
        return definitions

    def convert(self, document: dict[str, Any], definitions: NodeDefinitions) -> convert.Conversion:
        from .convert import convert  # not at import: API-format runs never need it

        self.conversions += 1
        return convert(document, definitions.info)

    def stored(self, name: str, etag: str, document: dict[str, Any], client: ComfyUIClient) -> convert.Conversion:
        definitions = self.definitions(client)
        key = (etag, definitions.digest)
        cached = self._conversions.get(key)
        if cached is not None:
            self._conversions.move_to_end(key)
            return cached
        try:
            conversion = self.convert(document, definitions)
        except WorkflowConversionError as exc:
            exc.extra["workflow"] = name
            raise
        logger.info("Converted a UI-format workflow",
                    extra={"workflow": name, "nodes": len(conversion.prompt), "warnings": conversion.warnings})
        if not conversion.uses_clock:  # a %date:...% prompt is only right for this run
            self._conversions[key] = conversion
            while len(self._conversions) > self.size:
                self._conversions.popitem(last=False)
        return conversion


@lru_cache(maxsize=1)
def conversion_cache() -> ConversionCache:
    """One cache per warm container."""
    return ConversionCache()


def ui_document(body: Any) -> dict[str, Any] | None:
    """The UI-format workflow in a document: itself, or under "workflow" (the editor's PNG
    metadata and the {"workflow": ...} request form); None when there is none."""
    if patcher.is_ui_format(body):
        return body
    if isinstance(body, dict) and patcher.is_ui_format(body.get("workflow")):
        return body["workflow"]
    return None


def convert_request(body: dict[str, Any], client: ComfyUIClient | None = None) -> dict[str, Any]:
    """POST /api/convert: {"prompt", "warnings"} for a UI-format workflow, sent as is or
    as {"workflow": ...}."""
    document = ui_document(body)
    if document is None:
        if body and all(isinstance(node, dict) and "class_type" in node for node in body.values()):
            raise BadRequestError("Body is already an API-format prompt; there is nothing to convert")
        raise BadRequestError(
            'Body must be a UI-format workflow (what the editor\'s Save or Export writes, with '
            '"nodes" and "links"), or {"workflow": <that workflow>}'
        )
    cache = conversion_cache()
    conversion = cache.convert(document, cache.definitions(client or get_client()))
    return {"prompt": conversion.prompt, "warnings": conversion.warnings}


def load_prompt(store: WorkflowStore, client: ComfyUIClient, name: str) -> patcher.Workflow:
    """The API-format prompt of a stored workflow, converted first when it is in UI format
    (with the node definitions of `client`'s backend, the one it will run on). The result is
    shared with later calls: callers patch a copy (patcher.apply_request does)."""
    stored = store.fetch(name)
    document = stored.document
    if isinstance(document, dict) and not patcher.is_ui_format(document) and isinstance(document.get("prompt"), dict):
        return patcher.normalise_workflow(document)  # an API prompt, perhaps beside its UI form
    ui = ui_document(document)
    if ui is None:
        return patcher.normalise_workflow(document)
    return conversion_cache().stored(name, stored.etag, ui, client).prompt
