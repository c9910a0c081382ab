"""Terminal tools against a real kernel over real HTTP: commands, pty processes, and no orphans."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import time
import uuid
import zipfile
from pathlib import Path

import psutil
import pytest
from conftest import KernelHarness, text_of

pytestmark = pytest.mark.compat

FULL = {"IPYMCP_PERMISSIONS": "full"}


@pytest.fixture(scope="module")
def kernel():
    harness = KernelHarness(env=FULL)
    harness.load_ipymcp()
    yield harness
    harness.shutdown()


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_all_dead(pids, timeout: float = 10.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        survivors = [pid for pid in pids if alive(pid)]
        if not survivors:
            return []
        time.sleep(0.1)
    return [pid for pid in pids if alive(pid)]


def family(pid: int) -> list[int]:
    process = psutil.Process(pid)
    return [pid, *(child.pid for child in process.children(recursive=True))]


async def wait_for_children(pid: int, count: int, timeout: float = 10.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = family(pid)
        if len(pids) >= count:
            return pids
        await asyncio.sleep(0.05)
    raise AssertionError(f"process {pid} did not start {count - 1} children: {family(pid)}")


async def test_run_command_returns_exit_code_and_combined_output(kernel):
    async with kernel.client() as c:
        ok = await c.call_tool("run_command", {"command": "echo out; echo err >&2; pwd"})
        failed = await c.call_tool("run_command", {"command": "echo partial; exit 3"})
    assert not ok.is_error
    lines = text_of(ok).splitlines()
    assert lines[0].startswith("exit code 0") and lines[1:3] == ["out", "err"]
    assert lines[3] == str(Path(kernel.cwd).resolve())  # starts in the workspace root
    assert text_of(failed).startswith("exit code 3") and "partial" in text_of(failed)
    assert failed.meta["exit_code"] == 3


async def test_run_command_long_output_keeps_head_and_tail(kernel):
    async with kernel.client() as c:
        result = await c.call_tool("run_command", {"command": "seq 1 200000"})
    text = text_of(result)
    assert text.splitlines()[1] == "1" and text.rstrip().endswith("200000")
    assert "bytes of output cut" in text and len(text) < 25_000


async def test_run_command_timeout_kills_the_whole_process_group(kernel):
    started = time.monotonic()
    async with kernel.client() as c:
        result = await c.call_tool(
            "run_command",
            {
                "command": "sleep 300 & echo child=$!; sh -c 'sleep 301' & echo grandchild=$!; wait",
                "timeout": 1.5,
            },
        )
    elapsed = time.monotonic() - started
    assert result.is_error and "timed out after 1.5 s" in text_of(result)
    pids = [int(p) for p in re.findall(r"child=(\d+)", text_of(result))] + [result.meta["pid"]]
    assert len(pids) == 3
    assert wait_all_dead(pids, timeout=3) == []
    assert elapsed < 10


async def test_run_command_reports_progress_while_it_runs(kernel):
    messages = []

    async def on_progress(progress, total, message):
        messages.append((progress, message))

    async with kernel.client() as c:
        result = await c.call_tool(
            "run_command",
            {"command": "echo first step; sleep 2.5; echo done"},
            progress_callback=on_progress,
        )
    assert text_of(result).startswith("exit code 0")
    assert len(messages) >= 2
    assert all(m.startswith("running for") for _, m in messages) and "first step" in messages[-1][1]
    assert [p for p, _ in messages] == sorted(p for p, _ in messages)


async def test_run_command_never_blocks_the_users_cells_nor_waits_for_them(kernel):
    async with kernel.client() as c:
        command = asyncio.create_task(c.call_tool("run_command", {"command": "sleep 3; echo slept"}))
        await asyncio.sleep(0.5)
        started = time.monotonic()
        assert (await asyncio.to_thread(kernel.run, "print(6 * 7)"))["stdout"] == "42\n"
        assert time.monotonic() - started < 2
        assert "slept" in text_of(await command)
        cell = kernel.send("import time; time.sleep(4)")
        await asyncio.sleep(0.5)
        started = time.monotonic()
        quick = await c.call_tool("run_command", {"command": "echo beside the cell"})
        assert "beside the cell" in text_of(quick) and time.monotonic() - started < 2.5
        await asyncio.to_thread(kernel.wait_idle, cell)


def _tiny_wheel(directory: Path, name: str) -> Path:
    files = {
        f"{name}/__init__.py": b"VALUE = 'installed by run_command'\n",
        f"{name}-0.1.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n".encode(),
        f"{name}-0.1.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{name}-0.1.dist-info/RECORD,,")
    files[f"{name}-0.1.dist-info/RECORD"] = ("\n".join(record) + "\n").encode()
    wheel = directory / f"{name}-0.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
    return wheel


async def test_pip_install_from_run_command_is_importable_from_execute(kernel, tmp_path):
    name = f"ipymcp_tiny_{uuid.uuid4().hex[:8]}"
    wheel = _tiny_wheel(tmp_path, name)
    async with kernel.client() as c:
        which = await c.call_tool(
            "run_command", {"command": "command -v python; python -c 'import sys; print(sys.prefix)'"}
        )
        kernel_prefix = kernel.run("import sys; print(sys.prefix)")["stdout"].strip()
        assert text_of(which).splitlines()[2] == kernel_prefix
        installed = await c.call_tool(
            "run_command", {"command": f"pip install --no-index --no-deps {wheel}", "timeout": 120}
        )
        assert text_of(installed).startswith("exit code 0"), text_of(installed)
        try:
            imported = await c.call_tool("execute", {"code": f"import {name}; print({name}.VALUE)"})
            assert text_of(imported) == "installed by run_command\n"
        finally:
            await c.call_tool("run_command", {"command": f"pip uninstall -y {name}", "timeout": 120})


async def read_until(client, process_id: int, needle: str, seconds: float = 15) -> str:
    """The output read_process returned until `needle` showed up (or `seconds` passed).

    One read may legitimately end between the terminal's echo and the program's answer on a
    loaded machine, so the tests keep reading instead of betting on one call.
    """
    deadline = time.monotonic() + seconds
    output = ""
    while needle not in output and time.monotonic() < deadline:
        read = text_of(await client.call_tool("read_process", {"id": process_id, "wait": 2}))
        # The output alone, without the notes that close each read: a prompt can come in two
        # reads (">" then ">> ").
        output += re.sub(r"\n?\[(process|no new output)[^\]]*\]\n?", "", read)
    return output


async def test_read_process_waits_for_a_burst_to_finish(kernel):
    async with kernel.client() as c:
        info = (
            await c.call_tool("start_process", {"command": "sleep 0.5; echo first; sleep 0.05; echo second"})
        ).structured_content
        burst = text_of(await c.call_tool("read_process", {"id": info["id"], "wait": 10}))
        await c.call_tool("stop_process", {"id": info["id"]})
    assert "first" in burst and "second" in burst, burst


async def test_read_process_shows_the_last_progress_state(kernel):
    # A progress line that ends in "\r" (curl, pip, tqdm) read as "" before: the last state was lost.
    async with kernel.client() as c:
        info = (await c.call_tool("start_process", {"command": "printf '10%%\\r20%%\\r'; sleep 30"})).structured_content
        text = await read_until(c, info["id"], "20%", seconds=10)
        await c.call_tool("stop_process", {"id": info["id"]})
    assert "20%" in text, text


async def test_background_process_is_read_incrementally_written_to_and_stopped(kernel):
    async with kernel.client() as c:
        started = await c.call_tool("start_process", {"command": "python -i -q"})
        info = started.structured_content
        pid = info["pid"]
        prompt = await read_until(c, info["id"], ">>>")
        assert ">>>" in prompt
        empty = await c.call_tool("read_process", {"id": info["id"]})
        assert text_of(empty).startswith("[no new output]") and f"(pid {pid}) is running" in text_of(empty)
        await c.call_tool("write_process", {"id": info["id"], "input": "print(6 * 7)\n"})
        assert "42" in await read_until(c, info["id"], "42")
        listed = (await c.call_tool("list_processes", {})).structured_content["processes"]
        assert [(p["id"], p["pid"], p["state"]) for p in listed] == [(info["id"], pid, "running")]
        stopped = await c.call_tool("stop_process", {"id": info["id"]})
        assert "[stopped:" in text_of(stopped)
        assert wait_all_dead([pid]) == []
        assert (await c.call_tool("list_processes", {})).structured_content["processes"] == []
        gone = await c.call_tool("read_process", {"id": info["id"]})
        assert gone.is_error and "no process with id" in text_of(gone)


async def test_cat_echoes_input_and_exit_codes_are_reported(kernel):
    async with kernel.client() as c:
        cat = (await c.call_tool("start_process", {"command": "cat"})).structured_content
        await c.call_tool("write_process", {"id": cat["id"], "input": "hello pty\n"})
        echoed = await c.call_tool("read_process", {"id": cat["id"], "wait": 5})
        assert "hello pty" in text_of(echoed)
        await c.call_tool("write_process", {"id": cat["id"], "input": "\x04"})  # Ctrl-D: end of input
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            result = await c.call_tool("read_process", {"id": cat["id"], "wait": 1})
            if "exited with code 0" in text_of(result):
                break
        assert "exited with code 0" in text_of(result)
        failing = (await c.call_tool("start_process", {"command": "echo bye; exit 7"})).structured_content
        deadline = time.monotonic() + 10
        text = ""
        while "exited" not in text and time.monotonic() < deadline:
            text += text_of(await c.call_tool("read_process", {"id": failing["id"], "wait": 1}))
        assert "bye" in text and "exited with code 7" in text
        refused = await c.call_tool("write_process", {"id": failing["id"], "input": "x\n"})
        assert refused.is_error and "exited with code 7" in text_of(refused)
        for process in (cat, failing):
            await c.call_tool("stop_process", {"id": process["id"]})


async def test_stop_process_kills_children_that_ignore_sigterm(kernel):
    async with kernel.client() as c:
        info = (
            await c.call_tool("start_process", {"command": "trap '' TERM; sleep 300 & sleep 301 & wait"})
        ).structured_content
        pids = await wait_for_children(info["pid"], 3)
        stopped = await c.call_tool("stop_process", {"id": info["id"]})
    assert "SIGKILL" in text_of(stopped) or "exited" in text_of(stopped)
    assert wait_all_dead(pids) == []


@pytest.mark.parametrize("ending", ["%unload_ext", "kernel shutdown"])
async def test_no_agent_process_survives_unload_or_kernel_shutdown(ending):
    harness = KernelHarness(env=FULL)
    pids: list[int] = []
    try:
        harness.load_ipymcp()
        kernel_pid = int(harness.run("import os; print(os.getpid())")["stdout"])
        client = harness.client()
        c = await client.__aenter__()
        info = (
            await c.call_tool("start_process", {"command": "sleep 500 & sleep 501 & wait"})
        ).structured_content
        pids += await wait_for_children(info["pid"], 3)
        command = asyncio.create_task(c.call_tool("run_command", {"command": "sleep 502", "timeout": 600}))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(pids) < 4:
            pids += [
                p.pid for p in psutil.Process(kernel_pid).children(recursive=True) if "502" in p.cmdline()
            ]
            await asyncio.sleep(0.05)
        assert len(pids) >= 4, "run_command did not start"
        if ending == "%unload_ext":
            await asyncio.to_thread(harness.run, "%unload_ext ipymcp")
        else:
            await asyncio.to_thread(harness.shutdown)
        assert wait_all_dead(pids) == [], [psutil.Process(p).cmdline() for p in pids if alive(p)]
        if ending == "%unload_ext":
            assert alive(kernel_pid)
        command.cancel()
        try:
            await command
            await client.__aexit__(None, None, None)
        except BaseException:  # noqa: BLE001 - the server went away under the open call
            pass
    finally:
        if ending == "%unload_ext":
            harness.shutdown()


async def test_terminal_tools_need_the_full_level_and_declare_annotations(kernel):
    async with kernel.client() as c:
        tools = {t.name: t for t in (await c.list_tools()).tools}
    assert tools["run_command"].annotations.destructive_hint is True
    assert tools["list_processes"].annotations.read_only_hint is True
    assert "kernel's own interpreter" in tools["run_command"].description
    levels = kernel.run(
        "import ipymcp._state as _s\n"
        "print(sorted({s.level for n, s in _s.runtime.toolbox.specs.items() if n.endswith(('_process', '_processes', '_command'))})); del _s"
    )["stdout"]
    assert levels.strip() == "['full']"


async def test_commands_start_in_a_directory_under_the_root_only(kernel):
    (kernel.cwd / "subdir").mkdir(exist_ok=True)
    async with kernel.client() as c:
        inside = await c.call_tool("run_command", {"command": "pwd", "cwd": "subdir"})
        outside = await c.call_tool("run_command", {"command": "pwd", "cwd": "/"})
        process = await c.call_tool("start_process", {"command": "pwd", "cwd": ".."})
    assert text_of(inside).splitlines()[1] == str((kernel.cwd / "subdir").resolve())
    assert outside.is_error and "outside the workspace root" in text_of(outside)
    assert process.is_error and "outside the workspace root" in text_of(process)
