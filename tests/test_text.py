"""The text helpers every answer goes through (ipymcp/text.py): pure functions, no kernel.

Overwrite collapsing has its own reference test against JupyterLab's algorithm
(tests/test_progress_text.py).
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ipymcp.text import (
    HeadTail,
    MiddleCut,
    clean_terminal_text,
    compact,
    cut_marker,
    cut_middle,
    first_line,
    one_line,
    report_progress,
    scrub,
    shorten,
    strip_ansi,
)

# -- cutting ----------------------------------------------------------------------------------


def test_a_text_within_the_limit_is_left_alone() -> None:
    assert cut_middle("abc", 3) == "abc"


def test_a_long_text_keeps_two_thirds_head_one_third_tail_and_says_how_much_was_cut() -> None:
    text = "".join(str(i % 10) for i in range(1_000))
    cut = cut_middle(text, 300)
    assert cut.startswith(text[:200]) and cut.endswith(text[-100:])
    assert "\n[... 700 characters cut ...]\n" in cut


@given(st.text(max_size=400), st.integers(min_value=1, max_value=300))
def test_cut_middle_keeps_exactly_the_limit_and_counts_the_rest(text: str, limit: int) -> None:
    cut = cut_middle(text, limit)
    if len(text) <= limit:
        assert cut == text
    else:
        head, tail = limit * 2 // 3, limit - limit * 2 // 3
        assert cut == text[:head] + cut_marker(len(text) - limit) + (text[-tail:] if tail else "")


@given(st.lists(st.text(max_size=60), max_size=8), st.integers(min_value=1, max_value=150))
def test_a_cut_across_pieces_equals_the_cut_of_the_joined_text(pieces: list[str], limit: int) -> None:
    """MiddleCut is how outputs with images between them share one budget."""
    joined = "".join(pieces)
    if len(joined) <= limit:
        return
    plan = MiddleCut.plan(len(joined), limit)
    position, kept = 0, []
    for piece in pieces:
        kept.append(plan.apply(piece, position))
        position += len(piece)
    assert "".join(kept) == cut_middle(joined, limit)


def test_a_cut_made_while_capturing_is_counted_in_the_marker() -> None:
    plan = MiddleCut.plan(1_000, 300, cut_before=5_000)
    assert plan.removed == 5_700
    assert "[... 5,700 characters cut ...]" in plan.apply("x" * 1_000, 0)


@settings(max_examples=200)
@given(st.lists(st.text(max_size=50), max_size=30), st.integers(0, 40), st.integers(0, 40))
def test_head_tail_keeps_the_first_and_last_characters_of_everything_added(
    pieces: list[str], head: int, tail: int
) -> None:
    kept: HeadTail[str] = HeadTail(head, tail)
    held = 0
    for piece in pieces:
        held += kept.add(piece)
    everything = "".join(pieces)
    assert kept.held == held == len(kept.head()) + len(kept.tail())
    assert kept.total == len(everything)
    if kept.cut:
        assert kept.head() == everything[:head] and kept.tail() == everything[len(everything) - tail :]
        assert kept.cut == len(everything) - head - tail
    else:
        assert kept.head() + kept.tail() == everything


def test_head_tail_takes_bytes_too_and_a_huge_write_costs_no_copy_of_its_middle() -> None:
    kept: HeadTail[bytes] = HeadTail(4, 4)
    kept.add(b"abc")
    kept.add(b"d" + b"x" * 10_000_000 + b"wxyz")
    assert (kept.head(), kept.tail(), kept.cut) == (b"abcd", b"wxyz", 10_000_000)


def test_a_copy_of_head_tail_does_not_see_later_writes() -> None:
    kept: HeadTail[str] = HeadTail(2, 2)
    kept.add("abcdef")
    copy = kept.copy()
    kept.add("ghij")
    assert (copy.head(), copy.tail(), copy.cut) == ("ab", "ef", 2)
    assert (kept.head(), kept.tail(), kept.cut) == ("ab", "ij", 6)


# -- one line ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [("short", 10, "short"), ("exactly10!", 10, "exactly10!"), ("a longer text", 8, "a longe…")],
)
def test_shorten_marks_a_cut_with_an_ellipsis(text: str, limit: int, expected: str) -> None:
    assert shorten(text, limit) == expected


def test_one_line_joins_the_non_blank_lines() -> None:
    assert one_line("  first\n\n  second  \n", 100) == "first ⏎ second"
    assert one_line("a\nb\nc", 6) == "a ⏎ b…"


def test_compact_squeezes_whitespace() -> None:
    assert compact("error:\n   the   thing\tfailed", 100) == "error: the thing failed"


@pytest.mark.parametrize(
    ("code", "expected"),
    [("x = 1", "x = 1"), ("\n  import os\nos.getcwd()\n", "import os …"), ("", "")],
)
def test_first_line_says_when_more_lines_follow(code: str, expected: str) -> None:
    assert first_line(code) == expected


# -- terminal text, secrets --------------------------------------------------------------------


def test_strip_ansi_removes_colours_cursor_moves_and_titles() -> None:
    assert strip_ansi("\x1b[1;31mred\x1b[0m \x1b[2K\x1b]0;title\x07done") == "red done"


def test_clean_terminal_text_shows_the_last_state_of_a_progress_line() -> None:
    assert clean_terminal_text("\x1b[32m 10%\x1b[0m\r\x1b[32m100%\x1b[0m\ndone\n") == "100%\ndone\n"


def test_scrub_replaces_every_secret_and_ignores_empty_ones() -> None:
    assert scrub("token abc and abc again, not def", ["abc", ""]) == "token [token] and [token] again, not def"


# -- progress -----------------------------------------------------------------------------------


async def test_progress_is_sent_rounded_and_a_failing_client_costs_nothing() -> None:
    sent = []

    async def send(progress: float, total: float | None, message: str | None) -> None:
        sent.append((progress, total, message))

    async def refuse(progress: float, total: float | None, message: str | None) -> None:
        raise RuntimeError("no progress token")

    await report_progress(send, 1.2345, "running for 1 s")
    await report_progress(refuse, 2.0, "ignored")
    assert sent == [(1.2, None, "running for 1 s")]
