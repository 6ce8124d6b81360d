"""Every recording in tests/fixtures/comfyui/ is read by some test.

A recording nothing reads checks nothing: the quirk it shows can regress unnoticed. The check
is a static scan of the test sources, so it holds whichever tests a run selects (a count of
loads at run time would only mean something in a full run). To keep it honest, a recording
counts as used only when its name is

* a string constant in code (not a docstring, not a comment), exactly: the name, or the name
  with its file suffix (`view_output.png`, `workflows/empty_save.json` or `empty_save.json`);
* in a test module that loads recordings (it imports tests.support.recordings or asks for the
  `recording` / `recording_meta` fixtures), and not in this module;
* or matched by a family pattern given to a `recordings("<prefix>_*")` call, which lists the
  recordings of one family (all of them are then exercised by a parametrized test).
"""

from __future__ import annotations

import ast
import fnmatch
import re
from pathlib import Path

from tests.support.recordings import RECORDINGS, WORKFLOWS

TESTS = Path(__file__).resolve().parents[1]
SUFFIXES = (".headers.json", ".json", ".png", ".webp")
LOADERS = {"recording", "recording_meta"}  # fixtures of tests/conftest.py
FAMILY = re.compile(r"[a-z][a-z0-9_]*_\*")  # e.g. view_*: a prefix, then everything


def recording_names() -> set[str]:
    """Each recording once: `view_output` for view_output.headers.json and view_output.png."""
    names = set()
    for path in RECORDINGS.iterdir():
        if path.is_file() and path.suffix != ".md":
            suffix = next(s for s in SUFFIXES if path.name.endswith(s))
            names.add(path.name[: -len(suffix)])
    return names | {f"workflows/{path.name}" for path in WORKFLOWS.glob("*.json")}


def references(source: str) -> tuple[set[str], set[str]]:
    """(string constants outside docstrings, family patterns passed to `recordings(...)`) of
    a module that loads recordings; nothing for a module that does not."""
    tree = ast.parse(source)
    loads = any(
        (isinstance(node, ast.ImportFrom) and node.module == "tests.support.recordings")
        or (isinstance(node, ast.arg) and node.arg in LOADERS)
        for node in ast.walk(tree)
    )
    if not loads:
        return set(), set()
    docstrings = {
        id(node.body[0].value) for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)
    }
    constants = {node.value for node in ast.walk(tree)
                 if isinstance(node, ast.Constant) and isinstance(node.value, str)
                 and id(node) not in docstrings}
    families = {arg.value for node in ast.walk(tree)
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id == "recordings"
                for arg in node.args
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str)
                and FAMILY.fullmatch(arg.value)}
    return constants, families


def used(name: str, constants: set[str], families: set[str]) -> bool:
    if name.startswith("workflows/"):
        return name in constants or name.removeprefix("workflows/") in constants
    return (any(name + suffix in constants for suffix in ("", *SUFFIXES))
            or any(fnmatch.fnmatchcase(name, family) for family in families))


def test_every_recording_is_read_by_a_test() -> None:
    constants: set[str] = set()
    families: set[str] = set()
    for path in sorted(TESTS.rglob("*.py")):
        if RECORDINGS in path.parents or path == Path(__file__).resolve():
            continue
        found, patterns = references(path.read_text(encoding="utf-8"))
        constants |= found
        families |= patterns
    unused = sorted(name for name in recording_names() if not used(name, constants, families))
    assert unused == [], "recordings no test reads: cover them, or leave them out of tests/fixtures/comfyui"


def test_the_scan_counts_code_only() -> None:
    source = '''
"""Module docstring naming queue_empty."""
from tests.support.recordings import recording
# a comment naming history_all
def test_x():
    """Docstring naming history_empty."""
    recording("system_stats")
    recordings("view_*")
    recordings("*")
    assert "prompt_success_chain is mentioned" != "features"
'''
    constants, families = references(source)
    names = ["queue_empty", "history_all", "history_empty", "system_stats", "view_output", "features",
             "prompt_success_chain", "free"]
    found = [name for name in names if used(name, constants, families)]
    assert found == ["system_stats", "view_output", "features"]
    assert references(source.replace("from tests.support.recordings import recording", "")) == (set(), set())
