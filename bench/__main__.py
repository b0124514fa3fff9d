"""``python -m bench``: run the benchmark and write its results.

Starts a database (``QRSYS_BENCH_DATABASE_URL``'s server, or an embedded
PostgreSQL), a qrsys server and the ceiling server as child processes, and
the load generator's processes; runs the phases of ``bench.scenarios``;
writes ``bench/results/<UTC timestamp>.json`` and ``.md`` and
``bench/results/latest.md``; and stops and removes everything it started,
also on failure, Ctrl-C or SIGTERM. Exit status: 0 when the run completed
(whether or not the targets hold), 1 on a failure, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import tempfile
import time
import traceback
from dataclasses import fields
from pathlib import Path
from typing import Any

from bench import report
from bench.load import LoadPool
from bench.processes import (
    DATABASE_URL_VARIABLE,
    RssSampler,
    ceiling_server,
    provision_database,
    qrsys_server,
)
from bench.profile import find_py_spy
from bench.scenarios import PHASES, Benchmark, Options, notes

RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str] | None) -> tuple[Options, Path]:
    """The options of a run and the results folder."""
    defaults = Options()
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=(
            "Benchmark qrsys against a bare grpc.aio health-check server (the "
            f"ceiling). Set {DATABASE_URL_VARIABLE} to use a PostgreSQL server "
            "(a database is created on it and dropped after); otherwise an "
            "embedded PostgreSQL is started in a temporary directory."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    load = parser.add_argument_group("load")
    load.add_argument(
        "--workers", type=int, default=defaults.workers, help="load generator processes"
    )
    load.add_argument(
        "--concurrency",
        type=int,
        default=defaults.concurrency,
        help="calls in flight per load process",
    )
    load.add_argument(
        "--auth-concurrency",
        type=int,
        default=defaults.auth_concurrency,
        help="calls in flight per load process for Login and Register",
    )
    load.add_argument(
        "--probe-concurrency",
        type=int,
        default=defaults.probe_concurrency,
        help="GetQrCode calls in flight in the event-loop check",
    )
    load.add_argument(
        "--background-concurrency",
        type=int,
        default=defaults.background_concurrency,
        help="uncached renders in flight per load process beside the probe",
    )
    load.add_argument(
        "--background-login-concurrency",
        type=int,
        default=defaults.background_login_concurrency,
        help="logins in flight per load process beside the probe",
    )
    load.add_argument(
        "--warmup",
        type=float,
        default=defaults.warmup,
        help="seconds of warm-up before each measured run",
    )
    load.add_argument(
        "--duration",
        type=float,
        default=defaults.duration,
        help="measured seconds per run",
    )
    load.add_argument(
        "--repetitions",
        type=int,
        default=defaults.repetitions,
        help="calls per one-at-a-time measurement",
    )
    data = parser.add_argument_group("data")
    data.add_argument(
        "--reader-codes",
        type=int,
        default=defaults.reader_codes,
        help="codes of the account the read scenarios use",
    )
    data.add_argument(
        "--uncached-codes",
        type=int,
        default=defaults.uncached_codes,
        help="fresh codes for the uncached renders (each rendered once)",
    )
    data.add_argument(
        "--big-user-codes",
        type=int,
        default=defaults.big_user_codes,
        help="codes of the one user whose pages are compared",
    )
    data.add_argument("--page-size", type=int, default=defaults.page_size)
    data.add_argument(
        "--far-page",
        type=int,
        default=defaults.far_page,
        help="the page compared with the first",
    )
    data.add_argument(
        "--table-rows",
        type=int,
        default=defaults.table_rows,
        help="rows in qr_codes for the GetQrCode growth check",
    )
    data.add_argument(
        "--bulk-owners",
        type=int,
        default=defaults.bulk_owners,
        help="accounts the bulk rows are spread over",
    )
    memory = parser.add_argument_group("memory")
    memory.add_argument(
        "--memory-first",
        type=int,
        default=defaults.memory_first,
        help="requests before the first RSS reading",
    )
    memory.add_argument(
        "--memory-requests",
        type=int,
        default=defaults.memory_requests,
        help="requests before the second RSS reading",
    )
    memory.add_argument(
        "--memory-seconds",
        type=float,
        default=defaults.memory_seconds,
        help="the most time the memory phase may take (it also ends in time for "
        "the whole run to finish 150 s before --time-limit)",
    )
    run = parser.add_argument_group("run")
    run.add_argument(
        "--skip",
        default="",
        help=f"comma-separated phases to skip: {', '.join(PHASES)}",
    )
    run.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an extra QRSYS_* variable for the qrsys server (repeatable)",
    )
    run.add_argument(
        "--time-limit",
        type=float,
        default=defaults.time_limit,
        help="the run-time target, seconds",
    )
    run.add_argument("--output", type=Path, default=RESULTS, help="results folder")
    run.add_argument(
        "--profile",
        action="store_true",
        help="record the qrsys server with py-spy during each timed run (needs "
        "py-spy installed; slows the server, so use for hot spots, not numbers)",
    )
    args = parser.parse_args(argv)

    skip = frozenset(name.strip() for name in args.skip.split(",") if name.strip())
    unknown = skip - set(PHASES)
    if unknown:
        parser.error(f"unknown phases to skip: {', '.join(sorted(unknown))}")
    server_env: dict[str, str] = {}
    for item in args.server_env:
        key, sep, value = item.partition("=")
        if not sep or not key.startswith("QRSYS_"):
            parser.error(f"--server-env wants QRSYS_NAME=value, got {item!r}")
        server_env[key] = value
    values: dict[str, Any] = {
        field.name: getattr(args, field.name)
        for field in fields(Options)
        if hasattr(args, field.name) and field.name not in ("skip", "server_env")
    }
    profile_dir = None
    if args.profile:
        if find_py_spy() is None:
            parser.error("--profile needs py-spy: pip install py-spy")
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        profile_dir = args.output / f"profile-{stamp}"
    options = Options(
        **values, skip=skip, server_env=server_env, profile_dir=profile_dir
    )
    return options, args.output


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; see the module docstring."""
    options, output = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    started = time.monotonic()
    started_utc = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    machine = report.machine()
    print(
        f"qrsys benchmark: {machine['cpu_model']}, {machine['usable_cpus']} CPUs; "
        f"{options.workers} load processes × {options.concurrency} in flight, "
        f"{options.warmup:g}+{options.duration:g} s per run",
        flush=True,
    )
    servers: list[Any] = []
    try:
        with (
            tempfile.TemporaryDirectory(prefix="qrsys-bench-") as tmp,
            contextlib.ExitStack() as stack,
        ):
            work = Path(tmp)
            database = stack.enter_context(provision_database(work))
            print(f"database: {database.origin}, PostgreSQL {database.server_version}")
            qrsys = qrsys_server(database.url, work, options.server_env)
            ceiling = ceiling_server(work)
            servers = [qrsys, ceiling]
            for server in servers:
                stack.callback(server.stop)
                server.start()
            sampler = RssSampler()
            sampler.watch(qrsys.pid)
            sampler.start()
            stack.callback(sampler.stop)
            pool = stack.enter_context(LoadPool(options.workers, "load"))
            probe = stack.enter_context(LoadPool(1, "probe"))
            bench = Benchmark(options, database, qrsys, ceiling, pool, probe, sampler)
            bench.started = started
            try:
                asyncio.run(bench.run())
            except Exception:
                traceback.print_exc()
                for server in servers:
                    print(f"--- the end of {server.name}'s log ---")
                    print(server.log_tail())
                return 1
            total = time.monotonic() - started
            bench.finish(total)
            result = {
                "started_utc": started_utc,
                "machine": machine,
                "source": report.source(Path(__file__).resolve().parent.parent),
                "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
                "database": {
                    "origin": database.origin,
                    "server_version": database.server_version,
                },
                "options": {
                    **{
                        field.name: getattr(options, field.name)
                        for field in fields(Options)
                    },
                },
                "notes": notes(options),
                "phase_seconds": {
                    k: round(v, 1) for k, v in bench.phase_seconds.items()
                },
                "total_seconds": round(total, 1),
                "details": bench.details,
                "runs": bench.runs,
                "rss_samples": sampler.as_json(),
            }
            json_path, md_path = report.write(result, bench.rows, bench.checks, output)
            print()
            print(report.markdown(result, bench.rows, bench.checks))
            print(f"written: {json_path} and {md_path} (and latest.md)")
            print("stopping servers and removing the database...", flush=True)
    except KeyboardInterrupt:
        print("\ninterrupted; everything started was stopped", file=sys.stderr)
        return 130
    print(f"done in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
