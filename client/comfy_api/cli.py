"""`comfy-api`: the API from a terminal or a script.

Results go to stdout (with `--json`, exactly one JSON document); progress, notes and errors
to stderr. Exit codes: 0 done, 1 an error (one line on stderr) or a prompt that did not
complete, 2 a usage error, 130 interrupted (a prompt keeps running).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.table import Column, Table

from . import __version__
from .body import BodyError, build_body, parse_assignment
from .client import DEFAULT_POLL_SECONDS, ComfyAPI, new_idempotency_key
from .config import Config, masked, resolve
from .download import download_outputs
from .errors import ComfyAPIError, UnprocessableError
from .inputs import InputFile
from .models import TaskStatus
from .progress import describe, display_for

PROG = "comfy-api"
EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
# The API's own pattern for the header (openapi.yaml).
IDEMPOTENCY_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")


class UsageError(Exception):
    """Arguments argparse accepted but that make no request (exit 2)."""


@dataclass
class Context:
    args: argparse.Namespace
    out: Console
    err: Console
    live: bool | None
    environ: Mapping[str, str]
    api_factory: Callable[..., ComfyAPI]
    config: Config | None = None
    _api: ComfyAPI | None = field(default=None, repr=False)

    @property
    def json(self) -> bool:
        return bool(self.args.json)

    def api(self) -> ComfyAPI:
        if self._api is None:
            args = self.args
            self.config = resolve(args.api_url, args.api_key, args.stack, region=args.region,
                                  profile=args.profile, environ=self.environ)
            if self.config.unused_stack:
                self.note(f"--stack {self.config.unused_stack} not used: {self.config.url_source} gives the URL")
            self._api = self.api_factory(self.config.api_url, self.config.api_key)
        return self._api

    # -- output ------------------------------------------------------------------------------
    def emit(self, document: Any) -> None:
        """The one JSON document of a --json run."""
        self.out.out(json.dumps(document, indent=2, ensure_ascii=False), highlight=False)

    def say(self, text: str) -> None:
        self.out.print(text, markup=False, highlight=False, soft_wrap=True)

    def note(self, text: str) -> None:
        self.err.print(f"{PROG}: {text}", markup=False, highlight=False, soft_wrap=True)

    def error(self, text: str) -> None:
        self.note("error: " + " ".join(text.split()))

    def again(self, *words: str) -> str:
        """A follow-up command line that reaches the same deployment (never with the key)."""
        config, flags = self.config, []
        if config is not None and config.url_source.startswith("stack "):
            flags += ["--stack", self.args.stack]
        elif config is not None and config.url_source == "--api-url":
            flags += ["--api-url", config.api_url]
        return shlex.join([PROG, *flags, *words])


# -- commands ---------------------------------------------------------------------------------
def cmd_workflows(ctx: Context) -> int:
    names = ctx.api().workflows()
    if ctx.json:
        ctx.emit({"workflows": names})
    else:
        for name in names:
            ctx.say(name)
    return EXIT_OK


def cmd_run(ctx: Context) -> int:
    args = ctx.args
    key = args.idempotency_key or new_idempotency_key()
    if not IDEMPOTENCY_KEY.fullmatch(key):
        raise UsageError("--idempotency-key: 1-128 of A-Z a-z 0-9 . _ : - starting with a letter or digit")
    try:
        assignments = [parse_assignment(text) for text in args.set or []]
        build_body(args.prompt, assignments)  # a bad combination fails before anything is sent
    except BodyError as exc:
        raise UsageError(str(exc)) from None
    files = {name: InputFile.open(path) for name, path in (("image", args.image), ("mask", args.mask)) if path}
    api = ctx.api()
    inputs = {name: {"upload_id": api.upload(item.path)} for name, item in files.items()}
    body = build_body(args.prompt, assignments, inputs)
    try:
        submitted = api.run(args.workflow, body, idempotency_key=key)
    except UnprocessableError as exc:
        if inputs and "idempotency key" in exc.message.lower():
            raise UnprocessableError(
                f"{exc.message} (--image/--mask are uploaded again on every run, under a new upload id, "
                "so a repeated --idempotency-key never matches the first request: use a new key)",
                status_code=exc.status_code, details=exc.details) from exc
        raise
    except KeyboardInterrupt:
        ctx.note(f"interrupted while submitting; to make sure it runs once, repeat the command with "
                 f"--idempotency-key {key}")
        return EXIT_INTERRUPTED
    document: dict[str, Any] = {"prompt_id": submitted.prompt_id, "workflow": args.workflow,
                                "idempotency_key": key, "submitted": submitted.raw}
    if submitted.node_errors:
        ctx.note(f"ComfyUI dropped some outputs (node_errors): {json.dumps(submitted.node_errors)[:500]}")
    if not (args.wait or args.out):
        if ctx.json:
            ctx.emit(document)
        else:
            ctx.say(submitted.prompt_id)
        return EXIT_OK
    if not ctx.json:
        where = f" on {submitted.backend}" if submitted.backend not in (None, "default") else ""
        ctx.note(f"submitted {submitted.prompt_id} ({args.workflow}){where}")
    return follow(ctx, submitted.prompt_id, args.out, document)


def cmd_status(ctx: Context) -> int:
    args = ctx.args
    if args.wait or args.out:
        return follow(ctx, args.prompt_id, args.out, {"prompt_id": args.prompt_id})
    current = ctx.api().status(args.prompt_id)
    if ctx.json:
        ctx.emit(current.raw)
        return EXIT_OK
    state, detail = describe(current)
    if current.status == "running" and current.progress and current.progress.fraction is not None:
        detail = f"{current.progress.fraction:.0%} · {detail}" if detail else f"{current.progress.fraction:.0%}"
        if current.progress.eta_seconds is not None:
            detail += f" · ETA {round(current.progress.eta_seconds)} s"
    ctx.say(f"{current.prompt_id}  {state}" + (f"  {detail}" if detail else ""))
    show_outputs(ctx, current)
    return EXIT_OK


def cmd_cancel(ctx: Context) -> int:
    answer = ctx.api().cancel(ctx.args.prompt_id)
    if ctx.json:
        ctx.emit(answer.raw)
    else:
        was = f" (was {answer.was})" if answer.was else ""
        ctx.say(f"{answer.prompt_id}  {answer.status}{was}: {answer.message}")
    return EXIT_OK


def cmd_history(ctx: Context) -> int:
    page = ctx.api().history(ctx.args.max_items, ctx.args.offset)
    if page.truncated:
        more = f"; go on with --offset {page.next_offset}" if page.next_offset is not None else ""
        ctx.note(f"some entries were left out to keep the answer small{more}")
    if ctx.json:
        ctx.emit(page.raw)
        return EXIT_OK
    if not page.items:
        ctx.say("no history")
        return EXIT_OK
    table = Table(Column("prompt id", no_wrap=True, min_width=_widest(page.items)), "status", "outputs",
                  Column("started", no_wrap=True), "took", box=None, pad_edge=False)
    for item in page.items:
        took = f"{item.ended_at - item.started_at:.1f} s" if item.started_at and item.ended_at else ""
        table.add_row(item.prompt_id, item.status or "", str(item.outputs), _when(item.started_at), took)
    ctx.out.print(table)
    return EXIT_OK


def cmd_queue(ctx: Context) -> int:
    queue = ctx.api().queue()
    if ctx.json:
        ctx.emit(queue.raw)
        return EXIT_OK
    if not queue.running and not queue.pending:
        ctx.say("queue empty")
        return EXIT_OK
    fleet = any(item.backend for item in (*queue.running, *queue.pending))
    table = Table("position", Column("prompt id", no_wrap=True, min_width=_widest((*queue.running, *queue.pending))),
                  "state", *(["backend"] if fleet else []), box=None, pad_edge=False)
    for item in queue.running:
        table.add_row("-", item.prompt_id, "running", *([item.backend or ""] if fleet else []))
    for item in queue.pending:
        table.add_row(str(item.position or ""), item.prompt_id, "pending", *([item.backend or ""] if fleet else []))
    ctx.out.print(table)
    return EXIT_OK


def cmd_config(ctx: Context) -> int:
    ctx.api()
    config = ctx.config
    assert config is not None
    if ctx.json:
        ctx.emit({"api_url": config.api_url, "api_url_source": config.url_source,
                  "api_key": masked(config.api_key) if config.api_key else None,
                  "api_key_source": config.key_source})
    else:
        ctx.say(f"api_url  {config.api_url}  ({config.url_source})")
        ctx.say(f"api_key  {masked(config.api_key)}" + (f"  ({config.key_source})" if config.key_source else ""))
    return EXIT_OK


# -- following a prompt -----------------------------------------------------------------------
def follow(ctx: Context, prompt_id: str, out_dir: str | None, document: dict[str, Any]) -> int:
    """--wait (and --out): show progress until the prompt finishes, then download."""
    api = ctx.api()
    display = display_for(ctx.err, ctx.live)
    last: TaskStatus | None = None

    def seen(status: TaskStatus) -> None:
        nonlocal last
        last = status
        display.update(status)

    try:
        with display:
            final = api.wait(prompt_id, on_update=seen, poll_seconds=ctx.args.poll)
            report = download_outputs(api, final, out_dir, on_start=display.download_started,
                                      on_bytes=display.downloaded) if out_dir and final.status == "completed" else None
    except KeyboardInterrupt:
        ctx.note(_interrupted(ctx, prompt_id, last, out_dir))
        return EXIT_INTERRUPTED
    document["status"] = final.raw
    if report is not None:
        document["files"] = [_saved_json(saved) for saved in report.saved]
        document["skipped"] = [{"node_id": s.image.node_id, "filename": s.image.filename, "reason": s.reason}
                               for s in report.skipped]
    if ctx.json:
        ctx.emit(document)
    elif report is not None:
        for saved in report.saved:
            ctx.say(f"saved {saved.path}  ({saved.size:,} bytes)")
    else:
        show_outputs(ctx, final)
    if final.status != "completed":
        state, detail = describe(final)
        ctx.error(f"prompt {prompt_id} {state}" + (f": {detail}" if detail else ""))
        return EXIT_ERROR
    if report is not None and report.skipped:
        for skipped in report.skipped:
            ctx.note(f"not downloaded: {skipped.image.path} (node {skipped.image.node_id}): {skipped.reason}")
        ctx.error(f"{len(report.skipped)} of {len(final.images)} outputs not downloaded")
        return EXIT_ERROR
    return EXIT_OK


def _interrupted(ctx: Context, prompt_id: str, last: TaskStatus | None, out_dir: str | None) -> str:
    out = ["--out", out_dir] if out_dir else []
    if last is not None and last.finished:
        if out_dir:
            return f"prompt {prompt_id} has finished; download its outputs with: " + ctx.again(
                "status", prompt_id, *out)
        return f"prompt {prompt_id} has finished; see it with: " + ctx.again("status", prompt_id)
    state = "still queued" if last is not None and last.status == "pending" else "still running"
    return f"prompt {prompt_id} is {state}; follow it with: " + ctx.again("status", prompt_id, "--wait", *out)


def show_outputs(ctx: Context, status: TaskStatus) -> None:
    """One line per output (the links are long and expire: --json has them, --out uses them)."""
    for image in status.images:
        state = "lost" if image.lost else "archived" if image.download_url else "not archived yet"
        ctx.say(f"  node {image.node_id}  {image.path}  ({state})")
    if any(image.download_url for image in status.images):
        ctx.note("download with: " + ctx.again("status", status.prompt_id, "--out", "DIR"))


def _saved_json(saved: Any) -> dict[str, Any]:
    image = saved.image
    return {"path": str(saved.path), "size": saved.size, "node_id": image.node_id, "filename": image.filename,
            "subfolder": image.subfolder, "type": image.type, "s3_key": image.s3_key}


def _widest(items: Sequence[Any]) -> int:
    """Prompt ids are never cut: a table narrower than them wraps the other columns."""
    return max((len(item.prompt_id) for item in items), default=9)


def _when(epoch: float | None) -> str:
    return datetime.fromtimestamp(epoch).strftime("%m-%d %H:%M:%S") if epoch else ""


# -- arguments --------------------------------------------------------------------------------
def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


COMMON_DEFAULTS: dict[str, Any] = {"api_url": None, "api_key": None, "stack": None, "region": None,
                                   "profile": None, "json": False}


def _common() -> argparse.ArgumentParser:
    """Options every command takes, before or after its name. SUPPRESS keeps a subcommand's
    unset copy from overwriting what was given before the command name."""
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("connection and output")
    group.add_argument("--api-url", metavar="URL", default=argparse.SUPPRESS,
                       help="the API's base URL (else COMFY_API_URL, else --stack)")
    group.add_argument("--api-key", metavar="KEY", default=argparse.SUPPRESS,
                       help="the x-api-key value (else COMFY_API_KEY, else --stack)")
    group.add_argument("--stack", metavar="NAME", default=argparse.SUPPRESS,
                       help="read URL and key from this CloudFormation stack (AWS credentials needed)")
    group.add_argument("--region", default=argparse.SUPPRESS, help="AWS region of --stack")
    group.add_argument("--profile", default=argparse.SUPPRESS, help="AWS profile for --stack")
    group.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                       help="print one JSON document on stdout")
    return common


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = argparse.ArgumentParser(
        prog=PROG, parents=[common],
        description="Run ComfyUI workflows through comfy-serverless-api: submit, follow, download.",
        epilog="Exit codes: 0 done, 1 error, 2 usage, 130 interrupted (the prompt keeps running).")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, handler: Callable[[Context], int], help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, parents=[common], help=help_text, description=help_text)
        sub.set_defaults(handler=handler)
        return sub

    command("workflows", cmd_workflows, "list the workflows")

    run = command("run", cmd_run, "run a workflow")
    run.add_argument("workflow", metavar="NAME")
    run.add_argument("--prompt", metavar="TEXT", help="the prompt (to the text node wired to the sampler)")
    run.add_argument("--set", metavar="NODE.INPUT=VALUE", action="append",
                     help="set a node input (VALUE is JSON if it parses, else text), or NAME=VALUE for a "
                          "simple parameter (seed, steps, cfg, ...); repeatable")
    run.add_argument("--image", metavar="FILE", help="input image (the workflow's LoadImage), uploaded first")
    run.add_argument("--mask", metavar="FILE", help="mask image (the workflow's LoadImageMask), uploaded first")
    _follow_options(run)
    run.add_argument("--idempotency-key", metavar="KEY",
                     help="reuse a key to get the first run's prompt instead of a second run (default: a new UUID)")

    status = command("status", cmd_status, "a prompt's status (and, with --wait/--out, follow and download)")
    status.add_argument("prompt_id", metavar="ID")
    _follow_options(status)

    cancel = command("cancel", cmd_cancel, "remove a queued prompt, or interrupt the running one")
    cancel.add_argument("prompt_id", metavar="ID")

    history = command("history", cmd_history, "ComfyUI's recent prompts")
    history.add_argument("--max-items", type=_count, metavar="N", help="how many (API default 20, at most 100)")
    history.add_argument("--offset", type=_count, metavar="K", help="from the K-th oldest instead of the newest")

    command("queue", cmd_queue, "running and pending prompts")
    command("config", cmd_config, "which API URL and key would be used, and where they come from")
    return parser


def _follow_options(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--wait", action="store_true", help="follow the prompt until it finishes")
    sub.add_argument("--out", metavar="DIR",
                     help="download every output into DIR as <prompt_id>_<node>_<filename> (implies --wait)")
    sub.add_argument("--poll", type=_positive, default=DEFAULT_POLL_SECONDS, metavar="SECONDS",
                     help=f"seconds between status checks while waiting (default {DEFAULT_POLL_SECONDS:g})")


def main(
    argv: Sequence[str] | None = None,
    *,
    stdout: Console | None = None,
    stderr: Console | None = None,
    live: bool | None = None,
    environ: Mapping[str, str] | None = None,
    api_factory: Callable[..., ComfyAPI] = ComfyAPI,
) -> int:
    """The command; returns its exit code. The keywords let a caller (a test, the docs'
    recording) give its own consoles, environment and client."""
    args = build_parser().parse_args(argv)  # exits 2 on a usage error
    for name, default in COMMON_DEFAULTS.items():
        if not hasattr(args, name):
            setattr(args, name, default)
    ctx = Context(args, stdout or Console(), stderr or Console(stderr=True), live,
                  os.environ if environ is None else environ, api_factory)
    handler: Callable[[Context], int] = args.handler
    try:
        return handler(ctx)
    except UsageError as exc:
        ctx.note(f"{args.command}: error: {exc}")
        return EXIT_USAGE
    except ComfyAPIError as exc:
        ctx.error(str(exc))
        return EXIT_ERROR
    except OSError as exc:  # writing into --out, mostly
        ctx.error(f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc))
        return EXIT_ERROR
    except KeyboardInterrupt:
        ctx.note("interrupted")
        return EXIT_INTERRUPTED


def entry_point() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry_point()
