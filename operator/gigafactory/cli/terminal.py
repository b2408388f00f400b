"""What the CLI prints reaches a person's terminal: text that came from a job, an agent or the API
is shown, never obeyed.

A terminal acts on control sequences inside text: OSC 52 writes the clipboard, `ESC[2J` clears the
screen, `ESC]8;;` makes links, a carriage return overwrites a line, and Unicode bidi overrides reorder
what is shown ("Trojan source"). Every byte the CLI writes goes through `escape()`, which keeps newlines
and tabs and shows every other control character as a visible escape (`\\x1b`, `\\u202e`). The CLI uses
no colours of its own, so nothing legitimate is lost.
"""
from __future__ import annotations

import io
import re
import sys
from typing import TextIO, cast

# C0 controls but \t and \n, DEL, C1 controls, and the bidi embeddings, overrides and isolates.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape(text: str) -> str:
    """`text` with every control character but newline and tab shown as an escape."""
    return _CONTROL.sub(_visible, text)


class EscapingWriter(io.TextIOBase):
    """A text stream that escapes what it passes on to the current sys.stdout (or sys.stderr): looked
    up at each write, so a test runner that swaps the stream still sees the output."""

    def __init__(self, stream: str) -> None:
        self.stream = stream

    @property
    def target(self) -> TextIO:
        return getattr(sys, self.stream)  # type: ignore[no-any-return]

    def write(self, text: str) -> int:
        self.target.write(escape(text))
        return len(text)

    def flush(self) -> None:
        self.target.flush()

    def isatty(self) -> bool:
        return self.target.isatty()


# Typed as the text files they stand in for (rich's Console and print() take them as such).
stdout = cast(TextIO, EscapingWriter("stdout"))
stderr = cast(TextIO, EscapingWriter("stderr"))
