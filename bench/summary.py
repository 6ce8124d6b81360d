"""The top of docs/benchmarks.md: every target of this run, and for each miss why and what fixes it.

The explanations are rules over the measured figures, so they follow the code: when a
cause is fixed, its rule stops firing and the miss (if any remains) is reported bare.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bench.common import Target

Finding = Callable[[dict[str, Any]], str | None]


# -- causes ----------------------------------------------------------------------------------------
def _cold_rows(results: dict[str, Any], layout: str) -> dict[str, dict[str, Any]]:
    cold = results.get("cold") or {}
    return {row["key"]: row for row in cold.get("subjects", []) if row["layout"] == layout}


def boto3_in_plain_function(results: dict[str, Any]) -> str | None:
    loaded = [key for key, row in _cold_rows(results, "source").items()
              if not row["uses_s3"] and True in row["boto3"]]
    if not loaded:
        return None
    names = ", ".join(f"`{k}`" for k in loaded)
    return (f"**{names} import boto3 without needing S3.** Find the import with "
            f"`PYTHONPATH=.:layers/comfy_core python -X importtime -c 'import functions.{loaded[0]}.app' "
            "2>&1 | grep -B5 boto3` (and the first event's path) and move it inside the function that "
            "uses it, as comfy_core/storage.py does.")


REQUESTS_STACK = ("requests", "charset_normalizer", "idna", "http", "certifi")


def s3_function_over_limit(results: dict[str, Any]) -> str | None:
    """An S3 function's cold start beyond 1.3× baseline 2: what it pays on top, and fixes."""
    breakdown = (results.get("cold") or {}).get("breakdown", {})
    lines = []
    for key, row in _cold_rows(results, "source").items():
        if row["met"] or not row["uses_s3"] or key not in breakdown:
            continue
        b = breakdown[key]
        extra_calls = b["marks"][1:] if b["marks"][:1] and b["marks"][0][0] == "s3 client" else b["marks"]
        fixes = _s3_fixes(b)
        lines.append(
            f"**Cold init of `{key}`: {row['spawn']['median']:.0f} ms, over 1.3× baseline 2 "
            f"({row['limit']:.0f} ms) by {row['spawn']['median'] - row['limit']:.0f} ms.** On top of "
            f"baseline 2 it loads {b['extra_imports_ms']:.0f} ms of modules ("
            + ", ".join(f"{top} {ms:.1f}" for top, ms in b["extra_imports"][:5])
            + ") and its first event adds "
            + (", ".join(f"{name} {ms:.1f} ms" for name, ms in extra_calls) or "no AWS call")
            + " besides the S3 client baseline 2 also creates, plus any ComfyUI request. "
            + (" ".join(fixes) if fixes else "No single change covers the gap; see the breakdown table.")
        )
    return "\n\n".join(lines) or None


def _s3_fixes(b: dict[str, Any]) -> list[str]:
    marks = dict(b["marks"])
    fixes = []
    if "events client" in marks:
        gain = marks["events client"] + marks.get("EventBridge PutEvents", 0.0)
        fixes.append("The EventBridge client and call are the \"ComfyUI Prompt Submitted\" event, on by "
                     "default; a deployment that does not consume it sets `AnnounceSubmissions=false` "
                     f"and saves ≈ {gain:.0f} ms.")
    clients = [ms for name, ms in b["marks"] if name == "s3 client"]
    if len(clients) > 1:
        extra = sum(clients[1:])
        fixes.append(f"{len(clients)} S3 clients are created where `storage.s3_client()` "
                     f"(cached, SigV4, used for presigning too) should be the only one: ≈ {extra:.0f} ms.")
    stack = sum(ms for top, ms in b["extra_imports"] if top in REQUESTS_STACK)
    if stack >= 5:
        fixes.append("Larger: comfy_core/comfyui/client.py on urllib3 (which botocore loads anyway) "
                     "instead of requests would drop requests, charset_normalizer, idna and http.cookiejar: "
                     f"≈ {stack:.0f} ms.")
    return fixes


def warm_extra_round_trips(results: dict[str, Any]) -> str | None:
    from bench.warm import OVERHEAD_TARGET_MS, extra_calls

    lines = []
    for row in (results.get("warm") or {}).get("rows", []):
        extra = extra_calls(row)
        if row["overhead"]["median"] <= OVERHEAD_TARGET_MS or not extra:
            continue
        spent = sum(ms or 0.0 for _, ms in extra)
        calls = ", ".join(call for call, _ in extra)
        lines.append(
            f"**Warm {row['scenario']['label']}: {row['overhead']['median']:.2f} ms overhead.** The handler "
            f"makes round trips the direct baseline does not: {calls} ({spent:.1f} ms against moto on "
            f"localhost, more against AWS); without them the overhead is about "
            f"{row['overhead']['median'] - spent:.1f} ms."
            + (_put_events_fix() if any(call == "EventBridge PutEvents" for call, _ in extra) else "")
        )
    return "\n\n".join(lines) or None


def _put_events_fix() -> str:
    return (" The PutEvents is the \"ComfyUI Prompt Submitted\" event (`notify.prompt_submitted`), "
            "which the event-driven issue asks for on every submission, so with the default "
            "settings this target cannot hold: it is 2 ms plus one EventBridge round trip. "
            "Deployments that do not consume the event set the `AnnounceSubmissions=false` "
            "parameter (env `ANNOUNCE_SUBMISSIONS`), which leaves no AWS call on the request "
            "path besides the workflow's conditional GET.")


def round_trips_beyond_target(results: dict[str, Any]) -> str | None:
    lines = []
    for row in (results.get("roundtrips") or {}).get("rows", []):
        if row["met"] is not False:
            continue
        calls = ", ".join(row["comfy"] + row["aws"])
        text = (f"**Round trips of {row['scenario']['label']}: {calls}; target: {row['target']}.**")
        if "EventBridge PutEvents" in row["aws"]:
            text += (" The extra call is the synchronous \"Prompt Submitted\" event, on by default "
                     "(see the warm finding); `AnnounceSubmissions=false` removes it.")
        lines.append(text)
    return "\n\n".join(lines) or None


def warm_own_overhead(results: dict[str, Any]) -> str | None:
    from bench.warm import OVERHEAD_TARGET_MS, extra_calls

    slow = [row for row in (results.get("warm") or {}).get("rows", [])
            if row["overhead"]["median"] > OVERHEAD_TARGET_MS and not extra_calls(row)]
    if not slow:
        return None
    names = ", ".join(row["scenario"]["label"] for row in slow)
    return (f"**Warm overhead over {OVERHEAD_TARGET_MS:g} ms with no extra round trips: {names}.** "
            "The time is comfy_core's or Powertools' own; profile one warm request with cProfile "
            "(`python -m bench.handlers --child ...` shows the setup).")


def inline_image_overhead(results: dict[str, Any]) -> str | None:
    from bench.inputs import RATIO_TARGET

    overhead = (results.get("inputs") or {}).get("overhead")
    if not overhead or overhead["ratio"] <= RATIO_TARGET:
        return None
    p = overhead["parts"]
    return (f"**run_workflow with a 1 MB inline image: {overhead['ratio']:.2f}× the raw /upload/image + "
            f"/prompt ({overhead['overhead']['median']:.1f} ms more).** The raw client makes no AWS call; "
            f"the handler's {', '.join(p['aws_calls'])} take {p['aws_ms']:.1f} ms against moto "
            "(`AnnounceSubmissions=false` removes the event). Reading the inline image (base64 decode of "
            f"the text, spooling, SHA-256, recognising it) takes {p['prepare_ms']:.1f} ms, which a client "
            f"that holds the bytes does not spend. The upload is streamed (requests-toolbelt: flat memory "
            f"on a 50 MB upload) and takes {p['upload_ms']:.1f} ms where the raw client's in-memory body "
            f"takes {p['raw_upload_ms']:.1f} ms.")


FINDINGS: tuple[Finding, ...] = (boto3_in_plain_function, s3_function_over_limit,
                                 warm_extra_round_trips, round_trips_beyond_target, warm_own_overhead,
                                 inline_image_overhead)


# -- the summary ----------------------------------------------------------------------------------
def _groups(targets: list[Target]) -> list[str]:
    order: dict[str, list[Target]] = {}
    for target in targets:
        order.setdefault(target.group, []).append(target)
    rows = []
    for group, members in order.items():
        met = sum(1 for t in members if t.met)
        missed = [f"{t.name} ({t.figure})" for t in members if not t.met]
        rows.append(f"| {group} | {met} of {len(members)} | {'<br>'.join(missed) or '—'} |")
    return rows


NEAR = 0.95  # a cold start above this share of its limit is reported as a close call


def close_calls(results: dict[str, Any]) -> str:
    """Cold starts that meet their limit by less than 5%: run-to-run noise can flip them."""
    breakdown = (results.get("cold") or {}).get("breakdown", {})
    lines = []
    for layout in ("source", "built"):
        for key, row in _cold_rows(results, layout).items():
            share = row["spawn"]["median"] / row["limit"]
            if not row["met"] or share < NEAR:
                continue
            fixes = _s3_fixes(breakdown[key]) if layout == "source" and key in breakdown else []
            lines.append(f"- `{key}` ({layout}): {row['spawn']['median']:.0f} ms of {row['limit']:.0f} ms "
                         f"({share:.2f}). " + " ".join(fixes))
    return "\n".join(lines) or "None."


def markdown(results: dict[str, Any], targets: list[Target], date: str, machine: str, command: str) -> str:
    findings = [text for rule in FINDINGS if (text := rule(results))]
    misses = [t for t in targets if not t.met]
    explained = ("Every target is met." if not misses else
                 "\n\n".join(findings) if findings else
                 "No known cause matched; see the sections below.")
    return "\n".join([
        "Written by `make bench` (`python -m bench`); each section below says how to rerun it alone.",
        "Speed is measured here, never asserted in tests; round-trip counts are also asserted in "
        "`tests/unit/test_round_trips.py`.",
        "",
        f"- Date: {date}",
        f"- Machine: {machine}",
        f"- Command: `{command}`",
        "",
        "## Summary",
        "",
        "| benchmark | targets met | missed (figure) |",
        "|---|---|---|",
        *_groups(targets),
        "",
        "### Misses: why, and the change that fixes each",
        "",
        explained,
        "",
        f"### Close calls (cold starts above {NEAR:.0%} of their limit)",
        "",
        close_calls(results),
        "",
    ])
