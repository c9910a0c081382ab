"""What the user reads before approving a call: every argument in full, nothing hidden.

A call is shown as sections: short arguments together (``path: "a.py"``), each long or
multi-line text in full in its own section, and, for tools that replace text, one diff
(``edit_file``'s old → new, ``edit_cell``'s current source → new source). Nothing is cut: a
call too long to show (``c.IPyMCP.approval_max_chars``) is refused instead of asked.

Characters that would make the text read differently from what runs are replaced by visible
markers: control, format and bidirectional-control characters (U+202E reverses the line it is
on, U+200B and U+FEFF are invisible), invisible fillers, and long runs of blanks inside a line
(they push code out of a view that does not wrap), e.g. ``⟦U+202E RIGHT-TO-LEFT OVERRIDE⟧``.

Pure Python (no SDK): the approval gate, the notebook dialog and tests use it.
"""

from __future__ import annotations

import difflib
import json
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

# Letters and marks that render as nothing (Hangul fillers, braille blank, joiners, variation
# selectors): not in the control/format categories, and just as invisible.
_INVISIBLE = {0x034F, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x2800, 0x3164, 0xFFA0}
_INVISIBLE_RANGES = ((0x180B, 0x180F), (0xFE00, 0xFE0F), (0xE0100, 0xE01EF))
# Categories shown as markers: control, format (bidi controls, zero-width), surrogate, private
# use, unassigned, line/paragraph separators. Spaces other than U+0020 are shown too.
_MARKED_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs"}
_ASCII_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
# Blanks after something on the same line: enough of them hide the rest of the line.
_BLANK_RUN = re.compile(r"(?<=[^ \t\n])[ \t]{32,}")
# Short arguments are listed together; longer or multi-line text gets a section of its own.
_INLINE_CHARS = 200


@dataclass(frozen=True)
class Diff:
    """A tool that replaces text is shown as one diff instead of the arguments in ``replaces``.

    ``before`` is None when the current text is not known here: the new text is then shown whole.
    """

    before: str | None
    after: str
    replaces: tuple[str, ...]
    label: str = "change"


@dataclass(frozen=True)
class Section:
    label: str
    text: str
    kind: str = "text"  # "text" | "diff" (lines start with " ", "-" or "+")

    def as_json(self) -> dict[str, str]:
        return {"label": self.label, "text": self.text, "kind": self.kind}


def visible(text: str) -> str:
    """``text`` with every character that hides or reorders text replaced by a visible marker."""
    if text.isascii():
        text = _ASCII_CONTROL.sub(lambda m: _marker(m.group()), text)
    else:
        text = "".join(_marker(ch) if _hides(ch) else ch for ch in text)
    return _BLANK_RUN.sub(lambda m: f"⟦{len(m.group())} blanks⟧", text)


def _hides(ch: str) -> bool:
    if ch in "\n\t ":
        return False
    code = ord(ch)
    if code in _INVISIBLE or any(low <= code <= high for low, high in _INVISIBLE_RANGES):
        return True
    return unicodedata.category(ch) in _MARKED_CATEGORIES


def _marker(ch: str) -> str:
    try:
        name = unicodedata.name(ch)
    except ValueError:  # control characters and lone surrogates have no name
        name = ""
    return f"⟦U+{ord(ch):04X}{' ' + name if name else ''}⟧"


def describe(arguments: dict[str, Any], diff: Diff | None = None) -> list[Section]:
    """The sections that show a call with ``arguments`` in full."""
    shown_as_diff = set(diff.replaces) if diff is not None else set()
    inline: list[str] = []
    sections: list[Section] = []
    for name, value in arguments.items():
        if name in shown_as_diff:
            continue
        label = visible(str(name))
        if isinstance(value, str) and ("\n" in value or len(value) > _INLINE_CHARS):
            sections.append(Section(f"{label} ({_size(value)})", visible(value)))
        else:
            inline.append(f"{label}: {visible(_json(value))}")
    if inline:
        sections.insert(0, Section("arguments", "\n".join(inline)))
    if diff is not None:
        sections.append(_diff_section(diff))
    return sections


def _diff_section(diff: Diff) -> Section:
    label = visible(diff.label)
    if diff.before is None:
        return Section(
            f"{label}: the whole new text ({_size(diff.after)}; the current text is not known here)",
            visible(diff.after),
        )
    before, after = diff.before.splitlines(), diff.after.splitlines()
    # Context as long as the texts: one hunk that shows every line, unchanged ones included.
    lines = list(difflib.unified_diff(before, after, lineterm="", n=max(len(before), len(after))))[3:]
    if not lines:
        lines = [" " + line for line in after]
    removed = sum(1 for line in lines if line.startswith("-"))
    added = sum(1 for line in lines if line.startswith("+"))
    return Section(
        f"{label}: {_count(removed, 'line')} removed (-), {added} added (+)", visible("\n".join(lines)), "diff"
    )


def size(sections: list[Section]) -> int:
    """Characters the user has to read."""
    return sum(len(s.label) + len(s.text) for s in sections)


def as_text(sections: list[Section]) -> str:
    """One text for places without sections (an MCP client's form, older notebook extensions).

    Each section is fenced with more backticks than its text contains, so a client that renders
    Markdown shows the text literally (an unfenced ``<!-- … -->`` would be hidden).
    """
    parts = []
    for section in sections:
        longest = max((len(run) for run in re.findall(r"`+", section.text)), default=0)
        fence = "`" * max(3, longest + 1)
        parts.append(f"{section.label}:\n{fence}\n{section.text}\n{fence}")
    return "\n\n".join(parts)


def _size(text: str) -> str:
    return f"{_count(text.count(chr(10)) + 1, 'line')}, {len(text):,} characters"


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=repr)
