"""Progress text (``\\r`` and ``\\b``) reads as the user sees it, in the history and in read_process.

One implementation (``ipymcp.text.collapse_overwrites``) serves both; its reference is
JupyterLab's own ``removeOverwrittenChars`` (packages/outputarea/src/model.ts), ported below
regex for regex, with JavaScript's notion of a line (``\\r`` ends one too) spelled out.
Where JupyterLab's regexes slip (a backspace cancels the backspace before it; a backspace with
nothing to erase still takes a column), ipymcp does what a terminal does: each backspace erases
one character of its line.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ipymcp.kernel.history import StreamOutput
from ipymcp.text import clean_terminal_text, collapse_overwrites

# JavaScript: `.` stops at any line terminator, and with the m flag `^` follows any of them.
_JS_LINE_CHARS = "[^\n\r\u2028\u2029]"
_JS_LINE_START = "(?:^|(?<=[\n\r\u2028\u2029]))"


def jupyterlab_remove_overwritten_chars(text: str) -> str:
    """JupyterLab's fixBackspace then fixCarriageReturn, as in its TypeScript source."""
    previous = None
    while previous is None or len(text) < len(previous):
        previous, text = text, re.sub("[^\n]\x08", "", text)
    text = re.sub("\r+\n", "\n", text)
    while re.search("\r[^$]", text):
        base = re.search(f"{_JS_LINE_START}({_JS_LINE_CHARS}*)\r+", text).group(1)
        insert = re.search(f"\r+({_JS_LINE_CHARS}*)", text).group(1)
        insert = insert + base[len(insert) :]
        text = re.sub(f"\r+{_JS_LINE_CHARS}*", "\r", text, count=1)
        text = re.sub(f"{_JS_LINE_START}{_JS_LINE_CHARS}*\r", lambda _, kept=insert: kept, text, count=1)
    return text


def _shown(text: str) -> str:
    """What the browser paints: a trailing carriage return or lone backspace is invisible."""
    return text.replace("\r", "").replace("\b", "")


def _history_text(text: str) -> str:
    stream = StreamOutput("stdout", cap=10_000_000)
    stream.add(text)
    return stream.as_output()["text"]


CASES = [
    ("10%\r20%\r", "20%"),
    ("10%\r20%\r30%", "30%"),
    ("downloading\rdone\n", "doneloading\n"),  # a shorter line overwrites only its own width
    ("  0%|          | 0/3\r 33%|###       | 1/3\r100%|##########| 3/3\n", "100%|##########| 3/3\n"),
    ("a\r\nb\r\r\nc", "a\nb\nc"),
    ("first\nsecond\r2nd\nthird", "first\n2ndond\nthird"),
    ("ab\bc", "ac"),
    ("abc\b\b", "a"),
    ("line\n\bnext", "line\nnext"),
    ("no progress here\n", "no progress here\n"),
]


@pytest.mark.parametrize(("raw", "shown"), CASES)
def test_progress_text_reads_as_jupyterlab_shows_it(raw, shown):
    assert _shown(jupyterlab_remove_overwritten_chars(raw)) == shown  # the reference agrees
    assert collapse_overwrites(raw) == shown
    assert _history_text(raw) == shown
    assert clean_terminal_text(raw) == shown


def test_read_process_keeps_the_last_progress_state():
    assert clean_terminal_text("10%\r20%\r") == "20%"
    assert clean_terminal_text("\x1b[32m10%\x1b[0m\r\x1b[32m20%\x1b[0m\r") == "20%"


def test_runs_of_backspaces_erase_one_character_each():
    # JupyterLab's regex shows "ab" here (its second backspace eats the first); a terminal, "".
    assert collapse_overwrites("abc\b\b\b") == ""
    assert clean_terminal_text("spinner |\b/\b-\b\\\bdone\n") == "spinner done\n"


# Progress text as programs write it: characters, carriage returns, newlines, and backspaces
# that each follow a character they erase.
_PIECES = st.sampled_from(["a", "b", "c", "\r", "\n", "a\b", "c\b", "\r\n"])


@settings(max_examples=400, deadline=None)
@given(st.lists(_PIECES, max_size=30).map("".join))
def test_collapser_matches_jupyterlab_on_any_mix(raw):
    assert collapse_overwrites(raw) == _shown(jupyterlab_remove_overwritten_chars(raw))


@pytest.mark.timeout(30)
def test_hostile_progress_text_is_collapsed_in_linear_time():
    # A long first state then many short overwrites: a fold that copies the line each time
    # would take hours; the user's kernel thread must never be held by an agent's read.
    raw = "x" * 1_000_000 + "\ry" * 300_000 + "\n" + "z" * 500_000 + "\b" * 500_000
    shown = collapse_overwrites(raw)
    assert shown == "y" + "x" * 999_999 + "\n"
