"""Run agent work on the kernel's main thread, queued like a cell, never beside one.

Why not ``asyncio.run_coroutine_threadsafe``: cancelling its future after a timeout does not stop
the job from running later. We resolve our own ``concurrent.futures.Future`` inside the job and
call ``set_running_or_notify_cancel()`` first, so a job whose caller gave up never starts.

Queueing: ipykernel 7 serialises main-shell requests with ``kernel._main_asyncio_lock`` (async
cells included); ipykernel 6 with its dispatch queue (``schedule_dispatch``). A plain
``add_callback`` would run agent code in the middle of an async user cell.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import itertools
import os
import signal
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

_job_ids = itertools.count(1)

# After its time ran out, a running job gets this long to stop after each interrupt.
INTERRUPT_GRACE = 3.0


class JobNotRun(Exception):
    """The job was still queued when its time ran out: it was cancelled and never runs."""


class JobDidNotStop(Exception):
    """The job ran out of time and went on running through both interrupts."""


@dataclass
class AgentJob:
    """One unit of agent work; ``future`` resolves with its result."""

    description: str
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)
    id: int = field(default_factory=lambda: next(_job_ids))
    submitted: float = field(default_factory=time.monotonic)
    started: float | None = None
    finished: float | None = None
    interrupted: bool = False
    # Filenames of the code the agent is running: a SIGINT that lands outside them (e.g. while
    # an awaiting job is suspended in the event loop) must cancel the task, not raise there.
    code_filenames: set[str] = field(default_factory=set)
    task: asyncio.Task | None = None

    @property
    def running(self) -> bool:
        return self.started is not None and self.finished is None

    def ran_out_of(self, timeout: float) -> bool:
        """Whether it ended because its time ran out (not by an interrupt from elsewhere)."""
        return self.finished is not None and self.started is not None and self.finished - self.submitted >= timeout


class MainThreadExecutor:
    def __init__(self, shell: Any, kernel: Any):
        self.shell = shell
        self.kernel = kernel
        self.current: AgentJob | None = None
        self.queued: list[AgentJob] = []
        self._lock = threading.Lock()
        self._nudger: Any = None
        self._abort_queues: Any = None

    # -- the kernel's own queue ----------------------------------------------------------------
    def install(self) -> None:
        """On ipykernel 6.9 to 6.29.2 (Colab pins 6.17.1), end stop-on-error as 6.29.3 does.

        After an error reply those versions keep aborting execute requests until one more turn
        of the event loop. Our server thread competes for the GIL, so that turn comes late and a
        cell the user sent after seeing the error was aborted (1 to 9 in 40 tries right after
        %load_ext). ipykernel 6.29.3 (PR #1212) queues the end of the abort right behind the
        requests already received; the same few lines are installed here until unload.
        """
        kernel = self.kernel
        if self._abort_queues is not None or not _abort_ends_a_loop_turn_late(kernel):
            return
        original = kernel._abort_queues

        def _abort_queues(*args: Any, **kwargs: Any) -> Any:
            if args or kwargs or kernel.stop_on_error_timeout:
                return original(*args, **kwargs)
            kernel._aborting = True
            kernel.log.info("Aborting queue")
            kernel.shell_stream.flush()  # every request already waiting is aborted

            async def stop_aborting() -> None:
                kernel.log.info("Finishing abort")
                kernel._aborting = False

            kernel.schedule_dispatch(stop_aborting)

        kernel._abort_queues = _abort_queues
        self._abort_queues = _abort_queues

    # -- submitting ---------------------------------------------------------------------------
    def submit(self, work: Callable[[AgentJob], Awaitable[Any]], description: str) -> AgentJob:
        """Queue ``await work(job)`` on the main thread; returns at once with the job."""
        job = AgentJob(description)
        with self._lock:
            self.queued.append(job)

        async def run_job() -> None:
            lock = getattr(self.kernel, "_main_asyncio_lock", None)
            if lock is not None:
                async with lock:
                    await self._run(job, work)
            else:
                await self._run(job, work)

        schedule_dispatch = getattr(self.kernel, "schedule_dispatch", None)
        if getattr(self.kernel, "_main_asyncio_lock", None) is None and schedule_dispatch is not None:
            self.kernel.io_loop.add_callback(schedule_dispatch, run_job)  # ipykernel 6
        else:
            self.kernel.io_loop.add_callback(run_job)  # tornado runs the returned coroutine
        if getattr(self.kernel, "eventloop", None) is not None:
            threading.Thread(target=self._nudge_gui_loop, args=(job,), daemon=True).start()
        return job

    async def _run(self, job: AgentJob, work: Callable[[AgentJob], Awaitable[Any]]) -> None:
        with self._lock:
            if job in self.queued:
                self.queued.remove(job)
        if not job.future.set_running_or_notify_cancel():
            return  # the caller timed out before we got here: never run
        job.task = asyncio.current_task()
        job.started = time.monotonic()
        with self._lock:
            self.current = job
        saved = signal.getsignal(signal.SIGINT)
        # Outside a shell request the kernel ignores SIGINT; install our own so interrupt()
        # and the user's Stop button reach agent code.
        signal.signal(signal.SIGINT, self._make_sigint_handler(job))
        try:
            result = await work(job)
        except BaseException as exc:  # noqa: BLE001 - delivered to the waiting caller
            job.finished = time.monotonic()
            job.future.set_exception(exc)
        else:
            job.finished = time.monotonic()
            job.future.set_result(result)
        finally:
            with self._lock:
                self.current = None
                signal.signal(signal.SIGINT, saved if saved is not None else signal.SIG_IGN)
            _clear_async_exception(threading.main_thread().ident)

    def _make_sigint_handler(self, job: AgentJob) -> Callable:
        def handler(signum: int, frame: Any) -> None:
            job.interrupted = True
            f = frame
            while f is not None:
                if f.f_code.co_filename in job.code_filenames:
                    raise KeyboardInterrupt
                f = f.f_back
            # Not inside agent code (suspended at an await): cancel the task instead of raising
            # inside the event loop's own machinery.
            if job.task is not None:
                loop = job.task.get_loop()
                loop.call_soon_threadsafe(job.task.cancel)

        return handler

    # -- waiting -------------------------------------------------------------------------------
    async def wait(
        self,
        job: AgentJob,
        timeout: float,
        on_tick: Callable[[AgentJob, float], Awaitable[None]] | None = None,
        waiting_for: Callable[[], str] = lambda: "the kernel's main thread is busy",
    ) -> Any:
        """The result of ``job``, from another event loop, waiting up to ``timeout`` s in all
        (``on_tick(job, elapsed)`` about once a second: progress notifications).

        When the time runs out, a job still queued is cancelled and ``JobNotRun`` raised (it never
        runs; ``waiting_for()`` says what it waited for); a running one is interrupted with
        KeyboardInterrupt, then with an asynchronous KeyboardInterrupt, ``INTERRUPT_GRACE`` s each,
        and what it returned is returned (``JobDidNotStop`` if it runs on). If the waiting caller
        is cancelled (the client cancelled the call), the job is cancelled or interrupted too: the
        agent's code never outlives its call.
        """
        try:
            if not await _finished_within(job, timeout, on_tick):
                if self.cancel(job):
                    raise JobNotRun(
                        f"kernel busy: {waiting_for()}; your code did not run. Retry later, use "
                        "list_variables / inspect_variable (they answer now), or call interrupt(target='user') "
                        "if the user asked you to stop their cell."
                    )
                job.interrupted = True
                self.interrupt(job)
                if not await _finished_within(job, INTERRUPT_GRACE):
                    self.force_interrupt(job)
                    if not await _finished_within(job, INTERRUPT_GRACE):
                        raise JobDidNotStop(
                            f"timed out after {timeout:g} s and the code did not stop on KeyboardInterrupt "
                            "(a blocking call?); it is still running on the kernel's main thread."
                        )
        except asyncio.CancelledError:
            if not self.cancel(job):
                job.interrupted = True
                self.interrupt(job)
            raise
        return job.future.result()

    # -- interrupting --------------------------------------------------------------------------
    def interrupt(self, job: AgentJob | None = None) -> bool:
        """Interrupt ``job`` (default: the running one) if, and only if, it is running now.

        The signal is sent while holding the lock the job's cleanup takes, so it can never hit
        a user cell that starts afterwards: by then our handler is gone and SIGINT is ignored.
        """
        with self._lock:
            current = self.current
            if current is None or (job is not None and current is not job):
                return False
            current.interrupted = True
            os.kill(os.getpid(), signal.SIGINT)
        return True

    def force_interrupt(self, job: AgentJob) -> bool:
        """Last resort for a pure-Python loop that swallowed KeyboardInterrupt: async exception."""
        with self._lock:
            if self.current is not job:
                return False
            ident = threading.main_thread().ident
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), ctypes.py_object(KeyboardInterrupt))
        return True

    def cancel(self, job: AgentJob) -> bool:
        """Cancel a job that has not started; it is then guaranteed never to run."""
        cancelled = job.future.cancel()
        if cancelled:
            with self._lock:
                if job in self.queued:
                    self.queued.remove(job)
        return cancelled

    # -- GUI event loops -----------------------------------------------------------------------
    def _nudge_gui_loop(self, job: AgentJob) -> None:
        """Under %gui / %matplotlib qt|tk the main thread sits in the GUI mainloop and only
        returns to asyncio when a shell message arrives; send a harmless kernel_info_request."""
        deadline = time.monotonic() + 5
        delay = 0.02
        while time.monotonic() < deadline and job.started is None and not job.future.done():
            time.sleep(delay)
            delay = 0.2
            if job.started is not None or job.future.done():
                return
            try:
                if self._nudger is None:
                    import ipykernel.connect
                    from jupyter_client import BlockingKernelClient

                    client = BlockingKernelClient()
                    client.load_connection_file(ipykernel.connect.get_connection_file())
                    client.start_channels(iopub=False, stdin=False, hb=False, control=False)
                    self._nudger = client
                self._nudger.kernel_info()
            except Exception:  # noqa: BLE001 - best effort
                return

    def close(self) -> None:
        if self._abort_queues is not None and vars(self.kernel).get("_abort_queues") is self._abort_queues:
            del self.kernel._abort_queues
        self._abort_queues = None
        if self._nudger is not None:
            try:
                self._nudger.stop_channels()
            except Exception:  # noqa: BLE001
                pass
            self._nudger = None


def _abort_ends_a_loop_turn_late(kernel: Any) -> bool:
    try:
        import ipykernel
        from packaging.version import Version

        version = Version(ipykernel.__version__)
    except Exception:  # noqa: BLE001 - unknown kernel: leave it as it is
        return False
    needed = ("_abort_queues", "schedule_dispatch", "shell_stream", "stop_on_error_timeout")
    return Version("6.9") <= version < Version("6.29.3") and all(hasattr(kernel, name) for name in needed)


def _clear_async_exception(ident: int | None) -> None:
    if ident is not None:
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), None)


async def _finished_within(
    job: AgentJob,
    timeout: float,
    on_tick: Callable[[AgentJob, float], Awaitable[None]] | None = None,
    tick: float = 1.0,
) -> bool:
    """Wait up to ``timeout`` s for ``job`` from another event loop; True if it finished.

    ``on_tick`` is awaited about once a ``tick`` (progress notifications double as keepalives).
    """
    waiter = asyncio.wrap_future(job.future)
    deadline = time.monotonic() + timeout
    first_tick = True
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return job.future.done()
        step = min(remaining, tick if not first_tick else min(tick, 0.5))
        done, _ = await asyncio.wait({waiter}, timeout=step)
        if done:
            return True
        first_tick = False
        if on_tick is not None:
            await on_tick(job, time.monotonic() - job.submitted)
