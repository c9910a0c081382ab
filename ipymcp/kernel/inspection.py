"""Inspection's own small pool of threads, with a time budget per call.

Inspection answers while the user's cell runs, so it runs on threads beside the server's event
loop, never on it: ``kernel_status`` and ``interrupt`` answer from the loop whatever inspection
does. A call that overruns its budget cannot be stopped (Python threads cannot be killed): it
keeps its thread until it returns, and the agent is told so. When every thread is held that way,
new calls are refused at once instead of queueing behind them.

Not ``concurrent.futures.ThreadPoolExecutor``: its threads are joined at interpreter exit, so a
preview stuck in library code would hang the kernel's shutdown. These threads are daemons.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


class InspectionTimeout(Exception):
    """Inspection did not answer within its budget, or could not start; the message says which."""


@dataclass(eq=False)
class _Job:
    fn: Callable[[], Any]
    description: str
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)
    started: float | None = None
    abandoned: bool = False  # its caller stopped waiting; it still holds its thread


class InspectionPool:
    def __init__(self, threads: int, charge: Callable[[float], None] | None = None):
        self.size = max(1, int(threads))
        self._charge = charge
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._workers: list[threading.Thread] = []
        self._running: list[_Job] = []
        self._lock = threading.Lock()

    async def run(self, fn: Callable[[], Any], description: str, timeout: float, what: str = "the preview") -> Any:
        """``fn()`` on an inspection thread; its result, or ``InspectionTimeout`` after ``timeout`` s."""
        held = self.abandoned()
        if len(held) >= self.size:
            raise InspectionTimeout(
                f"all {self.size} inspection threads are held by earlier calls that outlived their time budget "
                f"({_list(held)}); they keep them until they return. Nothing was inspected: use execute "
                "instead, or retry later."
            )
        job = _Job(fn, description)
        self._start_workers()
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        job.future.add_done_callback(lambda done: _wake(loop, waiter, done))
        self._jobs.put(job)
        try:
            return await asyncio.wait_for(waiter, timeout)
        except asyncio.TimeoutError:
            if job.future.cancel():
                raise InspectionTimeout(
                    f"all {self.size} inspection threads stayed busy for {timeout:g} s ({_list(self.running())}); "
                    "nothing was inspected. Retry in a moment."
                ) from None
            job.abandoned = True
            raise InspectionTimeout(
                f"{what} took longer than {timeout:g} s (c.IPyMCP.inspection_timeout); it goes on in the "
                f"background and holds one of the {self.size} inspection threads until it returns "
                f"({len(self.abandoned())} held now). Ask for less (a path such as df.columns or arr[:10], or "
                "list_variables with a pattern), or compute it with execute."
            ) from None
        except asyncio.CancelledError:
            if not job.future.cancel():
                job.abandoned = True
            raise

    def running(self) -> list[_Job]:
        with self._lock:
            return list(self._running)

    def abandoned(self) -> list[_Job]:
        return [job for job in self.running() if job.abandoned]

    def close(self) -> None:
        """Let idle threads end; a thread still held by a call ends when that call returns."""
        for _ in self._workers:
            self._jobs.put(None)

    def _start_workers(self) -> None:
        with self._lock:
            while len(self._workers) < self.size:
                worker = threading.Thread(target=self._work, name="ipymcp-inspection", daemon=True)
                self._workers.append(worker)
                worker.start()

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            if not job.future.set_running_or_notify_cancel():
                continue
            job.started = time.monotonic()
            with self._lock:
                self._running.append(job)
            cpu = time.thread_time()
            try:
                job.future.set_result(job.fn())
            except BaseException as exc:  # noqa: BLE001 - the caller gets it
                job.future.set_exception(exc)
            finally:
                with self._lock:
                    self._running.remove(job)
                if self._charge is not None:
                    self._charge(time.thread_time() - cpu)


def _wake(loop: asyncio.AbstractEventLoop, waiter: asyncio.Future, done: concurrent.futures.Future) -> None:
    def transfer() -> None:
        if waiter.done():
            return  # the caller stopped waiting
        if done.cancelled():
            waiter.cancel()
        elif done.exception() is not None:
            waiter.set_exception(done.exception())
        else:
            waiter.set_result(done.result())

    try:
        loop.call_soon_threadsafe(transfer)
    except RuntimeError:
        pass  # the server's loop has closed; nobody is waiting


def _list(jobs: list[_Job]) -> str:
    now = time.monotonic()
    shown = [f"{job.description} running for {now - (job.started or now):.0f} s" for job in jobs[:3]]
    return ", ".join(shown) + (", …" if len(jobs) > 3 else "") if shown else "none running"
