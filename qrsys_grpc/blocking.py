"""The one thread pool for blocking work (password hashing, rendering).

Work submitted here never runs on the event loop, and at most ``limit`` jobs
run or wait for a thread at once per kind of work, so a flood of logins cannot
queue unbounded memory or starve other RPCs.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


class BlockingRunner:
    """Runs blocking callables in a bounded thread pool owned by the server."""

    def __init__(self, threads: int) -> None:
        self._executor = ThreadPoolExecutor(
            max_workers=threads, thread_name_prefix="qrsys-blocking"
        )
        self._slots = asyncio.Semaphore(threads * 4)

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(*args, **kwargs)`` in the pool and await its result."""
        async with self._slots:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(
                self._executor, functools.partial(fn, *args, **kwargs)
            )

    def close(self) -> None:
        """Stop accepting work and wait for running jobs."""
        self._executor.shutdown(wait=True, cancel_futures=True)
