"""Limits that keep a flood of agent calls from hurting the user.

``CallLimits`` caps the calls in progress (all clients together) and the agent executions
waiting for the kernel's main thread. The server shares the kernel process, and its GIL, with the user's cell: a thread that serves
calls nonstop takes CPU the cell would have had. ``CpuPacer`` meters the CPU the server's own
threads burn (event loop and tool worker threads, via ``time.thread_time``) and, while a user
cell runs, delays the next call until that stays under a share of one core. Idle kernels are
not paced. The delay is an ``asyncio.sleep``: waiting calls hold no GIL.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

# CPU-seconds of credit a burst may use before pacing starts.
BURST = 0.02
MAX_DELAY = 2.0
# Charged per call on top of the measured CPU: each call wakes the server thread several times,
# and each wake-up takes the GIL from the user's cell (a hand-off thread_time does not see).
PER_CALL = 0.001


class CpuPacer:
    def __init__(self, share: float, busy: Callable[[], bool]):
        self.share = max(0.0, float(share))
        self.busy = busy
        self._credit = BURST
        self._last_wall = time.monotonic()
        self._last_loop_cpu: float | None = None
        self._was_busy = False
        self._worker_cpu = 0.0
        self._worker_lock = threading.Lock()
        self._lock: asyncio.Lock | None = None
        self.delayed_s = 0.0  # total time calls were held back (reported by the benchmark)

    def charge(self, cpu_seconds: float) -> None:
        """Account CPU burnt by a tool's worker thread (called from that thread)."""
        with self._worker_lock:
            self._worker_cpu += cpu_seconds

    def _settle(self) -> None:
        """Bring the credit up to date; must run on the server loop's thread."""
        now, loop_cpu = time.monotonic(), time.thread_time()
        with self._worker_lock:
            worker, self._worker_cpu = self._worker_cpu, 0.0
        spent = worker + (loop_cpu - self._last_loop_cpu if self._last_loop_cpu is not None else 0.0)
        if self._was_busy:
            self._credit = min(BURST, self._credit + self.share * (now - self._last_wall)) - spent
        else:
            # CPU spent while no user cell ran cost the user nothing: start the cell with full credit.
            self._credit = BURST
        self._last_wall, self._last_loop_cpu = now, loop_cpu
        self._was_busy = self.busy()

    async def pace(self) -> None:
        """Wait, if the user's cell is running and the server has used its CPU share."""
        if self.share <= 0:
            return
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:  # one at a time, or every waiter would wake on the same credit
            self._settle()
            if self.busy():
                self._credit -= PER_CALL
            waited = 0.0
            while self.busy() and self._credit < 0 and waited < MAX_DELAY:
                delay = min(-self._credit / self.share, MAX_DELAY - waited, 0.25)
                await asyncio.sleep(delay)
                waited += delay
                self._settle()
            if not self.busy():
                self._credit = max(self._credit, BURST)
            self.delayed_s += waited


class LimitReached(Exception):
    """A call refused by ``CallLimits``; the message is written for the agent."""


class CallLimits:
    """Calls in progress and executions queued for the kernel, checked before and at the run.

    Used from the server's event loop only (no lock needed). A call waiting for the user's
    approval holds no slot: the pipeline checks ``refusal`` before asking, and takes the slot
    with ``slot`` only once the call may run, checking again.
    """

    def __init__(self, max_concurrent: int, max_queued: int, queued: Callable[[], int]):
        self.max_concurrent = int(max_concurrent)
        self.max_queued = int(max_queued)
        self.queued = queued
        self.in_flight = 0

    def refusal(self, uses_kernel_queue: bool) -> str | None:
        """Why a call would be refused right now, or None."""
        if uses_kernel_queue and self.queued() >= self.max_queued:
            return (
                f"Too many queued executions: {self.queued()} agent calls are already waiting for the kernel. "
                "Wait for them to finish (kernel_status shows them), then retry."
            )
        if self.in_flight >= self.max_concurrent:
            return (
                f"Too many calls in progress ({self.in_flight}, limit {self.max_concurrent}). "
                "Wait for some to finish, then retry; calls are cheaper one at a time."
            )
        return None

    @contextmanager
    def slot(self, uses_kernel_queue: bool) -> Iterator[None]:
        """Hold one of the concurrent-call slots while the block runs; raises ``LimitReached``."""
        refused = self.refusal(uses_kernel_queue)
        if refused is not None:
            raise LimitReached(refused)
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1
