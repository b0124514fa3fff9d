"""The load generator: worker processes, each a ``grpc.aio`` client.

A ``LoadPool`` starts its worker processes once (multiprocessing spawn) and
hands them jobs through queues. For each job every worker uses its own
channel (so its own TCP connection) and runs a fixed number of callers per
``Workload``, each caller sending one call and awaiting it before the next
(closed loop, fixed concurrency). Requests are pre-serialised bytes sent
through a method with no serialiser, so the client spends no time on
protobuf; responses are not parsed either.

All workers start at the same wall-clock instant, warm up, then measure for
a fixed duration: a call counts when it completes inside the measured window
(its latency is kept too); calls completing during warm-up or after the
window are not counted. A job can instead be bounded by a number of
requests (and, if its duration is not 0, by that duration too), which it
then counts from the start with no warm-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import multiprocessing
import os
import queue
import signal
import threading
import time
from array import array
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import grpc

CALL_TIMEOUT_SECONDS = 60.0
READY_TIMEOUT_SECONDS = 60.0
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
]


@dataclass(frozen=True)
class Workload:
    """What one group of callers sends, and how many callers there are.

    ``mode`` says how requests are made from ``payloads``:

    - ``"cycle"``: the payloads in turn, over and over;
    - ``"once"``: each payload at most once in the whole job (the payloads are
      split between the workers); a caller that finds none left stops, and
      the result says the workload was exhausted;
    - ``"unique_email"``: a fresh ``email`` (field 1) per call, put in front
      of ``payloads[0]``, the rest of the message already encoded; for
      Register.
    """

    name: str
    method: str
    payloads: tuple[bytes, ...]
    concurrency: int
    metadata: tuple[tuple[str, str], ...] = ()
    mode: str = "cycle"


@dataclass(frozen=True)
class Job:
    """One bounded run of one or more workloads against one address.

    With ``max_requests`` set, each workload stops after that many calls in
    all (split between workers) or after ``duration`` seconds (0: no limit),
    and every call counts; otherwise calls are counted in the ``duration``
    seconds that follow ``warmup``.
    """

    address: str
    workloads: tuple[Workload, ...]
    start_at: float
    warmup: float
    duration: float
    max_requests: int | None = None
    job_id: int = 0
    worker_index: int = 0
    workers: int = 1


@dataclass
class GroupResult:
    """What one worker measured for one workload."""

    name: str
    latencies: array[float] = field(default_factory=lambda: array("d"))
    errors: Counter[str] = field(default_factory=Counter)
    window: float = 0.0
    exhausted: bool = False
    sent: int = 0


@dataclass
class LoadResult:
    """One workload's numbers over every worker."""

    name: str
    count: int
    errors: dict[str, int]
    window: float
    latencies_ms: list[float]
    exhausted: bool
    sent: int

    @property
    def rps(self) -> float:
        """Successful calls completed per second of the measured window."""
        return self.count / self.window if self.window > 0 else 0.0

    def percentile(self, q: float) -> float:
        """The ``q``-th percentile latency in ms (nearest rank); NaN if none."""
        return percentile(self.latencies_ms, q)

    @property
    def p50(self) -> float:
        """The median latency in ms."""
        return self.percentile(50)

    @property
    def p99(self) -> float:
        """The 99th percentile latency in ms."""
        return self.percentile(99)

    def summary(self) -> dict[str, Any]:
        """The numbers of this result, for JSON."""
        return {
            "name": self.name,
            "count": self.count,
            "rps": round(self.rps, 2),
            "p50_ms": _round(self.p50),
            "p90_ms": _round(self.percentile(90)),
            "p99_ms": _round(self.p99),
            "max_ms": _round(max(self.latencies_ms, default=math.nan)),
            "errors": self.errors,
            "window_s": round(self.window, 3),
            "exhausted": self.exhausted,
            "sent": self.sent,
        }


def _round(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 3)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values; NaN when empty."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _payload_source(
    workload: Workload, job: Job, group: GroupResult
) -> Callable[[], bytes | None]:
    """A function giving the next request of ``workload``, None when done."""
    if workload.mode == "cycle":
        cycle = itertools.cycle(workload.payloads)
        return lambda: next(cycle)
    if workload.mode == "once":
        mine: Iterator[bytes] = iter(workload.payloads[job.worker_index :: job.workers])

        def take() -> bytes | None:
            payload = next(mine, None)
            if payload is None:
                group.exhausted = True
            return payload

        return take
    if workload.mode == "unique_email":
        rest = workload.payloads[0]
        prefix = f"b{os.getpid()}-{job.job_id}-{time.time_ns() % 10**9}-"
        counter = itertools.count()

        def register() -> bytes:
            email = f"{prefix}{next(counter)}@bench.example.com".encode()
            return b"\x0a" + _varint(len(email)) + email + rest

        return register
    raise ValueError(f"unknown workload mode {workload.mode!r}")


async def _run_group(
    channel: grpc.aio.Channel,
    workload: Workload,
    job: Job,
    start: float,
    measure_from: float,
    measure_to: float,
) -> GroupResult:
    group = GroupResult(workload.name)
    call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
        workload.method
    )
    next_payload = _payload_source(workload, job, group)
    metadata = workload.metadata or None
    quota: list[int] = []
    if job.max_requests is not None:
        share, extra = divmod(job.max_requests, job.workers)
        quota.append(share + (1 if job.worker_index < extra else 0))
    latencies = group.latencies
    errors = group.errors
    clock = time.perf_counter

    async def caller() -> None:
        await asyncio.sleep(max(0.0, start - clock()))
        while True:
            began = clock()
            if began >= measure_to:
                return
            if quota:
                if quota[0] <= 0:
                    return
                quota[0] -= 1
            payload = next_payload()
            if payload is None:
                return
            group.sent += 1
            try:
                await call(payload, metadata=metadata, timeout=CALL_TIMEOUT_SECONDS)
                failure = None
            except grpc.aio.AioRpcError as exc:
                failure = exc.code().name
            ended = clock()
            if measure_from <= ended <= measure_to:
                if failure is None:
                    latencies.append(ended - began)
                else:
                    errors[failure] += 1

    await asyncio.gather(*(caller() for _ in range(workload.concurrency)))
    group.window = measure_to - measure_from
    if job.max_requests is not None:
        group.window = clock() - measure_from
    return group


async def _run_job(
    job: Job, channels: dict[str, grpc.aio.Channel]
) -> list[GroupResult]:
    channel = channels.get(job.address)
    if channel is None:
        channel = grpc.aio.insecure_channel(job.address, options=CHANNEL_OPTIONS)
        channels[job.address] = channel
    await asyncio.wait_for(channel.channel_ready(), READY_TIMEOUT_SECONDS)
    start = time.perf_counter() + max(0.0, job.start_at - time.time())
    if job.max_requests is not None:
        measure_from = start
        measure_to = start + job.duration if job.duration > 0 else math.inf
    else:
        measure_from = start + job.warmup
        measure_to = measure_from + job.duration
    return list(
        await asyncio.gather(
            *(
                _run_group(channel, workload, job, start, measure_from, measure_to)
                for workload in job.workloads
            )
        )
    )


async def _serve_jobs(
    index: int, inbox: multiprocessing.Queue[Any], outbox: multiprocessing.Queue[Any]
) -> None:
    channels: dict[str, grpc.aio.Channel] = {}
    loop = asyncio.get_running_loop()
    outbox.put(("ready", index, None))
    try:
        while True:
            job = await loop.run_in_executor(None, inbox.get)
            if job is None:
                return
            try:
                groups = await _run_job(job, channels)
                outbox.put(("done", job.job_id, groups))
            except Exception as exc:
                outbox.put(("failed", job.job_id, f"worker {index}: {exc!r}"))
    finally:
        for channel in channels.values():
            await channel.close()


def _worker_main(
    index: int, inbox: multiprocessing.Queue[Any], outbox: multiprocessing.Queue[Any]
) -> None:
    # The parent stops the workers; a Ctrl-C at the terminal is its to handle.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    asyncio.run(_serve_jobs(index, inbox, outbox))


class LoadError(RuntimeError):
    """A worker failed to run a job."""


class LoadPool:
    """``workers`` load generator processes, started once, reused per job."""

    START_DELAY = 0.3
    """Seconds between handing out a job and its start, by default."""

    def __init__(self, workers: int, name: str = "load") -> None:
        self.workers = workers
        self.name = name
        self._context = multiprocessing.get_context("spawn")
        self._outbox: multiprocessing.Queue[Any] = self._context.Queue()
        self._inboxes: list[multiprocessing.Queue[Any]] = []
        self._processes: list[multiprocessing.process.BaseProcess] = []
        self._job_ids = itertools.count(1)
        self._cancelled = threading.Event()

    def start(self) -> LoadPool:
        """Start the worker processes and wait until each is ready."""
        for index in range(self.workers):
            inbox: multiprocessing.Queue[Any] = self._context.Queue()
            process = self._context.Process(
                target=_worker_main,
                args=(index, inbox, self._outbox),
                name=f"{self.name}-{index}",
                daemon=True,
            )
            process.start()
            self._inboxes.append(inbox)
            self._processes.append(process)
        for _ in range(self.workers):
            self._receive(READY_TIMEOUT_SECONDS)
        return self

    def pids(self) -> list[int]:
        """The process ids of the workers."""
        return [process.pid for process in self._processes if process.pid]

    def _receive(self, timeout: float) -> tuple[str, int, Any]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                message: tuple[str, int, Any] = self._outbox.get(timeout=1.0)
                return message
            except queue.Empty:
                if self._cancelled.is_set():
                    raise LoadError("cancelled") from None
                dead = [p.name for p in self._processes if not p.is_alive()]
                if dead:
                    raise LoadError(f"load workers died: {', '.join(dead)}") from None
                if time.monotonic() > deadline:
                    raise LoadError("load workers did not answer in time") from None

    def run(
        self,
        address: str,
        workloads: Sequence[Workload],
        *,
        warmup: float,
        duration: float,
        max_requests: int | None = None,
        start_at: float | None = None,
    ) -> dict[str, LoadResult]:
        """Run one job on every worker and return each workload's result.

        Blocks until done. ``start_at`` (wall clock) lets two pools start
        together; by default the job starts ``START_DELAY`` seconds from now.
        """
        job_id = next(self._job_ids)
        job = Job(
            address=address,
            workloads=tuple(workloads),
            start_at=start_at
            if start_at is not None
            else time.time() + self.START_DELAY,
            warmup=warmup,
            duration=duration,
            max_requests=max_requests,
            job_id=job_id,
            workers=self.workers,
        )
        for index, inbox in enumerate(self._inboxes):
            inbox.put(replace(job, worker_index=index))
        bound = (duration + warmup if duration > 0 else 3600.0) + READY_TIMEOUT_SECONDS
        groups: list[GroupResult] = []
        failures: list[str] = []
        for _ in range(self.workers):
            kind, answered, payload = self._receive(bound)
            if answered != job_id:
                raise LoadError(f"answer for job {answered}, expected {job_id}")
            if kind == "failed":
                failures.append(str(payload))
            else:
                groups.extend(payload)
        if failures:
            raise LoadError("; ".join(failures))
        return _merge(groups, [workload.name for workload in workloads])

    def cancel(self) -> None:
        """Make a ``run`` waiting in another thread give up within a second."""
        self._cancelled.set()

    def close(self) -> None:
        """Stop the workers (politely, then by force)."""
        for inbox in self._inboxes:
            with contextlib.suppress(Exception):
                inbox.put(None)
        for process in self._processes:
            process.join(timeout=5)
            if process.is_alive():
                process.kill()
                process.join(timeout=5)
        self._processes.clear()
        self._inboxes.clear()

    def __enter__(self) -> LoadPool:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def _merge(groups: list[GroupResult], names: list[str]) -> dict[str, LoadResult]:
    results: dict[str, LoadResult] = {}
    for name in names:
        mine = [group for group in groups if group.name == name]
        latencies = sorted(value * 1000 for group in mine for value in group.latencies)
        errors: Counter[str] = Counter()
        for group in mine:
            errors.update(group.errors)
        results[name] = LoadResult(
            name=name,
            count=len(latencies),
            errors=dict(errors),
            window=max((group.window for group in mine), default=0.0),
            latencies_ms=latencies,
            exhausted=any(group.exhausted for group in mine),
            sent=sum(group.sent for group in mine),
        )
    return results
