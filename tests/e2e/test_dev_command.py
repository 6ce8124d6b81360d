"""`make dev`'s process as a user runs it: it serves, Ctrl-C stops everything it started,
a second start on the same port works at once, and it prints one line per request (the
functions' own JSON logs with VERBOSE=1)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import requests

from tests.support.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


class DevProcess:
    """`python -m devtools.dev` in its own process, its output collected line by line."""

    def __init__(self, port: int, **more: str) -> None:
        env = {key: value for key, value in os.environ.items()
               if not key.startswith(("AWS_ENDPOINT_URL", "COMFYUI_", "LOCAL_API_KEY", "VERBOSE"))}
        env.update(PORT=str(port), STANDIN_DELAY="0.1", ARCHIVE_EVERY="0", PYTHONUNBUFFERED="1", **more)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "devtools.dev"], cwd=ROOT, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:  # type: ignore[union-attr]
            self.lines.append(line.rstrip("\n"))

    def banner(self, prefix: str) -> str:
        return next(line for line in self.lines if line.startswith(prefix))

    def ready(self) -> bool:
        return any("Ctrl-C to stop" in line for line in self.lines)


def test_ctrl_c_stops_everything_and_a_second_start_is_clean() -> None:
    port = free_port()
    for attempt in (1, 2):
        dev = DevProcess(port)
        try:
            wait_for(dev.ready, 60, what=f"dev start #{attempt}")
            api = dev.banner("API:").split()[1]
            moto = dev.banner("Moto:").split()[1]
            standin = dev.banner("ComfyUI:").split()[-3]  # "stand-in at <url> (delay ...)"
            assert api == f"http://127.0.0.1:{port}"
            assert "curl" in dev.banner("Try:")
            assert "empty_save" in requests.get(f"{api}/api/workflows", timeout=10).json()["workflows"]
            dev.process.send_signal(signal.SIGINT)
            assert dev.process.wait(timeout=30) == 0
        finally:
            if dev.process.poll() is None:
                dev.process.kill()
        # Nothing it started keeps running: the API, moto and the stand-in ports are closed.
        for url in (api, moto, standin):
            assert not port_open(int(url.rsplit(":", 1)[1].split("/")[0])), url


def test_the_printed_exports_reach_the_stack_from_another_terminal() -> None:
    """The `export ...` lines make boto3 (and so the AWS CLI and `make invoke`) work against
    the running stack: run them in a clean shell and list the buckets, invoke a function."""
    port = free_port()
    dev = DevProcess(port)
    try:
        wait_for(dev.ready, 60, what="dev start")
        exports = [line.strip() for line in dev.lines if line.strip().startswith("export ")]
        names = {line.split()[1].split("=")[0] for line in exports}
        assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL",
                "AWS_ENDPOINT_URL_LAMBDA", "COMFYUI_BASE_URL"} <= names
        script = "\n".join([
            *exports,
            f'"{sys.executable}" -c "import boto3; print(sorted(b[\'Name\'] for b in '
            f'boto3.client(\'s3\').list_buckets()[\'Buckets\']))"',
            f'"{sys.executable}" -m devtools.invoke ListWorkflowsFunction -e events/list_workflows.json',
        ])
        clean = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "COMFYUI_"))}
        done = subprocess.run(["bash", "-c", script], cwd=ROOT, env=clean, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        buckets, answer = done.stdout.strip().splitlines()[-2:]
        assert "workflowbucket" in buckets.lower()
        assert "starting moto" not in done.stderr  # it used the running stack, not one of its own
        assert "empty_save" in answer
    finally:
        dev.process.send_signal(signal.SIGINT)
        dev.process.wait(timeout=30)


def test_a_port_in_use_is_named_with_the_variable_that_changes_it() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        dev = DevProcess(port)
        assert dev.process.wait(timeout=60) == 1
    wait_for(lambda: any("already in use" in line for line in dev.lines), 5, what="the message")
    message = next(line for line in dev.lines if "already in use" in line)
    assert f"port {port} (PORT)" in message and f"PORT={port + 1} make dev" in message


def json_lines(lines: list[str]) -> list[dict]:
    found = []
    for line in lines:
        try:
            found.append(json.loads(line))
        except ValueError:
            continue
    return [item for item in found if isinstance(item, dict)]


def requests_and_their_lines(verbose: str) -> tuple[list[str], list[str]]:
    """Start `make dev` (VERBOSE as given), make three requests: (the per-request lines,
    all its output until the last of them was answered)."""
    port = free_port()
    dev = DevProcess(port, VERBOSE=verbose, WATCHER="0")
    try:
        wait_for(dev.ready, 60, what="dev start")
        api = f"http://127.0.0.1:{port}"
        requests.get(f"{api}/api/workflows", timeout=10).raise_for_status()
        requests.post(f"{api}/api/workflow/empty_save", json={}, timeout=10).raise_for_status()
        requests.get(f"{api}/api/no-such-route", timeout=10)
        wait_for(lambda: any("/api/no-such-route" in line for line in dev.lines), 10, what="the last line")
        output = list(dev.lines)
    finally:
        dev.process.send_signal(signal.SIGINT)
        dev.process.wait(timeout=30)
    return [line for line in output if " -> " in line and "(" in line and " ms)" in line], output


def test_by_default_one_line_per_request_and_no_function_json() -> None:
    lines, output = requests_and_their_lines("")
    assert [line.split(" local_api INFO ")[1].rsplit(" (", 1)[0] for line in lines] == [
        "GET /api/workflows -> ListWorkflowsFunction 200",
        "POST /api/workflow/empty_save -> RunWorkflowFunction 200",
        "GET /api/no-such-route -> - 404",
    ]
    assert all(line.endswith(" ms)") for line in lines)
    assert json_lines(output) == []  # no Powertools log lines, no metric blobs


def test_verbose_adds_the_functions_json_logs_and_metrics() -> None:
    lines, output = requests_and_their_lines("1")
    assert len(lines) == 3
    logged = json_lines(output)
    assert any(item.get("service") == "comfy-serverless-api" for item in logged)
    assert any("PromptSubmitted" in item for item in logged)  # the run's metric, as EMF


def backend_lines(dev: DevProcess) -> dict[str, str]:
    """The banner's `  <name> at <url>` lines under ComfyUI: name -> URL."""
    start = dev.lines.index(dev.banner("ComfyUI:"))
    found = {}
    for line in dev.lines[start + 1:]:
        parts = line.split()
        if len(parts) != 3 or parts[1] != "at":
            break
        found[parts[0]] = parts[2]
    return found


def exported(dev: DevProcess, name: str) -> str:
    line = next(line.strip() for line in dev.lines if line.strip().startswith(f"export {name}="))
    return line.split("=", 1)[1]


def test_comfyui_standins_starts_a_fleet_shown_in_the_banner_and_stopped_with_it() -> None:
    """COMFYUI_STANDINS=2: two stand-ins named standin-1 and standin-2, both in the banner and
    in the exported COMFYUI_BASE_URL; prompts go to both; Ctrl-C stops both."""
    port = free_port()
    dev = DevProcess(port, COMFYUI_STANDINS="2", WATCHER="0")
    try:
        wait_for(dev.ready, 60, what="dev start")
        assert "2 stand-ins" in dev.banner("ComfyUI:")
        backends = backend_lines(dev)
        assert list(backends) == ["standin-1", "standin-2"]
        assert len(set(backends.values())) == 2
        assert exported(dev, "COMFYUI_BASE_URL") == ",".join(f"{name}={url}" for name, url in backends.items())
        for url in backends.values():  # each one a ComfyUI of its own
            assert requests.get(f"{url}/system_stats", timeout=10).status_code == 200
        api = f"http://127.0.0.1:{port}"
        # The router sends each prompt to the least loaded: an idle fleet gets them in turn
        # (its own submissions count until the next load answer, 2 s later).
        got = {requests.post(f"{api}/api/workflow/empty_save", json={}, timeout=10).json()["backend"]
               for _ in range(6)}
        assert got == set(backends)
        dev.process.send_signal(signal.SIGINT)
        assert dev.process.wait(timeout=30) == 0
    finally:
        if dev.process.poll() is None:
            dev.process.kill()
    for url in backends.values():
        assert not port_open(int(url.rsplit(":", 1)[1]))


def test_several_real_urls_start_no_standin_and_are_named_as_the_functions_name_them(tmp_path: Path) -> None:
    """COMFYUI_BASE_URL with two URLs: nothing is started, the banner lists both under the
    names the functions give unnamed backends (host-port), which is what answers carry."""
    from devtools.comfyui_standin import ComfyUIStandIn

    with ComfyUIStandIn(tmp_path / "a", port=0) as first, ComfyUIStandIn(tmp_path / "b", port=0) as second:
        urls = [first.base_url, second.base_url]
        port = free_port()
        dev = DevProcess(port, COMFYUI_BASE_URL=",".join(urls), WATCHER="0")
        try:
            wait_for(dev.ready, 60, what="dev start")
            assert "2 backends (COMFYUI_BASE_URL)" in dev.banner("ComfyUI:")
            backends = backend_lines(dev)
            assert list(backends.values()) == urls
            assert list(backends) == [f"127-0-0-1-{url.rsplit(':', 1)[1]}" for url in urls]
            assert exported(dev, "COMFYUI_BASE_URL") == ",".join(urls)
            api = f"http://127.0.0.1:{port}"
            got = {requests.post(f"{api}/api/workflow/empty_save", json={}, timeout=10).json()["backend"]
                   for _ in range(6)}
            assert got == set(backends)
        finally:
            dev.process.send_signal(signal.SIGINT)
            dev.process.wait(timeout=30)
        # The developer's ComfyUIs are theirs: stopping `make dev` leaves them running.
        assert all(requests.get(f"{url}/system_stats", timeout=10).status_code == 200 for url in urls)
