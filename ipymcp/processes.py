"""Shell commands and background processes started by the agent, and how they are all ended.

Each command or process runs in a session of its own (its own process group), so a timeout or a
stop kills the whole group, grandchildren included, and the user's Ctrl-C in the notebook never
reaches it. Nothing here runs on the kernel's main thread: commands are waited for from the
server's event loop and each background process has a reader thread feeding a bounded buffer.
``python`` and ``pip`` resolve to the kernel's own interpreter: its bin directory comes first on
PATH, so ``pip install x`` installs where ``import x`` in the kernel looks.
"""

from __future__ import annotations

import atexit
import codecs
import datetime as _dt
import importlib
import itertools
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.to_thread

from .text import HeadTail, clean_terminal_text, cut_marker

_READ_CHUNK = 65536
# run_command reports progress (its latest line) about this often.
PROGRESS_EVERY = 1.0


class ProcessError(Exception):
    """A refusal or failure written for the agent: shown as is."""


def user_shell() -> str:
    shell = os.environ.get("SHELL") or ""
    return shell if shell and os.access(shell, os.X_OK) else "/bin/sh"


def command_environment() -> dict[str, str]:
    """The kernel's environment with its interpreter first on PATH and no pagers or colours."""
    env = dict(os.environ)
    bin_dir = os.path.dirname(sys.executable)
    env["PATH"] = os.pathsep.join(
        [bin_dir, *[p for p in env.get("PATH", "").split(os.pathsep) if p and p != bin_dir]]
    )
    env.update({"TERM": "dumb", "PAGER": "cat", "GIT_PAGER": "cat", "PYTHONUNBUFFERED": "1", "NO_COLOR": "1"})
    return env


def kill_group(pgid: int, sig: int) -> bool:
    """Signal a process group; False when it no longer exists."""
    try:
        os.killpg(pgid, sig)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def group_exists(pgid: int) -> bool:
    """Whether a live (not zombie) process is left in the group.

    Orphans of a killed shell linger as zombies until init reaps them (about once a second in
    some containers); they still count for killpg(pgid, 0) but can do no harm.
    """
    if not kill_group(pgid, 0):
        return False
    try:
        entries = os.listdir("/proc")
    except OSError:
        return True
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat_file:
                data = stat_file.read()
        except OSError:
            continue
        fields = data[data.rfind(b")") + 2 :].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != b"Z":
            return True
    return False


class CommandOutput:
    """A command's output within a budget: its first and last bytes (two thirds, one third), the
    total seen, and the latest line (for progress notifications)."""

    def __init__(self, budget: int):
        head = max(100, budget * 2 // 3)
        self.kept: HeadTail[bytes] = HeadTail(head, max(100, budget - head))
        self.last_line = b""
        self.lock = threading.Lock()

    def add(self, data: bytes) -> None:
        with self.lock:
            lines = (self.last_line + data[-400:]).rstrip(b"\r\n").rsplit(b"\n", 1)
            self.last_line = lines[-1][-200:]
            self.kept.add(data)

    def text(self) -> str:
        with self.lock:
            head, tail, cut = self.kept.head(), self.kept.tail(), self.kept.cut
        if not cut:
            return clean_terminal_text((head + tail).decode("utf-8", "replace"))
        marker = cut_marker(cut, "bytes of output")
        return clean_terminal_text(head.decode("utf-8", "replace") + marker + tail.decode("utf-8", "replace"))

    def latest_line(self) -> str:
        return clean_terminal_text(self.last_line.decode("utf-8", "replace")).strip()


@dataclass
class CommandRun:
    """One run_command in flight."""

    command: str
    process: subprocess.Popen
    output: CommandOutput
    reader: threading.Thread
    started: float = field(default_factory=time.monotonic)
    timed_out: bool = False
    duration: float = 0.0

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def exit_code(self) -> int | None:
        """The shell's exit status; negative: killed by that signal."""
        return self.process.returncode


class BackgroundProcess:
    """A process in a pseudo-terminal with a reader thread that keeps its unread output."""

    def __init__(self, id: int, command: str, cwd: str, buffer_bytes: int):
        from ptyprocess import PtyProcess

        self.id = id
        self.command = command
        self.cwd = cwd
        self.buffer_bytes = buffer_bytes
        self.pty = PtyProcess.spawn(
            [user_shell(), "-c", command], cwd=cwd, env=command_environment(), dimensions=(40, 200)
        )
        self.pid: int = self.pty.pid
        self.started = time.time()
        self.exit_code: int | None = None
        self.signal: int | None = None
        self.dropped = 0
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._received = 0  # bytes ever read: how wait_for_output tells that more arrived
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._changed = threading.Condition()
        self._eof = False
        self._reaped = False
        self._status_lock = threading.Lock()
        self.reader = threading.Thread(target=self._read_loop, name=f"ipymcp-process-{id}", daemon=True)
        self.reader.start()

    # -- state -------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        self.poll()
        return not self._reaped

    def poll(self) -> None:
        """Collect the exit status if the shell has exited (never blocks)."""
        with self._status_lock:
            if self._reaped:
                return
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                self._reaped = True
                return
            if pid == 0:
                return
            self._reaped = True
            if os.WIFEXITED(status):
                self.exit_code = os.WEXITSTATUS(status)
            elif os.WIFSIGNALED(status):
                self.signal = os.WTERMSIG(status)

    def describe_state(self) -> str:
        if self.running:
            return f"process {self.id} (pid {self.pid}) is running"
        if self.signal is not None:
            return f"process {self.id} was killed by {signal_name(self.signal)}"
        return f"process {self.id} exited with code {self.exit_code}"

    @property
    def unread_bytes(self) -> int:
        with self._changed:
            return self._size

    # -- output ------------------------------------------------------------------------------
    def _read_loop(self) -> None:
        fd = self.pty.fd
        while True:
            try:
                ready, _, _ = select.select([fd], [], [], 0.25)
            except (OSError, ValueError):
                break
            if not ready:
                self.poll()
                continue
            try:
                data = os.read(fd, _READ_CHUNK)
            except OSError:  # EIO: every holder of the terminal has closed it
                data = b""
            if not data:
                break
            with self._changed:
                self._chunks.append(data)
                self._size += len(data)
                self._received += len(data)
                while self._size > self.buffer_bytes and len(self._chunks) > 1:
                    removed = self._chunks.popleft()
                    self._size -= len(removed)
                    self.dropped += len(removed)
                self._changed.notify_all()
        deadline = time.monotonic() + 2.0
        while not self._reaped and time.monotonic() < deadline:
            self.poll()
            time.sleep(0.02)
        with self._changed:
            self._eof = True
            self._changed.notify_all()

    def has_news(self) -> bool:
        with self._changed:
            return self._size > 0 or self._eof

    def take_output(self) -> tuple[str, int]:
        """The unread output as text, and how many bytes were dropped since the last read."""
        with self._changed:
            data = b"".join(self._chunks)
            self._chunks.clear()
            self._size = 0
            dropped, self.dropped = self.dropped, 0
        return self._decoder.decode(data), dropped

    def wait_for_output(self, timeout: float, settle: float = 0.3) -> None:
        """Wait up to `timeout` for output, then until it has been quiet for `settle` seconds.

        The settle matters for interactive programs: the terminal echoes typed input at once, and
        the program's answer follows a moment later; returning on the echo alone would hand the
        agent half a reply. Never waits past `timeout` in total.
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            if not self._changed.wait_for(lambda: self._size > 0 or self._eof, timeout):
                return
            while not self._eof:
                seen = self._received
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                if not self._changed.wait_for(
                    lambda seen=seen: self._received != seen or self._eof, min(settle, remaining)
                ):
                    return

    def write(self, text: str) -> int:
        if not self.running:
            raise ProcessError(
                f"{self.describe_state()}; it cannot take input (start it again with start_process)"
            )
        data = text.encode("utf-8")
        view = memoryview(data)
        while view:
            view = view[os.write(self.pty.fd, view) :]
        return len(data)

    # -- ending ------------------------------------------------------------------------------
    def signal_group(self, sig: int) -> None:
        if not kill_group(self.pid, sig) and not self._reaped:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def finish(self) -> None:
        """Close the terminal and reap; the group must already have been killed."""
        self.reader.join(timeout=2.0)
        try:
            self.pty.fileobj.close()
        except OSError:
            pass
        self.pty.closed = True  # its __del__ must not signal a pid that may be reused
        self.poll()
        with self._status_lock:
            if not self._reaped:
                try:
                    os.waitpid(self.pid, 0)
                except ChildProcessError:
                    pass
                self._reaped = True

    def info(self) -> dict[str, Any]:
        running = self.running
        info: dict[str, Any] = {
            "id": self.id,
            "pid": self.pid,
            "command": self.command,
            "cwd": self.cwd,
            "state": "running" if running else "exited",
            "started": _dt.datetime.fromtimestamp(self.started).isoformat(timespec="seconds"),
            "unread_bytes": self.unread_bytes,
        }
        if not running:
            info["exit_code"] = self.exit_code
            if self.signal is not None:
                info["signal"] = self.signal
        return info


class Processes:
    """Every command and process the agent started in this kernel, and the switch that ends them."""

    def __init__(self, buffer_bytes: int = 1_000_000, stop_grace: float = 2.0, max_processes: int = 16):
        self.buffer_bytes = buffer_bytes
        self.stop_grace = stop_grace
        self.max_processes = max_processes
        self.processes: dict[int, BackgroundProcess] = {}
        self.commands: dict[int, CommandRun] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._closed = False
        # A safety net for an interpreter exit that skips ipymcp's own shutdown path.
        atexit.register(self.close)

    # -- run_command -------------------------------------------------------------------------
    async def run_command(
        self,
        command: str,
        cwd: str,
        timeout: float,
        budget: int,
        on_tick: Callable[[float, str], Awaitable[None]] | None = None,
    ) -> CommandRun:
        """Run ``command`` through the user's shell, waiting on the event loop (never a thread) up
        to ``timeout`` s; ``on_tick(elapsed, latest_line)`` about once a second. On timeout, and
        when the caller is cancelled, the command and everything it started are killed: it never
        outlives the call. ``budget``: characters of output kept (head and tail)."""
        run = self.start_command(command, cwd, budget)
        next_report, pause = run.started + PROGRESS_EVERY, 0.01
        try:
            while run.process.poll() is None:
                now = time.monotonic()
                if now - run.started >= timeout:
                    run.timed_out = True
                    break
                if on_tick is not None and now >= next_report:
                    next_report = now + PROGRESS_EVERY
                    await on_tick(now - run.started, run.output.latest_line())
                await anyio.sleep(pause)
                pause = min(0.25, pause * 1.5)
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self.end_command, run, run.process.poll() is None)
        run.duration = time.monotonic() - run.started
        return run

    def start_command(self, command: str, cwd: str, budget: int) -> CommandRun:
        self._check_open()
        process = subprocess.Popen(
            [user_shell(), "-c", command],
            cwd=cwd,
            env=command_environment(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
        output = CommandOutput(budget)
        reader = threading.Thread(
            target=_drain, args=(process.stdout, output), daemon=True, name="ipymcp-command"
        )
        reader.start()
        run = CommandRun(command, process, output, reader)
        with self._lock:
            self.commands[process.pid] = run
        return run

    def end_command(self, run: CommandRun, kill: bool) -> None:
        """After the shell exited (or on timeout/cancel with kill=True): no process of it may remain."""
        if kill or group_exists(run.pid):
            self._terminate_groups(
                [run.pid], lambda: run.process.poll() is not None and not group_exists(run.pid)
            )
        try:
            run.process.wait(timeout=self.stop_grace + 1)
        except subprocess.TimeoutExpired:
            pass
        run.reader.join(timeout=1.0)
        if run.process.stdout is not None:
            run.process.stdout.close()
        with self._lock:
            self.commands.pop(run.pid, None)
        importlib.invalidate_caches()  # a `pip install` just ran: let the kernel's import see it

    # -- background processes ----------------------------------------------------------------
    def start_process(self, command: str, cwd: str) -> BackgroundProcess:
        self._check_open()
        with self._lock:
            running = [p for p in self.processes.values() if p.running]
            if len(running) >= self.max_processes:
                raise ProcessError(
                    f"{len(running)} background processes are running (max_processes={self.max_processes}); "
                    "stop_process one you no longer need, or raise c.IPyMCP.max_processes"
                )
            process_id = next(self._ids)
        process = BackgroundProcess(process_id, command, cwd, self.buffer_bytes)
        with self._lock:
            self.processes[process_id] = process
        return process

    def get(self, process_id: int) -> BackgroundProcess:
        process = self.processes.get(process_id)
        if process is None:
            known = ", ".join(str(i) for i in self.processes) or "none"
            raise ProcessError(
                f"no process with id {process_id} (known: {known}); list_processes shows them"
            )
        return process

    def stop_process(self, process_id: int) -> tuple[BackgroundProcess, str]:
        process = self.get(process_id)
        self._terminate_groups([process.pid], lambda: not process.running and not group_exists(process.pid))
        process.finish()
        text, _ = process.take_output()
        with self._lock:
            self.processes.pop(process_id, None)
        return process, text

    # -- ending everything -------------------------------------------------------------------
    def _terminate_groups(self, pgids: list[int], done: Any = None, grace: float | None = None) -> None:
        """SIGTERM every group, wait up to the grace period, then SIGKILL what is left."""
        for pgid in pgids:
            kill_group(pgid, signal.SIGTERM)
        deadline = time.monotonic() + (self.stop_grace if grace is None else grace)
        while time.monotonic() < deadline:
            if done is not None and done():
                return
            if done is None and not any(group_exists(pgid) for pgid in pgids):
                return
            time.sleep(0.05)
        for pgid in pgids:
            kill_group(pgid, signal.SIGKILL)

    def stop_all(self) -> int:
        """End every process and command the agent started so far, and keep accepting new ones
        (token rotation: nothing the old token started may outlive it). Returns how many ended."""
        with self._lock:
            processes = list(self.processes.values())
            commands = list(self.commands.values())
            self.processes.clear()
            self.commands.clear()
        self._end(processes, commands)
        return len(processes) + len(commands)

    def close(self) -> None:
        """End every process and command the agent started (unload, kernel shutdown, exit)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            processes = list(self.processes.values())
            commands = list(self.commands.values())
            self.processes.clear()
            self.commands.clear()
        self._end(processes, commands)
        try:
            atexit.unregister(self.close)
        except Exception:  # noqa: BLE001
            pass

    def _end(self, processes: list[BackgroundProcess], commands: list[CommandRun]) -> None:
        pgids = [p.pid for p in processes] + [c.pid for c in commands]
        if not pgids:
            return
        for process in processes:
            process.signal_group(signal.SIGTERM)

        def all_gone() -> bool:
            for process in processes:
                process.poll()
            for command in commands:
                command.process.poll()
            return not any(group_exists(pgid) for pgid in pgids)

        self._terminate_groups(pgids, all_gone, grace=min(self.stop_grace, 1.0))
        for process in processes:
            process.finish()
        for command in commands:
            try:
                command.process.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                pass

    def _check_open(self) -> None:
        if self._closed:
            raise ProcessError("ipymcp is shutting down; no new commands")


def _drain(stream: Any, output: CommandOutput) -> None:
    fd = stream.fileno()
    while True:
        try:
            data = os.read(fd, _READ_CHUNK)
        except OSError:
            return
        if not data:
            return
        output.add(data)
