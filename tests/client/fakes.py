"""What the client tests share: the API's made-up address, a recorder of waits, captured consoles."""

from __future__ import annotations

import io
from dataclasses import dataclass

from rich.console import Console

API_URL = "https://api.test/dev"


class Sleeps(list[float]):
    """Every wait the client asked for, in order; nothing is slept."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    @property
    def stderr_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


def console() -> Console:
    return Console(file=io.StringIO(), force_terminal=False, width=120, color_system=None)
