"""Text as the agent and the user read it: cut to a budget (head and tail kept, a marker says what
was cut), shortened to one line, cleaned of terminal control sequences, with secrets scrubbed;
and the progress notifications long calls send.

Pure Python, no SDK: imported by the kernel-side capture and history (on the kernel's threads),
the tools (server thread) and ``ipymcp connect``.
"""

from __future__ import annotations

import logging
import re
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Generic, TypeVar

log = logging.getLogger("ipymcp")

# -- cutting to a budget ----------------------------------------------------------------------


def head_share(limit: int) -> int:
    """The part of a budget a cut text keeps of its head (two thirds); the rest keeps its tail."""
    return limit * 2 // 3


def cut_marker(removed: int, what: str = "characters", when: str = "") -> str:
    """The line that stands where text was cut out of the middle: ``[... 1,234 characters cut ...]``."""
    return f"\n[... {removed:,} {what} cut{' ' + when if when else ''} ...]\n"


def cut_middle(text: str, limit: int) -> str:
    """``text`` within ``limit`` characters: its head (two thirds) and tail, with a marker between."""
    if len(text) <= limit:
        return text
    head = head_share(limit)
    tail = limit - head
    return text[:head] + cut_marker(len(text) - head - tail) + (text[-tail:] if tail else "")


class MiddleCut:
    """One cut applied across a text that arrives in pieces (outputs with images between them):
    keep the first ``head_end`` and the characters from ``tail_start`` of the joined text.
    ``cut_before`` counts what was already cut while the text was captured."""

    def __init__(self, head_end: int, tail_start: int, cut_before: int = 0):
        self.head_end = head_end
        self.tail_start = tail_start
        self.cut_before = cut_before

    @classmethod
    def plan(cls, total: int, limit: int, cut_before: int = 0) -> MiddleCut:
        head = head_share(limit)
        return cls(head, total - (limit - head), cut_before)

    @property
    def removed(self) -> int:
        return self.tail_start - self.head_end + self.cut_before

    def apply(self, text: str, start: int) -> str:
        """The kept part of ``text``, which begins at ``start`` in the joined text."""
        end = start + len(text)
        head = text[: max(0, min(end, self.head_end) - start)]
        tail = text[max(0, self.tail_start - start) :] if end > self.tail_start else ""
        marker = cut_marker(self.removed) if start <= self.head_end < end else ""
        return head + marker + tail


Chunk = TypeVar("Chunk", str, bytes)


class HeadTail(Generic[Chunk]):
    """The first ``head_limit`` and the last ``tail_limit`` characters (or bytes) of a growing
    text; what falls between is counted in ``cut``, never kept. Appending is cheap whatever its
    size: a huge write has its tail sliced off, its middle is never copied."""

    __slots__ = ("head_limit", "tail_limit", "cut", "_head", "_head_len", "_tail", "_tail_len", "_empty")

    def __init__(self, head_limit: int, tail_limit: int):
        self.head_limit = max(0, head_limit)
        self.tail_limit = max(0, tail_limit)
        self.cut = 0
        self._head: list[Chunk] = []
        self._head_len = 0
        self._tail: deque[Chunk] = deque()
        self._tail_len = 0
        self._empty: Any = None

    @property
    def held(self) -> int:
        return self._head_len + self._tail_len

    @property
    def total(self) -> int:
        """Everything ever added, kept or not."""
        return self.held + self.cut

    def add(self, piece: Chunk) -> int:
        """Append ``piece``; returns how much the held size changed."""
        if self._empty is None:
            self._empty = piece[:0]
        before = self.held
        taken = 0
        if self._head_len < self.head_limit:
            taken = min(len(piece), self.head_limit - self._head_len)
            self._head.append(piece if taken == len(piece) else piece[:taken])
            self._head_len += taken
        rest = len(piece) - taken
        if rest == 0:
            return self.held - before
        if rest >= self.tail_limit:
            self.cut += self._tail_len + rest - self.tail_limit
            self._tail.clear()
            self._tail.append(piece[len(piece) - self.tail_limit :] if self.tail_limit else piece[:0])
            self._tail_len = self.tail_limit
            return self.held - before
        self._tail.append(piece[taken:] if taken else piece)
        self._tail_len += rest
        while self._tail_len > self.tail_limit:
            first = self._tail[0]
            excess = self._tail_len - self.tail_limit
            if len(first) <= excess:
                self._tail.popleft()
                self._tail_len -= len(first)
                self.cut += len(first)
            else:
                self._tail[0] = first[excess:]
                self._tail_len -= excess
                self.cut += excess
        return self.held - before

    def copy(self) -> HeadTail[Chunk]:
        """A snapshot (the pieces are shared, never copied): take it under the writer's lock."""
        other: HeadTail[Chunk] = HeadTail(self.head_limit, self.tail_limit)
        other.cut, other._empty = self.cut, self._empty
        other._head, other._head_len = list(self._head), self._head_len
        other._tail, other._tail_len = deque(self._tail), self._tail_len
        return other

    def head(self) -> Chunk:
        return self._join(self._head)

    def tail(self) -> Chunk:
        return self._join(self._tail)

    def _join(self, pieces: Iterable[Chunk]) -> Chunk:
        return (self._empty if self._empty is not None else "").join(pieces)


# -- one line ---------------------------------------------------------------------------------


def shorten(text: str, limit: int) -> str:
    """At most ``limit`` characters, an ellipsis marking a cut."""
    return text if len(text) <= limit else text[: max(0, limit - 1)] + "…"


def one_line(text: str, limit: int) -> str:
    """Every non-blank line, joined with ``⏎``, shortened (the activity output's summaries)."""
    joined = " ⏎ ".join(line.strip() for line in str(text).strip().splitlines() if line.strip())
    return shorten(joined, limit)


def compact(text: str, limit: int) -> str:
    """All whitespace runs as one space, shortened (messages in the audit log)."""
    return shorten(" ".join(str(text).split()), limit)


def first_line(code: str, limit: int = 120) -> str:
    """A program's first line, shortened, with `` …`` when more lines follow (what is running)."""
    code = code.strip()
    first = code.splitlines()[0] if code else ""
    return shorten(first, limit) + (" …" if "\n" in code else "")


# -- terminal output ----------------------------------------------------------------------------

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07")
_CR_NEWLINE = re.compile("\r+\n")


def strip_ansi(text: str) -> str:
    """Without colour and cursor escape sequences (CSI) and terminal titles (OSC)."""
    return _ANSI.sub("", text)


def collapse_overwrites(text: str) -> str:
    """Text as JupyterLab (and a terminal) shows it: ``\\r`` returns to the start of the line and
    what follows overwrites it, ``\\b`` deletes the character before it.

    Follows JupyterLab's ``removeOverwrittenChars``; in linear time, since progress output can be
    megabytes of overwrites.
    """
    if "\b" in text:
        text = _apply_backspaces(text)
    if "\r" not in text:
        return text
    text = _CR_NEWLINE.sub("\n", text)
    return "\n".join(_overwrite_line(line) if "\r" in line else line for line in text.split("\n"))


def clean_terminal_text(text: str) -> str:
    """Readable text from terminal output: no escape codes, and progress lines as last shown."""
    return collapse_overwrites(strip_ansi(text))


def _apply_backspaces(text: str) -> str:
    kept: list[str] = []
    for index, piece in enumerate(text.split("\b")):
        if index and kept and kept[-1] != "\n":
            kept.pop()
        kept.extend(piece)
    # A backspace at the start of a line has nothing to delete and shows as nothing.
    return "".join(kept)


def _overwrite_line(line: str) -> str:
    """The last state of one line: each position shows the newest write that reached it."""
    shown: list[str] = []
    width = 0
    for state in reversed(line.split("\r")):
        if len(state) > width:
            shown.append(state[width:])
            width = len(state)
    return "".join(shown)


# -- secrets ------------------------------------------------------------------------------------

SCRUBBED = "[token]"


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of each secret replaced by ``[token]``."""
    for secret in secrets:
        if secret and secret in text:
            text = text.replace(secret, SCRUBBED)
    return text


# -- progress notifications ---------------------------------------------------------------------

ProgressSender = Callable[[float, "float | None", "str | None"], Awaitable[None]]


async def report_progress(send: ProgressSender, elapsed: float, message: str) -> None:
    """One progress notification (``ctx.report_progress`` or a session's): they double as
    keepalives. A client that asked for none (no progress token), or that is gone, costs the call
    nothing."""
    try:
        await send(round(elapsed, 1), None, message)
    except Exception:  # noqa: BLE001 - progress never fails the call it reports on
        log.debug("progress notification not sent", exc_info=True)
