"""`sam local invoke` without Docker: run one function's handler with the environment the
template gives it, print its answer as sam does.

    python -m devtools.invoke TaskStatusFunction -e events/task_status.json
    python -m devtools.invoke RunJobFunction -e - < events/run_job_direct.json
    python -m devtools.invoke TaskStatusFunction -e events/task_status.json \\
        --env-vars env.json --parameter-overrides ComfyUIBaseUrl=http://10.0.1.20:8188
    make invoke FN=TaskStatusFunction EVENT=events/task_status.json

sam's flags: `-e/--event` (a file, or `-` for standard input; none: `{}`), `--env-vars` (JSON:
`{"<LogicalId>": {...}, "Parameters": {...}}`, the latter for every function),
`--parameter-overrides` (`Key=Value` or `ParameterKey=Key,ParameterValue=Value`, several),
`-t/--template`. The answer is printed to standard output as one JSON line; the function's
logs go to standard error.

Where it runs: against the running `make dev` stack when its `export AWS_...` lines are in
the environment (AWS_ENDPOINT_URL; ComfyUI from `--parameter-overrides ComfyUIBaseUrl=...`
or COMFYUI_BASE_URL), otherwise against a stack of its own (moto and the ComfyUI stand-in)
started for this one invocation.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from devtools.dev import COMFYUI_PARAMETER, DEFAULT_TEMPLATE, LocalStack
from devtools.local_api import Invoker
from devtools.template import Template


def parse_overrides(values: list[str]) -> dict[str, str]:
    """sam's two spellings: `Key=Value` and `ParameterKey=Key,ParameterValue=Value`."""
    overrides: dict[str, str] = {}
    for value in " ".join(values).split():
        if value.startswith("ParameterKey="):
            fields = dict(part.split("=", 1) for part in value.split(","))
            overrides[fields["ParameterKey"]] = fields.get("ParameterValue", "")
        elif "=" in value:
            key, _, val = value.partition("=")
            overrides[key] = val
        else:
            raise SystemExit(f"invoke: --parameter-overrides takes Key=Value, not {value!r}")
    return overrides


def read_event(path: str | None) -> Any:
    if path is None:
        return {}
    text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    try:
        return json.loads(text) if text.strip() else {}
    except ValueError as exc:
        raise SystemExit(f"invoke: the event is not valid JSON: {exc}") from exc


def env_vars(path: str | None, function_id: str) -> dict[str, str]:
    """sam's --env-vars file: the function's own section over the shared `Parameters`."""
    if not path:
        return {}
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    merged = {**(data.get("Parameters") or {}), **(data.get(function_id) or {})}
    return {str(key): str(value) for key, value in merged.items()}


@contextlib.contextmanager
def invoker_for(template_path: Path, overrides: dict[str, str], extra_env: dict[str, str]) -> Iterator[Invoker]:
    """An Invoker against the running `make dev` stack, or against a stack of our own."""
    comfyui = overrides.get(COMFYUI_PARAMETER) or os.environ.get("COMFYUI_BASE_URL")
    if os.environ.get("AWS_ENDPOINT_URL") and comfyui:
        template = Template.load(template_path, {**overrides, COMFYUI_PARAMETER: comfyui})
        yield Invoker(template, extra_env)
        return
    print("invoke: no running stack in the environment (AWS_ENDPOINT_URL and ComfyUI); "
          "starting moto and the ComfyUI stand-in for this invocation", file=sys.stderr)
    with LocalStack(port=0, comfyui_base_url=comfyui, template_path=template_path,
                    schedule_every=0) as stack:
        assert stack.template is not None
        template = stack.template.with_parameters(overrides) if overrides else stack.template
        yield Invoker(template, extra_env)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.invoke", description=__doc__.splitlines()[0])
    parser.add_argument("function", help="logical id of the function, e.g. TaskStatusFunction")
    parser.add_argument("-e", "--event", help="event file, or - for standard input (default: {})")
    parser.add_argument("-t", "--template", default=str(DEFAULT_TEMPLATE))
    parser.add_argument("-n", "--env-vars", help="JSON file of environment variables, as for sam")
    parser.add_argument("--parameter-overrides", nargs="+", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    event = read_event(args.event)
    overrides = parse_overrides(args.parameter_overrides)
    with invoker_for(Path(args.template), overrides, env_vars(args.env_vars, args.function)) as invoker:
        function = invoker.find(args.function)
        if function is None:
            names = ", ".join(sorted(invoker.functions))
            print(f"invoke: no function {args.function!r} in the template ({names})", file=sys.stderr)
            return 2
        with contextlib.redirect_stdout(sys.stderr):  # the function's logs, as sam shows them
            try:
                answer = invoker.invoke(function.logical_id, event)
            except Exception as exc:  # noqa: BLE001 - reported as sam reports a Lambda error
                answer = {"errorType": type(exc).__name__, "errorMessage": str(exc)}
    print(json.dumps(answer, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
