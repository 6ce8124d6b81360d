"""What of ComfyUI's data may leave the API, and how much of it.

Three rules for everything ComfyUI produced that an answer (or event) passes on:

- **No secrets of ours.** What this service put into a prompt's `extra_data` (the job's
  webhook URL with its token, the job id) is stripped: any client of the API can read any
  prompt's history.
- **No internals of the server.** File-system paths (in exception messages and tracebacks)
  lose their directories and `argv` is dropped from the system stats.
- **Small enough to be sent.** Lambda refuses a response over 6 MB, and API Gateway then
  answers 502 to every client. Error text is cut with a marker (what the client submitted
  and what ComfyUI produced is passed on whole); a history page stops adding entries at
  ANSWER_BUDGET_BYTES and says so.
"""

from __future__ import annotations

import json
import re
from typing import Any

# Where this service records a prompt's origin in extra_data (jobs.EXTRA_DATA_KEY; kept
# here so this module stays below jobs in the import order).
EXTRA_DATA_KEY = "comfy_serverless"

# Exception messages, tracebacks and other error text: a few KB say what went wrong.
MAX_ERROR_CHARS = 4_096
# Any other string of an error message's data: generous, but bounded.
MAX_STRING_CHARS = 65_536
# What one answer may hold: below Lambda's 6 MB (6,291,456 bytes) with room for headers
# and JSON escaping of non-ASCII text.
ANSWER_BUDGET_BYTES = 5_000_000
TRUNCATED_MARKER = "…[truncated {omitted} characters]"

# A run of directories before a file or folder name: POSIX `/a/b/` and Windows `C:\a\b\`.
_POSIX_DIRS = re.compile(r"(?<![\w.:/])/(?:[^\s/'\"(),:;]+/)+")
_WINDOWS_DIRS = re.compile(r"\b[A-Za-z]:\\(?:[^\s\\'\"(),:;]+\\)*")
_POSIX_ROOT_DIR = re.compile(r"(?<![\w.:/])/[^\s/'\"(),:;]+(?=$|[\s'\"(),:;])")


def truncate(text: str, limit: int) -> str:
    """`text` itself when short enough, else its first `limit` characters and a marker."""
    if len(text) <= limit:
        return text
    return text[:limit] + TRUNCATED_MARKER.format(omitted=len(text) - limit)


def scrub_paths(text: str) -> str:
    """Directories removed from file-system paths: `File "/srv/ComfyUI/execution.py"` becomes
    `File "execution.py"`, `output_dir: /srv/ComfyUI/output` becomes `output_dir: <path>`."""
    text = _POSIX_DIRS.sub("", text)
    text = _WINDOWS_DIRS.sub("", text)
    return _POSIX_ROOT_DIR.sub("<path>", text)


def error_text(value: Any) -> Any:
    """Error text fit for a client: scrubbed and cut to MAX_ERROR_CHARS. Non-strings as is."""
    if not isinstance(value, str):
        return value
    return truncate(scrub_paths(value), MAX_ERROR_CHARS)


def _bounded(value: Any) -> Any:
    """A copy of JSON data with every string cut to MAX_STRING_CHARS."""
    if isinstance(value, str):
        return truncate(value, MAX_STRING_CHARS)
    if isinstance(value, dict):
        return {key: _bounded(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_bounded(item) for item in value]
    return value


def _message(message: Any) -> Any:
    """One `[event, data]` of a history entry's status, its error text made safe."""
    if not (isinstance(message, list) and len(message) == 2 and isinstance(message[1], dict)):
        return _bounded(message)
    data = dict(message[1])
    for key in ("exception_message", "error", "message"):
        if key in data:
            data[key] = error_text(data[key])
    if isinstance(data.get("traceback"), list):
        data["traceback"] = [error_text(line) for line in data["traceback"]]
    elif "traceback" in data:
        data["traceback"] = error_text(data["traceback"])
    return [message[0], _bounded(data)]


def public_extra_data(extra: Any) -> Any:
    """extra_data without what this service put there."""
    if not isinstance(extra, dict):
        return extra
    return {key: value for key, value in extra.items() if key != EXTRA_DATA_KEY}


def public_entry(entry: Any, *, include_prompt: bool = True) -> Any:
    """A history entry fit for an answer. Without `include_prompt`, the prompt item keeps its
    shape `[number, prompt_id, graph, extra_data, outputs_to_execute]` with the graph as
    `{}` and extra_data reduced to `client_id`: the graph is what makes entries big."""
    if not isinstance(entry, dict):
        return entry
    result = dict(entry)
    item = entry.get("prompt")
    if isinstance(item, list):
        item = list(item)
        if len(item) >= 4:
            extra = public_extra_data(item[3])
            if not include_prompt and isinstance(extra, dict):
                extra = {key: extra[key] for key in ("client_id",) if key in extra}
            item[3] = extra
        if not include_prompt and len(item) >= 3:
            item[2] = {}
        result["prompt"] = item
    status = entry.get("status")
    if isinstance(status, dict):
        status = dict(status)
        if isinstance(status.get("messages"), list):
            status["messages"] = [_message(message) for message in status["messages"]]
        result["status"] = status
    return result


def size_of(value: Any) -> int:
    """Bytes `value` takes in an answer (UTF-8 JSON, as api.dumps writes it)."""
    return len(json.dumps(value, ensure_ascii=False, default=str).encode("utf-8", "surrogatepass"))


def public_system_stats(stats: dict[str, Any]) -> dict[str, Any]:
    """ComfyUI's /system_stats without its command line (paths, ports, flags)."""
    result = dict(stats)
    system = stats.get("system")
    if isinstance(system, dict):
        result["system"] = {key: value for key, value in system.items() if key != "argv"}
    return result
