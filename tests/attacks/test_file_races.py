"""Attack: an `edit`-level agent races the file tools by swapping a parent directory for a symlink.

A helper process (a real one, so it spins without the test's GIL) exchanges a directory inside
the root with a symlink to a directory outside it, as fast as the kernel allows
(``renameat2(RENAME_EXCHANGE)``, atomic). Meanwhile the agent calls the file tools through the
real MCP client on paths that pass through that directory. Whatever the interleaving, nothing
outside the root may be deleted, moved, created, written or read: every call either works inside
the root or is refused.

Before the fix, path-based checks then uses lost these races within a few dozen tries
(``delete_path`` removed the outside tree, ``move_path`` pulled it into the root,
``make_directory`` / ``write_file`` created directories outside, ``list_files`` listed it).
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import text_of

pytestmark = [
    pytest.mark.compat,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the swapper uses Linux renameat2"),
]

# Calls raced at once per round (the server runs file tools on worker threads), and rounds.
# Measured on the unfixed code: the swap races were lost within 2-122 sequential calls on a quiet
# machine, within rounds 2-55 of 4 calls with the machine loaded 8x; the no-overwrite race within
# 8-118 calls. A round costs ~50-150 ms.
LANES = 4
RACE_ROUNDS = int(os.environ.get("ROUNDS", 50))
CLOBBER_ROUNDS = int(os.environ.get("ROUNDS", 100))
OUTSIDE_SECRET = "OUTSIDE-SECRET-CONTENT"

_SWAPPER = textwrap.dedent(
    """
    import ctypes, sys
    libc = ctypes.CDLL(None, use_errno=True)
    exchange = libc.renameat2
    exchange.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    first, second = sys.argv[1].encode(), sys.argv[2].encode()
    print("ready", flush=True)
    while True:
        exchange(-100, first, -100, second, 2)  # AT_FDCWD, RENAME_EXCHANGE
    """
)


def stopped(process: subprocess.Popen) -> None:
    """SIGSTOP, then wait until the process is really stopped (the signal lands asynchronously)."""
    process.send_signal(signal.SIGSTOP)
    stat_file = Path(f"/proc/{process.pid}/stat")
    while stat_file.read_text().rsplit(")", 1)[1].split()[0] != "T":
        time.sleep(0.001)


def _have_renameat2() -> bool:
    return hasattr(ctypes.CDLL(None), "renameat2")


def snapshot(directory: Path) -> dict[str, str]:
    """Every entry under ``directory`` with its content (files) or kind: what must never change."""
    found: dict[str, str] = {}
    for current, dirs, files in os.walk(directory):
        for name in dirs:
            found[os.path.relpath(os.path.join(current, name), directory)] = "<dir>"
        for name in files:
            path = os.path.join(current, name)
            found[os.path.relpath(path, directory)] = Path(path).read_text()
    return found


class Swapper:
    """A process exchanging ``work/p`` (a real directory) with ``work/p_swap`` (a symlink outside)."""

    def __init__(self, work: Path, outside: Path):
        self.parent, self.link = work / "p", work / "p_swap"
        self.parent.mkdir()
        os.symlink(outside, self.link)
        self.process = subprocess.Popen(
            [sys.executable, "-c", _SWAPPER, str(self.parent), str(self.link)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout.readline().strip() == "ready"

    def real_directory(self) -> Path:
        """Paused: the name under which the real directory currently is."""
        return self.link if self.parent.is_symlink() else self.parent

    def pause(self) -> Path:
        stopped(self.process)
        return self.real_directory()

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGCONT)
        self.process.kill()
        self.process.wait(10)


@pytest.fixture(scope="module", autouse=True)
def edit_level(kernel):
    kernel.run("%mcp permissions edit")
    yield
    kernel.run("%mcp permissions execute")


@pytest.fixture
def arena(kernel, tmp_path_factory):
    if not _have_renameat2():
        pytest.skip("libc has no renameat2")
    outside = tmp_path_factory.mktemp("outside")
    for lane in range(LANES):
        (outside / f"t{lane}" / "sub").mkdir(parents=True)
        (outside / f"t{lane}" / "f1.txt").write_text(OUTSIDE_SECRET)
        (outside / f"t{lane}" / "outside-only.txt").write_text(OUTSIDE_SECRET)
        (outside / f"t{lane}" / "sub" / "deep.txt").write_text(OUTSIDE_SECRET)
    (outside / "keep.txt").write_text(OUTSIDE_SECRET)
    work = Path(kernel.cwd) / f"race-{time.monotonic_ns()}"
    work.mkdir()
    swapper = Swapper(work, outside)
    yield work, outside, swapper
    swapper.stop()


def fill_targets(directory: Path) -> None:
    """The inside twins of outside/t<lane>, (re)created while the swapper is paused."""
    for lane in range(LANES):
        target = directory / f"t{lane}"
        (target / "sub").mkdir(parents=True, exist_ok=True)
        (target / "f1.txt").write_text("inside\n")
        (target / "sub" / "deep.txt").write_text("inside\n")


def clear(directory: Path, prefix: str) -> None:
    import shutil

    for lane in range(LANES):
        path = directory / f"{prefix}{lane}"
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


# Each case: the tool call of one lane, and how to reset the inside between rounds (swapper paused).
CASES = {
    "delete_path": (
        lambda work, lane: ("delete_path", {"path": f"{work}/p/t{lane}", "recursive": True}),
        lambda inside, work: fill_targets(inside),
    ),
    "move_path": (
        lambda work, lane: ("move_path", {"src": f"{work}/p/t{lane}", "dst": f"{work}/moved{lane}"}),
        lambda inside, work: (clear(work, "moved"), fill_targets(inside)),
    ),
    "write_file": (
        lambda work, lane: ("write_file", {"path": f"{work}/p/new{lane}/x.txt", "content": "agent\n"}),
        lambda inside, work: clear(inside, "new"),
    ),
    "write_file_existing_dir": (
        lambda work, lane: (
            "write_file",
            {"path": f"{work}/p/t{lane}/f1.txt", "content": "agent\n", "overwrite": True},
        ),
        lambda inside, work: fill_targets(inside),
    ),
    "make_directory": (
        lambda work, lane: ("make_directory", {"path": f"{work}/p/d{lane}/d2"}),
        lambda inside, work: clear(inside, "d"),
    ),
    "read_file": (
        lambda work, lane: ("read_file", {"path": f"{work}/p/t{lane}/f1.txt"}),
        lambda inside, work: fill_targets(inside),
    ),
    "list_files": (
        lambda work, lane: ("list_files", {"path": f"{work}/p/t{lane}", "recursive": True}),
        lambda inside, work: fill_targets(inside),
    ),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_swapping_a_parent_for_a_symlink_never_reaches_outside_the_root(kernel, arena, case):
    work, outside, swapper = arena
    make_call, reset = CASES[case]
    before = snapshot(outside)
    outcomes = {"worked": 0, "refused": 0}
    reset(swapper.pause(), work)
    swapper.resume()
    async with kernel.client() as client:
        for attempt in range(RACE_ROUNDS):
            calls = [make_call(work.name, lane) for lane in range(LANES)]
            results = await asyncio.gather(*(client.call_tool(name, arguments) for name, arguments in calls))
            texts = [text_of(result) for result in results]
            for result, text in zip(results, texts, strict=True):
                outcomes["refused" if result.is_error else "worked"] += 1
                assert OUTSIDE_SECRET not in text and "outside-only" not in text, (attempt, text)
            inside = swapper.pause()
            assert snapshot(outside) == before, f"{case}: outside changed in round {attempt + 1}: {texts}"
            reset(inside, work)
            swapper.resume()
    # The race was run only if both happened: calls that worked inside, calls refused mid-swap.
    assert outcomes["worked"] and outcomes["refused"], outcomes


# -- a no-overwrite move racing with a file created at its destination -------------------------
_CREATOR = textwrap.dedent(
    """
    import os, sys
    held, work, lanes, log = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    mine = os.stat(held).st_ino
    report = os.open(log, os.O_WRONLY | os.O_APPEND)
    print("ready", flush=True)
    while True:
        for lane in range(lanes):
            destination, trash = f"{work}/dst{lane}", f"{work}/.trash{lane}"
            try:
                os.link(held, destination)  # the destination appears (atomically, with content) ...
            except FileExistsError:
                continue
            try:
                os.rename(destination, trash)  # ... and goes; if what left is not ours, ours was replaced
            except FileNotFoundError:
                continue  # the test removed it meanwhile
            if os.lstat(trash).st_ino != mine:
                os.write(report, b"X")
                os.rename(trash, destination)
            else:
                os.unlink(trash)
    """
)


async def test_a_no_overwrite_move_never_replaces_a_file_created_meanwhile(kernel, tmp_path):
    """Destinations blink in and out; a move without overwrite=True must never replace one."""
    work = Path(kernel.cwd) / f"clobber-{time.monotonic_ns()}"
    work.mkdir()
    held, log = tmp_path / "precious", tmp_path / "report"
    held.write_text("precious\n")
    log.write_bytes(b"")
    creator = subprocess.Popen(
        [sys.executable, "-c", _CREATOR, str(held), str(work), str(LANES), str(log)],
        stdout=subprocess.PIPE,
        text=True,
    )
    outcomes = {"moved": 0, "refused": 0}
    try:
        assert creator.stdout.readline().strip() == "ready"
        async with kernel.client() as client:
            for attempt in range(CLOBBER_ROUNDS):
                for lane in range(LANES):
                    (work / f"src{lane}").write_text(f"agent {attempt}\n")
                results = await asyncio.gather(
                    *(
                        client.call_tool(
                            "move_path", {"src": f"{work.name}/src{lane}", "dst": f"{work.name}/dst{lane}"}
                        )
                        for lane in range(LANES)
                    )
                )
                for result in results:
                    text = text_of(result)
                    if result.is_error:
                        assert "already exists" in text and "overwrite=True" in text, text
                    outcomes["refused" if result.is_error else "moved"] += 1
                stopped(creator)  # a replacement is noticed by the creator just after it happens
                assert log.read_bytes() == b"", (
                    f"round {attempt + 1}: a move replaced a file created meanwhile"
                )
                for lane, result in enumerate(results):
                    if not result.is_error:
                        (work / f"dst{lane}").unlink()
                creator.send_signal(signal.SIGCONT)
        assert creator.poll() is None, "the creating process died: the race was not run"
    finally:
        creator.send_signal(signal.SIGCONT)
        creator.kill()
        creator.wait(10)
    assert outcomes["moved"] and outcomes["refused"], outcomes


# -- hostile names ------------------------------------------------------------------------------
async def test_names_with_newlines_are_escaped_in_listings_and_still_readable(kernel):
    work = Path(kernel.cwd) / f"names-{time.monotonic_ns()}"
    work.mkdir()
    forged = "x\nfile             1  2024-01-01 00:00  passwd-forged"
    (work / forged).write_text("forged\n")
    (work / "bell\x07and\x1b[31mred").write_text("ansi\n")
    (work / "rtl\u202etxt.exe").write_text("bidi\n")
    (work / "plain.txt").write_text("plain\n")
    async with kernel.client() as client:
        listing = text_of(await client.call_tool("list_files", {"path": work.name}))
        entries = [line for line in listing.splitlines() if line.startswith(("file", "dir", "link", "other"))]
        assert len(entries) == 4, listing
        assert "passwd-forged" not in "".join(line for line in entries if "\\n" not in line), listing
        assert not any(ch in listing for ch in "\x07\x1b\u202e"), repr(listing)
        assert f"{work.name}/plain.txt" in listing
        quoted = next(line for line in entries if "\\n" in line)
        shown = quoted[quoted.index('"') :]
        import json

        assert json.loads(shown) == f"{work.name}/{forged}"  # the agent can pass it back as is
        read = await client.call_tool("read_file", {"path": json.loads(shown)})
        assert not read.is_error and "forged" in text_of(read), text_of(read)


@pytest.mark.parametrize(
    "name, arguments",
    [
        ("write_file", {"path": "{work}/evil\nname.txt", "content": "x"}),
        ("write_file", {"path": "{work}/dir\r/x.txt", "content": "x"}),
        ("make_directory", {"path": "{work}/esc\x1b[2J"}),
        ("make_directory", {"path": "{work}/rtl\u202eexe"}),
        ("move_path", {"src": "{work}/plain.txt", "dst": "{work}/moved\n.txt"}),
    ],
)
async def test_creating_a_name_with_a_newline_or_control_character_is_refused(kernel, name, arguments):
    work = Path(kernel.cwd) / f"create-{time.monotonic_ns()}"
    work.mkdir()
    (work / "plain.txt").write_text("plain\n")
    arguments = {key: value.replace("{work}", work.name) for key, value in arguments.items()}
    async with kernel.client() as client:
        result = await client.call_tool(name, arguments)
    assert result.is_error and "control character" in text_of(result), text_of(result)
    assert sorted(os.listdir(work)) == ["plain.txt"]
