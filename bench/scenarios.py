"""The benchmark plan: scenarios against the ceiling, and the other targets.

Phases, in order (all but the fixtures can be skipped with ``--skip``):

1. fixtures: a reader account with 1,000 codes (GetQrCode, ListQrCodes and
   the cached render read them; Login signs it in), and one render of its
   first code, so that the cached scenario hits the render cache.
2. ``scenarios``: ceiling, GetQrCode (the table holds only the reader's
   codes), ceiling; then the fresh codes for uncached renders are made, and
   ceiling, ListQrCodes of 50, ceiling, cached RenderQrCode PNG, ceiling,
   uncached RenderQrCode PNG, ceiling, Login, ceiling, Register, ceiling.
   A scenario's ratio is its RPS over the mean of the two ceiling runs next
   to it.
3. ``render-vs-segno``: uncached RenderQrCode PNG one call at a time, and
   segno alone in this process for the same texts, in alternating chunks.
4. ``event-loop``: GetQrCode from one client process with one call in
   flight, alone, then while the other client processes send uncached
   renders and logins.
5. ``pages``: one user with 100,000 codes; ListQrCodes (100 a page) walked
   to page 1,000; then page 1 and page 1,000 one call at a time, alternating.
6. ``million``: the table filled to 1,000,000 codes of other users; ceiling,
   GetQrCode, ceiling, compared with GetQrCode at 1,000 codes.
7. ``memory``: a fresh qrsys process serves GetQrCode; its RSS after 10,000
   and after 100,000 requests, within ``--memory-seconds``.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import math
import re
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import grpc
import psutil
import segno
from grpc_health.v1 import health_pb2

from bench import fixtures, profile
from bench.load import LoadPool, LoadResult, Workload, percentile
from bench.processes import (
    ProvisionedDatabase,
    RssSampler,
    ServerProcess,
    cpu_seconds,
)
from bench.report import Check, Row
from qrsys_grpc.qr import render as qr_render
from qrsys_grpc.v1 import auth_pb2, qr_code_pb2

HEALTH_CHECK = "/grpc.health.v1.Health/Check"
GET = "/qrsys.v1.QrCodeService/GetQrCode"
LIST = "/qrsys.v1.QrCodeService/ListQrCodes"
RENDER = "/qrsys.v1.QrCodeService/RenderQrCode"
LOGIN = "/qrsys.v1.AuthService/Login"
REGISTER = "/qrsys.v1.AuthService/Register"
CURRENT_USER = "/qrsys.v1.AuthService/GetCurrentUser"

READER_URL = "https://menu.bench.example/r/{n}?table=7"
UNCACHED_URL = "https://menu.bench.example/u/{n}?table=7"
BIG_URL = "https://menu.bench.example/big/100000?table=7"

PHASES = ("scenarios", "render-vs-segno", "event-loop", "pages", "million", "memory")
ROUNDS = 4
"""Chunks in which one-at-a-time measurements alternate."""
TIME_MARGIN_SECONDS = 150.0
"""What the memory phase leaves of ``--time-limit`` for installing and
stopping, so that ``make bench`` on a clean clone stays within the limit."""

GET_TARGET = "authenticated GetQrCode ≥ 0.5 × ceiling"
CACHED_TARGET = "cached RenderQrCode PNG ≥ 0.5 × ceiling"
SEGNO_TARGET = "uncached render ≤ 1.25 × segno alone"
LOOP_TARGET = "GetQrCode p99 beside renders and logins ≤ 3 × alone"
PAGES_TARGET = "page 1,000 of 100,000 codes ≤ 1.5 × first page"
MILLION_TARGET = (
    "GetQrCode at 1M codes as fast as at 1k (p50 within 10%, drift-corrected)"
)
MEMORY_TARGET = "RSS after 100,000 requests within 10% of after 10,000"


@dataclass
class Options:
    """Everything a run can be told; ``python -m bench --help`` explains each."""

    workers: int = 2
    concurrency: int = 16
    auth_concurrency: int = 2
    probe_concurrency: int = 1
    background_concurrency: int = 2
    background_login_concurrency: int = 1
    warmup: float = 1.0
    duration: float = 5.0
    repetitions: int = 200
    reader_codes: int = 1000
    uncached_codes: int = 3000
    big_user_codes: int = 100_000
    page_size: int = 100
    far_page: int = 1000
    table_rows: int = 1_000_000
    bulk_owners: int = 1000
    memory_first: int = 10_000
    memory_requests: int = 100_000
    memory_seconds: float = 240.0
    time_limit: float = 600.0
    skip: frozenset[str] = frozenset()
    server_env: dict[str, str] = field(default_factory=dict)
    profile_dir: Path | None = None


def segno_alone(text: str) -> tuple[float, bytes]:
    """Build and draw ``text`` as qrsys does, with segno only; (seconds, PNG).

    The calls ``qrsys_grpc.qr.render`` makes for a code in the default style,
    without its wrappers: ``segno.make`` at level M raised as far as the
    symbol allows, no Micro QR, no ECI (UTF-8 byte mode for non-ASCII text),
    then a PNG at scale 10 with segno's quiet zone, black on white.
    """
    ascii_only = text.isascii()
    began = time.perf_counter()
    qr = segno.make(
        text,
        error="M",
        mode=None if ascii_only else "byte",
        encoding=None if ascii_only else "utf-8",
        eci=False,
        micro=False,
        boost_error=True,
    )
    out = io.BytesIO()
    qr.save(out, kind="png", scale=10, border=None, dark="#000000", light="#ffffff")
    return time.perf_counter() - began, out.getvalue()


def segno_seconds(text: str) -> float:
    """Seconds ``segno_alone`` takes for ``text``."""
    return segno_alone(text)[0]


def time_each(timer: Callable[[str], float], texts: Sequence[str]) -> list[float]:
    """``timer`` applied to each text, in order."""
    return [timer(text) for text in texts]


def qrsys_functions(text: str) -> float:
    """Seconds qrsys's own ``make_symbol`` and ``render`` take for ``text``."""
    style = qr_render.Style()
    began = time.perf_counter()
    symbol = qr_render.make_symbol(text, style)
    qr_render.render(symbol, style, qr_render.ImageFormat.PNG, scale=10, border=None)
    return time.perf_counter() - began


def render_requests(codes: Sequence[fixtures.StoredCode]) -> tuple[bytes, ...]:
    """Encoded RenderQrCode PNG requests (default scale) for ``codes``."""
    return tuple(
        qr_code_pb2.RenderQrCodeRequest(
            id=code.id, format=qr_code_pb2.IMAGE_FORMAT_PNG
        ).SerializeToString()
        for code in codes
    )


def summary(sorted_ms: Sequence[float]) -> dict[str, float | int | None]:
    """Count, percentiles and mean of sorted latencies in ms."""
    if not sorted_ms:
        return {"count": 0, "p50_ms": None, "p99_ms": None, "mean_ms": None}
    return {
        "count": len(sorted_ms),
        "p50_ms": round(percentile(sorted_ms, 50), 3),
        "p90_ms": round(percentile(sorted_ms, 90), 3),
        "p99_ms": round(percentile(sorted_ms, 99), 3),
        "mean_ms": round(statistics.fmean(sorted_ms), 3),
    }


def slope(points: Sequence[tuple[float, int]]) -> float | None:
    """Least-squares slope of RSS over time, in bytes per second."""
    if len(points) < 3:
        return None
    times = [t for t, _ in points]
    values = [float(rss) for _, rss in points]
    mean_t = statistics.fmean(times)
    mean_v = statistics.fmean(values)
    spread = sum((t - mean_t) ** 2 for t in times)
    if spread == 0:
        return None
    covariance = sum(
        (t - mean_t) * (v - mean_v) for t, v in zip(times, values, strict=True)
    )
    return covariance / spread


@dataclass
class Fixtures:
    """What the phases share: accounts, codes and prepared workloads."""

    reader: fixtures.Account
    cached: fixtures.StoredCode
    get: Workload
    control: Workload
    """GetCurrentUser: the same token check, and no qr_codes row."""
    login: Workload
    rows_at_start: int
    uncached: list[fixtures.StoredCode] = field(default_factory=list)
    get_1k: Row | None = None
    get_1k_single: list[float] = field(default_factory=list)
    control_1k_single: list[float] = field(default_factory=list)
    big: fixtures.Account | None = None
    big_template: fixtures.StoredCode | None = None


class Benchmark:
    """Runs the phases against one qrsys server and one ceiling server."""

    def __init__(
        self,
        options: Options,
        database: ProvisionedDatabase,
        qrsys: ServerProcess,
        ceiling: ServerProcess,
        pool: LoadPool,
        probe: LoadPool,
        sampler: RssSampler,
    ) -> None:
        self.options = options
        self.database = database
        self.qrsys = qrsys
        self.ceiling = ceiling
        self.pool = pool
        self.probe = probe
        self.sampler = sampler
        self.rows: list[Row] = []
        self.checks: list[Check] = []
        self.runs: list[dict[str, Any]] = []
        self.details: dict[str, Any] = {}
        self.phase_seconds: dict[str, float] = {}
        self.started = time.monotonic()
        self._last_ceiling: float | None = None

    # Running load and keeping the record ----------------------------------

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time a phase and tag the RSS samples taken during it."""
        self.sampler.phase = name
        began = time.monotonic()
        print(f"[{began - self.started:6.1f}s] {name}", flush=True)
        try:
            yield
        finally:
            spent = time.monotonic() - began
            self.phase_seconds[name] = self.phase_seconds.get(name, 0.0) + spent

    async def load(
        self,
        label: str,
        server: ServerProcess,
        workloads: Sequence[Workload],
        *,
        pool: LoadPool | None = None,
        max_requests: int | None = None,
        duration: float | None = None,
        start_at: float | None = None,
    ) -> dict[str, LoadResult]:
        """Run one load job, record it with the CPU it cost, return results.

        Timed (warm-up, then ``duration``, default ``--duration``) unless
        ``max_requests`` is given; then counted from the start, bounded by
        ``duration`` if it is not 0.
        """
        pool = pool or self.pool
        duration = self.options.duration if duration is None else duration
        client_pids = pool.pids()
        server_cpu = cpu_seconds([server.pid])
        client_cpu = cpu_seconds(client_pids)
        machine = psutil.cpu_times()
        recording = self._start_profile(label, server, max_requests, duration)
        began = time.monotonic()
        try:
            results = await asyncio.to_thread(
                pool.run,
                server.address,
                workloads,
                warmup=0.0 if max_requests is not None else self.options.warmup,
                duration=duration,
                max_requests=max_requests,
                start_at=start_at,
            )
        except BaseException:
            pool.cancel()
            if recording is not None:
                recording.cancel()
            raise
        wall = time.monotonic() - began
        after = psutil.cpu_times()
        total = sum(after) - sum(machine)
        idle = (after.idle + after.iowait) - (machine.idle + machine.iowait)
        server_used = cpu_seconds([server.pid]) - server_cpu
        client_used = cpu_seconds(client_pids) - client_cpu
        record: dict[str, Any] = {
            "label": label,
            "server": server.name,
            "load_processes": pool.workers,
            "wall_s": round(wall, 2),
            "server_cpu_cores": round(server_used / wall, 3),
            "client_cpu_cores": round(client_used / wall, 3),
            "machine_busy_fraction": round(1 - idle / total, 3) if total else None,
            "workloads": {name: result.summary() for name, result in results.items()},
        }
        if recording is not None:
            record["profile"] = await asyncio.to_thread(recording.finish)
        self.runs.append(record)
        for name, result in results.items():
            notes = f" errors={result.errors}" if result.errors else ""
            notes += " EXHAUSTED" if result.exhausted else ""
            print(
                f"    {label} / {name}: {result.rps:,.1f} rps, p50 {result.p50:.2f}"
                f" ms, p99 {result.p99:.2f} ms{notes}",
                flush=True,
            )
        return results

    def _start_profile(
        self,
        label: str,
        server: ServerProcess,
        max_requests: int | None,
        duration: float,
    ) -> profile.Recording | None:
        """Start py-spy on qrsys for a timed run, if ``--profile`` asked."""
        folder = self.options.profile_dir
        executable = profile.find_py_spy()
        if (
            folder is None
            or executable is None
            or server is not self.qrsys
            or max_requests is not None
        ):
            return None
        folder.mkdir(parents=True, exist_ok=True)
        slug = re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")
        seconds = LoadPool.START_DELAY + self.options.warmup + duration
        path = folder / f"{len(self.runs):02d}-{slug}.txt"
        return profile.Recording(executable, server.pid, seconds, path)

    async def one_at_a_time(
        self, label: str, workload: Workload, count: int
    ) -> list[float]:
        """``count`` calls of ``workload``, one in flight; sorted ms."""
        single = replace(workload, concurrency=1)
        results = await self.load(
            label, self.qrsys, [single], pool=self.probe, max_requests=count, duration=0
        )
        return results[workload.name].latencies_ms

    async def paired(
        self, label: str, data: Fixtures
    ) -> tuple[list[float], list[float]]:
        """GetQrCode and GetCurrentUser one at a time, in alternating chunks.

        GetCurrentUser makes the same token check and reads no code, so how
        much it slowed down between two measurements is how much the machine
        did, which the million check divides out. Sorted ms of each.
        """
        per_round = max(1, self.options.repetitions // ROUNDS)
        get: list[float] = []
        control: list[float] = []
        for index in range(ROUNDS):
            get += await self.one_at_a_time(
                f"GetQrCode, one at a time, {label} (round {index + 1})",
                data.get,
                per_round,
            )
            control += await self.one_at_a_time(
                f"GetCurrentUser, one at a time, {label} (round {index + 1})",
                data.control,
                per_round,
            )
        return sorted(get), sorted(control)

    async def ceiling_run(self, label: str) -> float:
        """One ceiling run; its RPS."""
        health = Workload(
            "health",
            HEALTH_CHECK,
            (health_pb2.HealthCheckRequest().SerializeToString(),),
            self.options.concurrency,
        )
        results = await self.load(f"ceiling ({label})", self.ceiling, [health])
        self._last_ceiling = results["health"].rps
        return self._last_ceiling

    async def scenario(
        self,
        name: str,
        workload: Workload,
        *,
        min_ratio: float | None = None,
        target: str = "–",
    ) -> Row:
        """Run ``workload`` between two ceiling runs and add its table row.

        The ceiling run after one scenario is the one before the next.
        """
        before = self._last_ceiling
        if before is None:
            before = await self.ceiling_run(f"before {name}")
        result = (await self.load(name, self.qrsys, [workload]))[workload.name]
        after = await self.ceiling_run(f"after {name}")
        ceiling = (before + after) / 2
        ratio = result.rps / ceiling if ceiling > 0 else None
        verdict = "–"
        if min_ratio is not None:
            target = f"≥ {min_ratio:g} × ceiling"
            verdict = "pass" if ratio is not None and ratio >= min_ratio else "FAIL"
        if result.exhausted:
            verdict = "INVALID (ran out of fresh codes)"
        row = Row(
            scenario=name,
            rps=result.rps,
            p50_ms=result.p50,
            p99_ms=result.p99,
            ceiling_rps=ceiling,
            ceiling_runs=(before, after),
            ratio=ratio,
            target=target,
            verdict=verdict,
            errors=result.errors,
        )
        self.rows.append(row)
        return row

    def check(
        self,
        name: str,
        target: str,
        measured: str,
        value: float | None,
        limit: float,
        passed: bool | None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """Record the outcome of one target."""
        self.checks.append(
            Check(name, target, measured, value, limit, passed, detail or {})
        )

    def skipping(self, phase: str, *targets: tuple[str, str]) -> bool:
        """Whether ``phase`` is skipped; if so, record its targets as such."""
        if phase not in self.options.skip:
            return False
        for name, target in targets:
            self.check(name, target, f"skipped (--skip {phase})", None, math.nan, None)
        return True

    # The phases ------------------------------------------------------------

    async def run(self) -> None:
        """Every phase, in order."""
        async with grpc.aio.insecure_channel(
            self.qrsys.address, options=[("grpc.max_receive_message_length", 2**26)]
        ) as channel:
            api = fixtures.Api(channel)
            sql = fixtures.Sql(self.database.url)
            try:
                with self.phase("fixtures"):
                    data = await self.make_fixtures(api, sql)
                if not self.skipping(
                    "scenarios", ("GetQrCode", GET_TARGET), ("cached", CACHED_TARGET)
                ):
                    await self.scenarios(api, data)
                else:
                    with self.phase("fixtures"):
                        data.uncached = await api.batch_create(
                            data.reader, UNCACHED_URL, self.options.uncached_codes
                        )
                self._last_ceiling = None
                singles, background = self.split_uncached(data)[1:]
                if not self.skipping("render-vs-segno", ("segno", SEGNO_TARGET)):
                    with self.phase("render-vs-segno"):
                        await self.render_vs_segno(api, data, singles)
                if not self.skipping("event-loop", ("event loop", LOOP_TARGET)):
                    with self.phase("event-loop"):
                        await self.event_loop(data, background)
                if not self.skipping("pages", ("pages", PAGES_TARGET)):
                    with self.phase("pages"):
                        await self.pages(api, sql, data)
                if not self.skipping("million", ("million", MILLION_TARGET)):
                    with self.phase("million"):
                        await self.million(api, sql, data)
                if not self.skipping("memory", ("memory", MEMORY_TARGET)):
                    with self.phase("memory"):
                        await self.memory(data)
            finally:
                await sql.close()

    async def make_fixtures(self, api: fixtures.Api, sql: fixtures.Sql) -> Fixtures:
        """The reader, its codes, one cached render, the prepared workloads."""
        options = self.options
        reader = await api.register("reader")
        codes = await api.batch_create(reader, READER_URL, options.reader_codes)
        await api.render_png(reader, codes[0].id)
        get = Workload(
            "GetQrCode",
            GET,
            tuple(
                qr_code_pb2.GetQrCodeRequest(id=code.id).SerializeToString()
                for code in codes
            ),
            options.concurrency,
            reader.metadata,
        )
        login = Workload(
            "Login",
            LOGIN,
            (
                auth_pb2.LoginRequest(
                    email=reader.email, password=fixtures.PASSWORD
                ).SerializeToString(),
            ),
            options.auth_concurrency,
        )
        control = Workload("GetCurrentUser", CURRENT_USER, (b"",), 1, reader.metadata)
        return Fixtures(reader, codes[0], get, control, login, await sql.count_codes())

    def split_uncached(
        self, data: Fixtures
    ) -> tuple[
        list[fixtures.StoredCode], list[fixtures.StoredCode], list[fixtures.StoredCode]
    ]:
        """The fresh codes for the uncached scenario, the one-at-a-time
        comparison with segno (one more for a byte-for-byte check), and the
        background of the event-loop check; no code is in two of them."""
        singles = self.options.repetitions + 1
        spare = max(0, len(data.uncached) - singles)
        cut = 0 if "scenarios" in self.options.skip else spare * 3 // 5
        return data.uncached[:cut], data.uncached[spare:], data.uncached[cut:spare]

    async def scenarios(self, api: fixtures.Api, data: Fixtures) -> None:
        """Every scenario between ceiling runs, and the two ratio targets."""
        options = self.options
        with self.phase("scenarios"):
            data.get_1k = await self.scenario(
                f"GetQrCode ({data.rows_at_start:,} codes in the table)",
                data.get,
                min_ratio=0.5,
            )
            data.get_1k_single, data.control_1k_single = await self.paired(
                "1k codes", data
            )
        with self.phase("fixtures"):
            data.uncached = await api.batch_create(
                data.reader, UNCACHED_URL, options.uncached_codes
            )
        first_page = qr_code_pb2.ListQrCodesRequest(page_size=50).SerializeToString()
        register = auth_pb2.RegisterRequest(
            password=fixtures.PASSWORD, display_name="Bench"
        ).SerializeToString()
        with self.phase("scenarios"):
            self._last_ceiling = None
            await self.scenario(
                "ListQrCodes, 50 a page",
                Workload(
                    "ListQrCodes",
                    LIST,
                    (first_page,),
                    options.concurrency,
                    data.reader.metadata,
                ),
            )
            cached = await self.scenario(
                "RenderQrCode PNG, cached",
                Workload(
                    "RenderQrCode cached",
                    RENDER,
                    render_requests([data.cached]),
                    options.concurrency,
                    data.reader.metadata,
                ),
                min_ratio=0.5,
            )
            await self.scenario(
                "RenderQrCode PNG, uncached",
                Workload(
                    "RenderQrCode uncached",
                    RENDER,
                    render_requests(self.split_uncached(data)[0]),
                    options.concurrency,
                    data.reader.metadata,
                    mode="once",
                ),
                target="≤ 1.25 × segno alone, one at a time (see targets)",
            )
            await self.scenario("Login", data.login)
            await self.scenario(
                "Register",
                Workload(
                    "Register",
                    REGISTER,
                    (register,),
                    options.auth_concurrency,
                    mode="unique_email",
                ),
            )
        for name, target, row in (
            ("GetQrCode", GET_TARGET, data.get_1k),
            ("cached", CACHED_TARGET, cached),
        ):
            self.check(
                name,
                target,
                f"{row.rps:,.0f} RPS vs ceiling {row.ceiling_rps:,.0f}: "
                f"ratio {row.ratio:.3f}",
                row.ratio,
                0.5,
                row.verdict == "pass",
                {"rps": row.rps, "ceiling_rps": row.ceiling_rps},
            )

    async def render_vs_segno(
        self, api: fixtures.Api, data: Fixtures, codes: Sequence[fixtures.StoredCode]
    ) -> None:
        """Uncached RenderQrCode one at a time vs segno alone, same texts."""
        sample, codes = codes[0], codes[1:]
        served = await api.render_png(data.reader, sample.id)
        identical = served == segno_alone(sample.encoded_text)[1]
        chunk = max(1, math.ceil(len(codes) / ROUNDS))
        server_ms: list[float] = []
        segno_s: list[float] = []
        functions_s: list[float] = []
        for index in range(ROUNDS):
            part = codes[index * chunk : (index + 1) * chunk]
            if not part:
                break
            workload = Workload(
                "RenderQrCode uncached",
                RENDER,
                render_requests(part),
                1,
                data.reader.metadata,
                mode="once",
            )
            server_ms += await self.one_at_a_time(
                f"uncached render, one at a time (round {index + 1})",
                workload,
                len(part),
            )
            texts = [code.encoded_text for code in part]
            segno_s += await asyncio.to_thread(time_each, segno_seconds, texts)
            functions_s += await asyncio.to_thread(time_each, qrsys_functions, texts)
        server_sorted = sorted(server_ms)
        segno_sorted = sorted(value * 1000 for value in segno_s)
        functions_sorted = sorted(value * 1000 for value in functions_s)
        server_p50 = percentile(server_sorted, 50)
        segno_p50 = percentile(segno_sorted, 50)
        ratio = server_p50 / segno_p50
        mean_ratio = statistics.fmean(server_sorted) / statistics.fmean(segno_sorted)
        symbol = qr_render.make_symbol(sample.encoded_text, qr_render.Style())
        detail = {
            "server_round_trip": summary(server_sorted),
            "segno_alone": summary(segno_sorted),
            "qrsys_make_symbol_and_render_in_process": summary(functions_sorted),
            "ratio_of_medians": round(ratio, 3),
            "ratio_of_means": round(mean_ratio, 3),
            "server_png_identical_to_segno_alone": identical,
            "symbol_version": symbol.version,
            "error_correction": symbol.error_correction,
            "png_bytes": len(served),
            "example_text": sample.encoded_text,
        }
        self.details["render_vs_segno"] = detail
        self.check(
            "segno",
            SEGNO_TARGET,
            f"p50 {server_p50:.2f} ms round trip vs {segno_p50:.2f} ms segno alone:"
            f" ratio {ratio:.2f} (of means: {mean_ratio:.2f}); version "
            f"{symbol.version}-{symbol.error_correction}, same PNG bytes: {identical}",
            ratio,
            1.25,
            ratio <= 1.25,
            detail,
        )

    async def event_loop(
        self, data: Fixtures, codes: Sequence[fixtures.StoredCode]
    ) -> None:
        """GetQrCode p99 alone vs beside uncached renders and logins."""
        options = self.options
        probe = replace(
            data.get, name="GetQrCode probe", concurrency=options.probe_concurrency
        )
        renders = Workload(
            "uncached renders (background)",
            RENDER,
            render_requests(codes),
            options.background_concurrency,
            data.reader.metadata,
            mode="once",
        )
        logins = replace(
            data.login,
            name="logins (background)",
            concurrency=options.background_login_concurrency,
        )
        alone = (
            await self.load(
                "GetQrCode probe alone", self.qrsys, [probe], pool=self.probe
            )
        )[probe.name]
        start_at = time.time() + 0.5
        beside, background = await asyncio.gather(
            self.load(
                "GetQrCode probe beside renders and logins",
                self.qrsys,
                [probe],
                pool=self.probe,
                start_at=start_at,
            ),
            self.load(
                "renders and logins beside the probe",
                self.qrsys,
                [renders, logins],
                start_at=start_at,
            ),
        )
        busy = beside[probe.name]
        ratio = busy.p99 / alone.p99 if alone.p99 > 0 else math.nan
        exhausted = background[renders.name].exhausted
        detail = {
            "alone": alone.summary(),
            "beside_load": busy.summary(),
            "background": {name: r.summary() for name, r in background.items()},
            "p99_ratio": round(ratio, 3),
        }
        self.details["event_loop"] = detail
        self.check(
            "event loop",
            LOOP_TARGET,
            f"p99 {busy.p99:.2f} ms beside the load vs {alone.p99:.2f} ms alone: "
            f"ratio {ratio:.2f} (p50 {busy.p50:.2f} vs {alone.p50:.2f} ms; "
            f"{background[renders.name].rps:.0f} renders/s and "
            f"{background[logins.name].rps:.1f} logins/s beside it)"
            + ("; the background ran out of fresh codes" if exhausted else ""),
            ratio,
            3.0,
            None if exhausted else ratio <= 3.0,
            detail,
        )

    async def pages(self, api: fixtures.Api, sql: fixtures.Sql, data: Fixtures) -> None:
        """First page vs a far page of one user with 100,000 codes."""
        options = self.options
        data.big = big = await api.register("big")
        data.big_template = template = await api.create(big, BIG_URL)
        began = time.monotonic()
        await sql.copy_code(template.id, big.user_id, options.big_user_codes - 1)
        await sql.analyze()
        insert_s = time.monotonic() - began
        began = time.monotonic()
        token, walk = await api.page_token_of_page(
            big, options.far_page, options.page_size
        )
        walk_s = time.monotonic() - began
        first = Workload(
            "first page",
            LIST,
            (
                qr_code_pb2.ListQrCodesRequest(
                    page_size=options.page_size
                ).SerializeToString(),
            ),
            1,
            big.metadata,
        )
        far = replace(
            first,
            name=f"page {options.far_page}",
            payloads=(
                qr_code_pb2.ListQrCodesRequest(
                    page_size=options.page_size, page_token=token
                ).SerializeToString(),
            ),
        )
        per_round = max(1, options.repetitions // ROUNDS)
        first_ms: list[float] = []
        far_ms: list[float] = []
        for index in range(ROUNDS):
            first_ms += await self.one_at_a_time(
                f"first page (round {index + 1})", first, per_round
            )
            far_ms += await self.one_at_a_time(
                f"{far.name} (round {index + 1})", far, per_round
            )
        first_ms.sort()
        far_ms.sort()
        ratio = percentile(far_ms, 50) / percentile(first_ms, 50)
        detail = {
            "user_codes": options.big_user_codes,
            "page_size": options.page_size,
            "far_page": options.far_page,
            "insert_and_analyze_s": round(insert_s, 2),
            "walk_s": round(walk_s, 2),
            "walk_ms_by_page": [round(value, 2) for value in walk],
            "first_page": summary(first_ms),
            "far_page_latency": summary(far_ms),
            "ratio_of_medians": round(ratio, 3),
        }
        self.details["pages"] = detail
        self.check(
            "pages",
            PAGES_TARGET,
            f"p50 {percentile(far_ms, 50):.2f} ms for page {options.far_page} vs "
            f"{percentile(first_ms, 50):.2f} ms for page 1: ratio {ratio:.2f} "
            f"(p99 {percentile(far_ms, 99):.2f} vs {percentile(first_ms, 99):.2f})",
            ratio,
            1.5,
            ratio <= 1.5,
            detail,
        )

    async def million(
        self, api: fixtures.Api, sql: fixtures.Sql, data: Fixtures
    ) -> None:
        """GetQrCode with the table at a million rows vs at a thousand."""
        options = self.options
        if data.big is None or data.big_template is None:
            data.big = await api.register("bulk")
            data.big_template = await api.create(data.big, BIG_URL)
        began = time.monotonic()
        added = await sql.fill_table(
            data.big_template.id,
            data.big.user_id,
            options.table_rows,
            options.bulk_owners,
        )
        await sql.analyze()
        fill_s = time.monotonic() - began
        rows = await sql.count_codes()
        self._last_ceiling = None
        row = await self.scenario(f"GetQrCode ({rows:,} codes in the table)", data.get)
        single, control = await self.paired("1M codes", data)
        detail: dict[str, Any] = {
            "rows": rows,
            "rows_added": added,
            "fill_and_analyze_s": round(fill_s, 2),
            "at_1m": {
                "rps": row.rps,
                "ceiling_rps": row.ceiling_rps,
                "ratio": row.ratio,
            },
            "at_1m_one_at_a_time": summary(single),
            "at_1m_control_one_at_a_time": summary(control),
        }
        self.details["million"] = detail
        before = data.get_1k
        if before is None or not data.get_1k_single:
            self.check(
                "million",
                MILLION_TARGET,
                "no GetQrCode run at 1k codes to compare with (scenarios skipped)",
                None,
                1.1,
                None,
                detail,
            )
            return
        p50_1m = percentile(single, 50)
        p50_1k = percentile(data.get_1k_single, 50)
        drift = percentile(control, 50) / percentile(data.control_1k_single, 50)
        relative = p50_1m / p50_1k / drift
        throughput = (
            row.ratio / before.ratio if row.ratio and before.ratio else math.nan
        )
        detail |= {
            "at_1k": {
                "rows": data.rows_at_start,
                "rps": before.rps,
                "ceiling_rps": before.ceiling_rps,
                "ratio": before.ratio,
            },
            "at_1k_one_at_a_time": summary(data.get_1k_single),
            "at_1k_control_one_at_a_time": summary(data.control_1k_single),
            "p50_relative_raw": round(p50_1m / p50_1k, 3),
            "control_p50_relative": round(drift, 3),
            "p50_relative_corrected": round(relative, 3),
            "ceiling_ratio_relative": round(throughput, 3),
        }
        row.target = "p50 one at a time ≤ 1.1 × at 1k codes (see targets)"
        row.verdict = "pass" if relative <= 1.1 else "FAIL"
        self.check(
            "million",
            MILLION_TARGET,
            f"one at a time, p50 {p50_1m:.2f} ms at {rows:,} codes vs {p50_1k:.2f} "
            f"ms at {data.rows_at_start:,} ({p50_1m / p50_1k:.2f}×; GetCurrentUser "
            f"beside it {drift:.2f}×): {relative:.2f}× corrected; under load, ratio "
            f"to the ceiling {row.ratio:.3f} vs {before.ratio:.3f} ({throughput:.2f}×)",
            relative,
            1.1,
            relative <= 1.1,
            detail,
        )

    async def memory(self, data: Fixtures) -> None:
        """RSS of a fresh server after 10,000 and 100,000 GetQrCode calls."""
        options = self.options
        left = options.time_limit - TIME_MARGIN_SECONDS
        left -= time.monotonic() - self.started
        budget = max(30.0, min(options.memory_seconds, left))
        await asyncio.to_thread(self.qrsys.stop)
        await asyncio.to_thread(self.qrsys.start)
        self.sampler.watch(self.qrsys.pid)
        rss_start = self.sampler.sample()
        began = time.monotonic()
        first = (
            await self.load(
                f"memory: first {options.memory_first:,} GetQrCode",
                self.qrsys,
                [data.get],
                max_requests=options.memory_first,
                duration=budget,
            )
        )[data.get.name]
        rss_first = self.sampler.sample()
        own_first = self.sampler.last_own()
        first_done = time.monotonic()
        served = first.sent
        remaining = budget - (first_done - began)
        if served >= options.memory_first and remaining > 1:
            rest = (
                await self.load(
                    f"memory: up to {options.memory_requests:,} GetQrCode",
                    self.qrsys,
                    [data.get],
                    max_requests=options.memory_requests - served,
                    duration=remaining,
                )
            )[data.get.name]
            served += rest.sent
        rss_end = self.sampler.sample()
        own_end = self.sampler.last_own()
        ended = time.monotonic()
        growth = (rss_end - rss_first) / rss_first if rss_first else math.nan
        since = first_done - self.started
        trend = slope(
            [(t, rss) for t, rss, phase in self.sampler.samples if t >= since]
        )
        rate = (served - first.sent) / max(1e-9, ended - first_done)
        detail: dict[str, Any] = {
            "rss_start_bytes": rss_start,
            "rss_after_first_bytes": rss_first,
            "rss_end_bytes": rss_end,
            "requests_first": first.sent,
            "requests_total": served,
            "seconds": round(ended - began, 1),
            "budget_seconds": round(budget, 1),
            "growth_fraction": round(growth, 4),
            "main_process_rss_after_first_bytes": own_first,
            "main_process_rss_end_bytes": own_end,
            "processes_at_end": len(self.sampler_tree()),
            "rss_slope_bytes_per_second": None if trend is None else round(trend, 1),
            "requests_per_second_after_first": round(rate, 1),
        }
        self.details["memory"] = detail
        mib = 2**20
        readings = (
            f"{rss_first / mib:.1f} MiB after {first.sent:,}, "
            f"{rss_end / mib:.1f} MiB after {served:,}: {growth:+.1%} (server "
            f"and its {len(self.sampler_tree()) - 1} child processes; the main "
            f"process alone {own_first / mib:.1f} → {own_end / mib:.1f} MiB)"
        )
        if served >= options.memory_requests:
            self.check(
                "memory",
                MEMORY_TARGET,
                readings,
                growth,
                0.10,
                abs(growth) <= 0.10,
                detail,
            )
            return
        projection = ""
        if trend is not None and rate > 0 and rss_first:
            left = (options.memory_requests - served) / rate
            projected = (rss_end + trend * left - rss_first) / rss_first
            detail["projected_growth_fraction"] = round(projected, 4)
            projection = (
                f"; a straight line through the samples gives {projected:+.1%} "
                f"at {options.memory_requests:,}"
            )
        self.check(
            "memory",
            MEMORY_TARGET,
            f"not reached: {served:,} requests in the {budget:.0f} s allowed "
            f"(--memory-seconds, --time-limit); {readings}{projection}",
            growth,
            0.10,
            None,
            detail,
        )

    def sampler_tree(self) -> list[int]:
        """The qrsys server's process id and its descendants' ids."""
        try:
            root = psutil.Process(self.qrsys.pid)
            return [root.pid, *(child.pid for child in root.children(recursive=True))]
        except psutil.Error:
            return []

    def finish(self, total_seconds: float) -> None:
        """Add the target on the whole run's time."""
        limit = self.options.time_limit
        self.check(
            "time",
            f"the whole run takes under {limit / 60:g} minutes",
            f"{total_seconds:.0f} s (start to report; installing with make not "
            "included)",
            total_seconds,
            limit,
            total_seconds < limit,
        )


def notes(options: Options) -> list[str]:
    """How the numbers are made, for the report."""
    server_env = f", except {options.server_env}" if options.server_env else ""
    return [
        "RPS counts successful calls completed inside the measured window; p50 and "
        "p99 are of those calls' round trips as the client saw them.",
        "qrsys runs as one server process (QRSYS_WORKERS=1) with the default pool, "
        f"cache and thread settings{server_env}; the failed-login allowance per "
        "address is raised, though the bench makes no failed logins.",
        "Client processes are separate from the servers; for every run the JSON has "
        "the CPU used (in cores) by the server with its child processes and by the "
        "client processes, and how busy the whole machine was, to show whether the "
        "client could have been the limit. Against qrsys the clients use a fraction "
        "of a core while the server's event loop is near a full core; against the "
        "ceiling, server and clients together fill both cores, so on this machine "
        "the ceiling is a lower bound of what a bare server does with its client "
        "elsewhere, and the ratios are if anything flattering.",
        "GetQrCode cycles through the reader's 1,000 code ids with one access token; "
        "ListQrCodes asks for the reader's first page of 50; the cached render asks "
        "for one code rendered before; each uncached render asks for a code never "
        "rendered, whose text no other code has, so the render cache cannot answer "
        "it; Login signs the reader in; Register makes an account with a new email "
        "per call.",
        "Uncached render vs segno: RenderQrCode PNG of fresh codes one call at a time "
        "(the client's round trip, so gRPC, the token check and the database reads "
        "are in it) against segno.make + save(kind='png', scale=10) in this process "
        "with the arguments qrsys uses, for the same texts, in alternating chunks; "
        "the ratio is of the medians. The JSON also has qrsys's own make_symbol + "
        "render in-process, and whether the server's PNG equals segno's byte for "
        "byte.",
        f"Event loop: GetQrCode from one client process, {options.probe_concurrency} "
        "call(s) in flight, alone and then while the other client processes send "
        f"uncached renders ({options.background_concurrency} in flight each) and "
        f"logins ({options.background_login_concurrency} each); the ratio is of the "
        "p99s. The background load also takes this machine's CPU from the server, "
        "so the ratio bounds what the event loop itself adds from above.",
        f"Pages: one user's {options.big_user_codes:,} codes are one code made "
        "through the API and SQL copies of it (own ids, titles and creation times); "
        f"the token of page {options.far_page} comes from walking ListQrCodes "
        f"{options.page_size} a page; page 1 and that page are then fetched one call "
        "at a time in alternating chunks; the ratio is of the medians.",
        f"Million: the table is filled to {options.table_rows:,} rows with SQL "
        f"copies spread over {options.bulk_owners:,} new accounts, then VACUUM "
        "ANALYZE. GetQrCode of the reader's codes is timed one call at a time, in "
        "chunks alternating with GetCurrentUser (the same token check, no code "
        "read), at 1,000 codes (right after the first GetQrCode scenario) and at "
        f"{options.table_rows:,}; the GetQrCode median ratio is divided by the "
        "GetCurrentUser one, which takes out how much the shared machine slowed "
        "down in between; as fast means at most 1.1. GetQrCode under load between "
        "two ceiling runs is shown too (its ratio to the ceiling), but the "
        "ceiling's own spread makes that the noisier measure.",
        "Memory: the qrsys process is restarted and then serves GetQrCode only; the "
        "RSS of it and its child processes (psutil) is read after the first "
        f"{options.memory_first:,} calls and after {options.memory_requests:,}, "
        f"within {options.memory_seconds:g} s at most (less if the run would "
        f"otherwise end later than {TIME_MARGIN_SECONDS:g} s before --time-limit). "
        "RSS is also sampled every "
        "0.5 s for the whole run (rss_samples in the JSON, with the main process's "
        "own RSS beside the total).",
    ]
