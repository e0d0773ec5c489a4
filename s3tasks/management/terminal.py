"""A management command's stdout as a terminal for `rich` progress bars."""

from __future__ import annotations

from typing import Any


class TerminalOut:
    """The command's stdout as a file for rich: written as is, without Django's line ending."""

    def __init__(self, out: Any) -> None:
        self.out = out

    def write(self, text: str) -> int:
        self.out.write(text, ending="")
        return len(text)

    def flush(self) -> None:
        self.out.flush()

    def isatty(self) -> bool:
        return True
