"""One frozen settings object, read from the environment once per container.

Template Parameter -> env var -> Settings: the README's configuration table lists each.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    return int(raw) if raw else default


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    return float(raw) if raw else default


def _prefix(name: str, default: str) -> str:
    """An S3 key prefix without a leading '/', ending in '/'; unset or blank -> default."""
    prefix = (os.environ.get(name, "").strip() or default).lstrip("/")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    return prefix


def _bool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    return raw in ("1", "true", "yes", "on") if raw else default


def _csv(name: str, default: str) -> tuple[str, ...]:
    raw = os.environ.get(name, "").strip() or default
    return tuple(part.strip() for part in raw.split(",") if part.strip())


# A presigned URL is only valid while the credentials that signed it are: a function signs
# with its role's temporary session credentials, so a URL dies with that session whatever
# its X-Amz-Expires says (S3's own 7-day limit applies to long-term keys only). Lambda does
# not publish how long its role sessions last, so links are kept to an hour, a lifetime
# that is honest in practice; clients ask task_status or image again for a fresh link.
MAX_PRESIGN_EXPIRY = 3600


@dataclass(frozen=True)
class Settings:
    comfyui_base_url: str
    # What clients are shown in image `url`s; empty: no ComfyUI address in any answer.
    comfyui_public_url: str
    workflow_bucket: str
    workflow_prefix: str
    # API Gateway gives up after 29 s and the functions after 28 s. A request may make two
    # ComfyUI calls in a row (task_status, cancel: history then queue), so two full waits,
    # 2 x (3.05 + 10) s, must fit in that budget: the client then gets our 504 envelope,
    # never API Gateway's bare timeout. ComfyUI answers these endpoints in milliseconds.
    connect_timeout: float
    read_timeout: float
    get_retries: int
    max_body_bytes: int
    history_default_items: int
    history_max_items: int
    # Image archiver: where finished prompts' files are copied, and which ComfyUI `type`s.
    image_bucket: str = ""
    image_prefix: str = "images/"
    archive_types: tuple[str, ...] = ("temp", "output")
    archive_max_items: int = 200
    event_bus_name: str = "default"
    # Presigned GET lifetime, at most MAX_PRESIGN_EXPIRY (see there).
    presign_expiry: int = 3600
    # The archiver, asked asynchronously to copy a prompt as soon as the API sees it finished.
    archiver_function_name: str = ""
    # A ComfyUI behind an authenticating reverse proxy: the header to send, and the SSM
    # SecureString holding its value (the value itself never sits in the environment).
    comfyui_auth_header: str = "Authorization"
    comfyui_auth_parameter: str = ""
    # Backpressure: refuse new prompts (429) while ComfyUI holds this many; 0 = no limit
    # (the check costs one GET /prompt per submission).
    max_queue_depth: int = 0
    # "ComfyUI Prompt Submitted" on every submission: one synchronous PutEvents (a few ms).
    announce_submissions: bool = True
    # Event-driven jobs (run_job): the deduplication table and how long a job id is
    # remembered, where rejected jobs go, and the key prefix of job files.
    idempotency_table: str = ""
    idempotency_expiry: int = 86_400
    jobs_dlq_url: str = ""
    job_prefix: str = "jobs/"
    # Webhooks: the signing secret (an SSM SecureString name, never the value), and what a
    # receiver may be. Private addresses and plain http are refused unless switched on.
    webhook_secret_parameter: str = ""
    webhook_allow_private: bool = False
    webhook_allow_http: bool = False
    webhook_max_attempts: int = 3
    webhook_timeout: float = 5.0
    # Input images (img2img, inpainting): where uploads land in the image bucket, the byte
    # and pixel caps of one input, how long an upload URL stays valid, and the hosts an
    # input `url` may name (empty: any public host; an entry may name a private host).
    input_prefix: str = "inputs/"
    max_input_bytes: int = 50 * 1024 * 1024
    max_input_pixels: int = 8192 * 8192
    upload_expiry: int = 900
    input_url_allowlist: tuple[str, ...] = ()
    input_fetch_timeout: float = 20.0
    # Live watcher (issue 12): the prompt-state table (progress, who announced a finished
    # prompt, the watcher's lease; the fleet records each prompt's backend there too), how
    # long its items live, and the client id every prompt is submitted under so that
    # ComfyUI routes its messages to the watcher's socket. Empty table: no progress and no
    # announcement guard (local runs without it behave as before); empty client id: prompts
    # keep their own client id and only the schedule notices them.
    prompt_state_table: str = ""
    prompt_state_expiry: int = 7 * 86_400
    watcher_client_id: str = ""
    # Seconds between the watcher's scheduled starts: a running watcher hands over just
    # after a tick, so the next one takes the socket without a gap.
    watcher_tick_seconds: int = 60
    # A fleet (issue 13): COMFYUI_BASE_URL may list several backends ("[name=]url,..."); an
    # SSM parameter, when named, is the registry operators edit without a redeploy (read at
    # most every `backends_cache_seconds`). A backend unreachable (or removed) for longer
    # than `backend_gone_grace` has its unfinished prompts reported as `error`.
    comfyui_backends_parameter: str = ""
    backends_cache_seconds: float = 30.0
    backend_gone_grace: int = 600

    @classmethod
    def from_env(cls) -> "Settings":
        # One URL, or a fleet's list ("[name=]url,..."): fleet.backends parses it.
        base = os.environ.get("COMFYUI_BASE_URL", "http://127.0.0.1:8188").strip().rstrip("/")
        # No default from the base URL: that is usually a private address clients must
        # not be shown (and cannot reach). Without it, image `url`s are null.
        public = os.environ.get("COMFYUI_PUBLIC_URL", "").strip().rstrip("/")
        return cls(
            comfyui_base_url=base,
            comfyui_public_url=public,
            workflow_bucket=os.environ.get("WORKFLOW_BUCKET", "").strip(),
            workflow_prefix=_prefix("WORKFLOW_PREFIX", "workflows/"),
            connect_timeout=_float("COMFYUI_CONNECT_TIMEOUT", 3.05),
            read_timeout=_float("COMFYUI_READ_TIMEOUT", 10.0),
            get_retries=_int("COMFYUI_GET_RETRIES", 2),
            max_body_bytes=_int("MAX_BODY_BYTES", 1_048_576),
            # A page of history must fit Lambda's 6 MB answer: entries run from a few KB to
            # megabytes (text outputs), so pages are small; the size budget does the rest.
            history_default_items=_int("HISTORY_DEFAULT_MAX_ITEMS", 20),
            history_max_items=_int("HISTORY_MAX_ITEMS_LIMIT", 100),
            image_bucket=os.environ.get("IMAGE_BUCKET", "").strip(),
            image_prefix=_prefix("IMAGE_PREFIX", "images/"),
            archive_types=_csv("ARCHIVE_TYPES", "temp,output"),
            archive_max_items=max(1, _int("ARCHIVE_MAX_ITEMS", 200)),
            event_bus_name=os.environ.get("EVENT_BUS_NAME", "").strip() or "default",
            presign_expiry=min(max(_int("PRESIGN_EXPIRY_SECONDS", 3600), 60), MAX_PRESIGN_EXPIRY),
            archiver_function_name=os.environ.get("ARCHIVER_FUNCTION_NAME", "").strip(),
            comfyui_auth_header=os.environ.get("COMFYUI_AUTH_HEADER", "").strip() or "Authorization",
            comfyui_auth_parameter=os.environ.get("COMFYUI_AUTH_PARAMETER", "").strip(),
            max_queue_depth=max(0, _int("MAX_QUEUE_DEPTH", 0)),
            announce_submissions=_bool("ANNOUNCE_SUBMISSIONS", True),
            idempotency_table=os.environ.get("IDEMPOTENCY_TABLE", "").strip(),
            idempotency_expiry=max(60, _int("IDEMPOTENCY_EXPIRY_SECONDS", 86_400)),
            jobs_dlq_url=os.environ.get("JOBS_DLQ_URL", "").strip(),
            job_prefix=_prefix("JOB_PREFIX", "jobs/"),
            webhook_secret_parameter=os.environ.get("WEBHOOK_SECRET_PARAMETER", "").strip(),
            webhook_allow_private=_bool("WEBHOOK_ALLOW_PRIVATE"),
            webhook_allow_http=_bool("WEBHOOK_ALLOW_HTTP"),
            webhook_max_attempts=min(max(_int("WEBHOOK_MAX_ATTEMPTS", 3), 1), 10),
            webhook_timeout=_float("WEBHOOK_TIMEOUT", 5.0),
            input_prefix=_prefix("INPUT_PREFIX", "inputs/"),
            max_input_bytes=max(1, _int("MAX_INPUT_BYTES", 50 * 1024 * 1024)),
            max_input_pixels=max(1, _int("MAX_INPUT_PIXELS", 8192 * 8192)),
            upload_expiry=min(max(_int("UPLOAD_EXPIRY_SECONDS", 900), 60), MAX_PRESIGN_EXPIRY),
            input_url_allowlist=_allowlist("INPUT_URL_ALLOWLIST"),
            input_fetch_timeout=max(1.0, _float("INPUT_FETCH_TIMEOUT", 20.0)),
            prompt_state_table=os.environ.get("PROMPT_STATE_TABLE", "").strip(),
            prompt_state_expiry=max(3600, _int("PROMPT_STATE_EXPIRY_SECONDS", 7 * 86_400)),
            watcher_client_id=os.environ.get("WATCHER_CLIENT_ID", "").strip()[:128],
            watcher_tick_seconds=min(max(_int("WATCHER_TICK_SECONDS", 60), 10), 3600),
            comfyui_backends_parameter=os.environ.get("COMFYUI_BACKENDS_PARAMETER", "").strip(),
            backends_cache_seconds=min(max(_float("BACKENDS_CACHE_SECONDS", 30.0), 0.0), 3600.0),
            backend_gone_grace=max(0, _int("BACKEND_GONE_GRACE_SECONDS", 600)),
        )


def _allowlist(name: str) -> tuple[str, ...]:
    entries = _csv(name, "")
    if not entries:
        return ()
    from .netguard import parse_allowlist  # checks each entry; a malformed one is refused

    return parse_allowlist(entries)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The container's settings; tests call `get_settings.cache_clear()` after changing env."""
    return Settings.from_env()
