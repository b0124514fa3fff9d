"""The pools for blocking work, owned by the server: threads and processes.

Password hashing (argon2 releases the GIL) runs in threads. Drawing QR
symbols with segno is pure Python and would hold the GIL, stalling the event
loop and every other call, so it runs in worker processes, at a lower CPU
priority than the server so that they take what the event loop leaves. At most four jobs
per worker run or wait at once in each pool, so a flood of logins or renders
cannot queue unbounded memory.
"""

from __future__ import annotations

import asyncio
import functools
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


WORKER_NICENESS = 5


def _lower_priority() -> None:
    """Let a worker process yield the CPU to the server's event loop."""
    if hasattr(os, "nice"):
        os.nice(WORKER_NICENESS)


def _ready() -> bool:
    """A job that only proves a worker process has started."""
    return True


class _Pool:
    def __init__(self, executor: Executor, workers: int) -> None:
        self.executor = executor
        self.slots = asyncio.Semaphore(workers * 4)

    async def run(self, call: Callable[[], T]) -> T:
        async with self.slots:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self.executor, call)


class BlockingRunner:
    """Runs blocking callables off the event loop, in bounded pools."""

    def __init__(self, threads: int, processes: int = 0) -> None:
        self._threads = _Pool(
            ThreadPoolExecutor(
                max_workers=threads, thread_name_prefix="qrsys-blocking"
            ),
            threads,
        )
        self._processes: _Pool | None = None
        if processes > 0:
            self._processes = _Pool(
                ProcessPoolExecutor(
                    max_workers=processes,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=_lower_priority,
                ),
                processes,
            )
        self._process_count = processes

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(*args, **kwargs)`` in a thread and await its result."""
        return await self._threads.run(functools.partial(fn, *args, **kwargs))

    async def run_cpu(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(*args, **kwargs)`` in a worker process (in a thread when
        the runner has none). ``fn``, its arguments and its result or error
        must pickle."""
        call = functools.partial(fn, *args, **kwargs)
        if self._processes is None:
            return await self._threads.run(call)
        return await self._processes.run(call)

    async def start(self) -> None:
        """Start every worker process now rather than on the first call."""
        if self._processes is not None:
            await asyncio.gather(
                *(self._processes.run(_ready) for _ in range(self._process_count))
            )

    def close(self) -> None:
        """Stop accepting work and wait for running jobs."""
        self._threads.executor.shutdown(wait=True, cancel_futures=True)
        if self._processes is not None:
            self._processes.executor.shutdown(wait=True, cancel_futures=True)
