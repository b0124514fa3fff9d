"""Start-up and shutdown: settings, database, services, workers, signals.

``qrsys-server`` reads its configuration from QRSYS_* variables, starts an
embedded PostgreSQL when no database is configured, optionally migrates it,
refuses to serve a schema behind the newest revision, and serves both
services with health and reflection until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import os
import signal
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import grpc
from alembic.util import CommandError as AlembicError
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter
from pydantic import ValidationError
from sqlalchemy import exc as sa_exc

from qrsys_grpc import errors, logs, migrate
from qrsys_grpc.auth.accounts import Accounts
from qrsys_grpc.auth.handlers import AuthServicer
from qrsys_grpc.auth.throttle import ThrottlePolicy
from qrsys_grpc.auth.tokens import (
    KEY_FILE_NAME,
    SigningKey,
    TokenIssuer,
    UnusableKey,
    load_key_directory,
    load_or_create_key_file,
)
from qrsys_grpc.blocking import BlockingRunner
from qrsys_grpc.embedded import EmbeddedPostgres
from qrsys_grpc.interceptors import CallInterceptor
from qrsys_grpc.metrics import CacheStats, Metrics, SessionStats
from qrsys_grpc.qr.codes import QrCodes
from qrsys_grpc.qr.handlers import QrCodeServicer
from qrsys_grpc.qr.render import RenderCache
from qrsys_grpc.repository.database import Database
from qrsys_grpc.repository.live_sessions import LiveSessions
from qrsys_grpc.settings import MAX_WORKERS, Settings
from qrsys_grpc.tls import ReloadingCredentials
from qrsys_grpc.tracing import tracing_interceptors
from qrsys_grpc.v1 import auth_pb2, auth_pb2_grpc, qr_code_pb2, qr_code_pb2_grpc

logger = logging.getLogger(__name__)

LIVENESS_SERVICE = "liveness"
"""A health service name that stays SERVING while the process runs, for
liveness probes that must not fail when only the database is down."""

SERVICE_NAMES = (
    auth_pb2.DESCRIPTOR.services_by_name["AuthService"].full_name,
    qr_code_pb2.DESCRIPTOR.services_by_name["QrCodeService"].full_name,
)


MAX_METADATA_BYTES = 16 * 1024
"""The most metadata a call may carry."""


class StartupError(RuntimeError):
    """The server cannot start; the message says what to do."""


def signing_keys(settings: Settings) -> tuple[SigningKey, list[SigningKey]]:
    """The key that signs and every key that verifies.

    Raises:
        StartupError: the keys are unusable or the signing key is unclear.
    """
    try:
        if settings.jwt_keys_dir is not None:
            keys = load_key_directory(settings.jwt_keys_dir)
        elif settings.jwt_secret is not None:
            keys = [SigningKey.hs256(settings.jwt_secret.get_secret_value().encode())]
        else:
            path = settings.jwt_secret_file or settings.data_dir / KEY_FILE_NAME
            keys = [SigningKey.hs256(load_or_create_key_file(path))]
            if settings.database_url and settings.jwt_secret_file is None:
                logger.warning(
                    "no token key is configured: tokens are signed with the key "
                    "generated in %s; replicas sharing this database must share it",
                    path,
                )
    except (UnusableKey, OSError) as exc:
        raise StartupError(f"cannot load the token keys: {exc}") from exc

    signers = [key for key in keys if key.sign_with is not None]
    if settings.jwt_signing_kid is not None:
        chosen = [key for key in signers if key.kid == settings.jwt_signing_kid]
        if not chosen:
            raise StartupError(
                f"QRSYS_JWT_SIGNING_KID={settings.jwt_signing_kid} names no key "
                "that can sign"
            )
        return chosen[0], keys
    if len(signers) != 1:
        raise StartupError(
            f"{len(signers)} keys can sign; set QRSYS_JWT_SIGNING_KID to one of "
            + ", ".join(key.kid for key in signers)
        )
    return signers[0], keys


def token_issuer(settings: Settings) -> TokenIssuer:
    """The token issuer for the configured (or generated) keys.

    Raises:
        StartupError: the keys are unusable.
    """
    signing, keys = signing_keys(settings)
    return TokenIssuer(
        signing,
        verify_keys=tuple(keys),
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        access_ttl=timedelta(seconds=settings.access_token_ttl_seconds),
        refresh_ttl=timedelta(seconds=settings.refresh_token_ttl_seconds),
    )


@dataclass
class RunningServer:
    """A started server with what must be closed after it."""

    server: grpc.aio.Server
    port: int
    health: HealthServicer
    database: Database
    blocking: BlockingRunner
    metrics: Metrics
    metrics_port: int | None
    health_task: asyncio.Task[None]
    live_sessions: LiveSessions
    tracer_provider: TracerProvider | None = None

    async def stop(self, grace: float) -> None:
        """Refuse new calls, let calls in flight finish, then close."""
        self.health_task.cancel()
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        await self.live_sessions.close()
        await self.database.close()
        self.blocking.close()
        self.metrics.close()
        if self.tracer_provider is not None:
            self.tracer_provider.shutdown()


async def follow_database(
    database: Database, health: HealthServicer, interval: float
) -> None:
    """Keep health SERVING while PostgreSQL answers, NOT_SERVING otherwise.

    The server starts out SERVING; this watches for changes.
    """
    serving = True
    while True:
        await asyncio.sleep(interval)
        try:
            await asyncio.wait_for(database.ping(), timeout=max(interval, 1.0))
            reachable = True
        except (errors.QrsysError, TimeoutError):
            reachable = False
        except Exception:
            # Whatever went wrong, the watch goes on; health must not freeze.
            logger.exception("the database health check failed unexpectedly")
            reachable = False
        if reachable != serving:
            serving = reachable
            state = (
                health_pb2.HealthCheckResponse.SERVING
                if reachable
                else health_pb2.HealthCheckResponse.NOT_SERVING
            )
            for name in ("", *SERVICE_NAMES):
                await health.set(name, state)
            if reachable:
                logger.info("the database answers; serving")
            else:
                logger.warning("the database does not answer; not serving")


def server_options(settings: Settings, *, reuse_port: bool) -> list[tuple[str, int]]:
    """Channel arguments for the limits in ``settings``."""
    return [
        # Soft and hard limit alike, so that metadata up to 16 KiB always
        # passes and more never does (between the two, gRPC refuses at random).
        ("grpc.max_metadata_size", MAX_METADATA_BYTES),
        ("grpc.absolute_max_metadata_size", MAX_METADATA_BYTES),
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.so_reuseport", 1 if reuse_port else 0),
        ("grpc.keepalive_time_ms", int(settings.keepalive_time_seconds * 1000)),
        ("grpc.keepalive_timeout_ms", int(settings.keepalive_timeout_seconds * 1000)),
        (
            "grpc.http2.min_ping_interval_without_data_ms",
            int(settings.keepalive_min_client_interval_seconds * 1000),
        ),
        ("grpc.keepalive_permit_without_calls", 1),
    ]


async def start_server(
    settings: Settings,
    database_url: str,
    *,
    reuse_port: bool = False,
    metrics_address: str | None = None,
    span_exporter: SpanExporter | None = None,
) -> RunningServer:
    """Build and start a server on ``settings.listen_address``.

    Raises:
        StartupError: the keys or TLS files are unusable, the schema is
            behind, or an address cannot be bound.
    """
    tokens = token_issuer(settings)
    credentials = None
    if settings.tls_cert_file is not None and settings.tls_key_file is not None:
        try:
            credentials = ReloadingCredentials(
                settings.tls_cert_file,
                settings.tls_key_file,
                settings.tls_client_ca_file,
            ).server_credentials()
        except OSError as exc:
            raise StartupError(f"cannot read the TLS files: {exc}") from exc

    database = Database(
        database_url,
        pool_size=settings.db_pool_size,
        statement_timeout_seconds=settings.db_statement_timeout_seconds,
        connect_timeout_seconds=settings.db_connect_timeout_seconds,
    )
    try:
        await migrate.ensure_current(database.engine, settings.migrations_dir)
    except migrate.SchemaOutOfDate as exc:
        await database.close()
        raise StartupError(str(exc)) from exc
    except Exception as exc:
        await database.close()
        raise StartupError(f"cannot reach the database: {exc}") from exc

    blocking = BlockingRunner(settings.blocking_threads, settings.render_processes)
    cache = RenderCache(settings.render_cache_bytes)
    live_sessions = LiveSessions(
        database,
        max_entries=settings.session_cache_entries,
        keepalive_seconds=settings.health_check_interval_seconds,
    )
    accounts = Accounts(
        database,
        blocking,
        tokens,
        ThrottlePolicy(
            free_failures_per_account=settings.login_free_failures_per_account,
            free_failures_per_address=settings.login_free_failures_per_address,
            max_delay=timedelta(seconds=settings.login_max_delay_seconds),
        ),
        refresh_reuse_grace=timedelta(seconds=settings.refresh_reuse_grace_seconds),
        live_sessions=live_sessions,
    )
    qr_codes = QrCodes(database, blocking, cache)
    metrics = Metrics()
    metrics.watch(
        database.pool_stats,
        lambda: CacheStats(
            cache.hits, cache.misses, cache.current_bytes, cache.max_bytes
        ),
        lambda: SessionStats(
            live_sessions.hits,
            live_sessions.misses,
            len(live_sessions),
            live_sessions.listening,
        ),
    )

    tracing, tracer_provider = tracing_interceptors(settings.tracing, span_exporter)
    server = grpc.aio.server(
        interceptors=[*tracing, CallInterceptor(accounts, metrics)],
        options=server_options(settings, reuse_port=reuse_port),
        maximum_concurrent_rpcs=settings.max_concurrent_rpcs or None,
    )
    auth_pb2_grpc.add_AuthServiceServicer_to_server(AuthServicer(accounts), server)
    qr_code_pb2_grpc.add_QrCodeServiceServicer_to_server(
        QrCodeServicer(qr_codes, accounts, settings.max_message_bytes), server
    )
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection(
        (
            *SERVICE_NAMES,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ),
        server,
    )

    async def give_up(message: str) -> StartupError:
        await database.close()
        blocking.close()
        metrics.close()
        if tracer_provider is not None:
            tracer_provider.shutdown()
        return StartupError(message)

    try:
        if credentials is None:
            port = server.add_insecure_port(settings.listen_address)
        else:
            port = server.add_secure_port(settings.listen_address, credentials)
    except RuntimeError as exc:
        port = 0
        logger.debug("bind failed: %s", exc)
    if port == 0:
        raise await give_up(
            f"cannot listen on {settings.listen_address}: the address is in use "
            "or invalid (set QRSYS_LISTEN_ADDRESS)"
        )
    metrics_port = None
    address = settings.metrics_address if metrics_address is None else metrics_address
    if address:
        try:
            metrics_port = metrics.serve(address)
        except (OSError, ValueError) as exc:
            raise await give_up(
                f"cannot serve metrics on {address}: {exc} (set QRSYS_METRICS_ADDRESS)"
            ) from exc

    await blocking.start()
    await server.start()
    # The schema check just reached the database: start out SERVING.
    for name in (LIVENESS_SERVICE, "", *SERVICE_NAMES):
        await health.set(name, health_pb2.HealthCheckResponse.SERVING)
    health_task = asyncio.create_task(
        follow_database(database, health, settings.health_check_interval_seconds)
    )
    live_sessions.start()
    return RunningServer(
        server,
        port,
        health,
        database,
        blocking,
        metrics,
        metrics_port,
        health_task,
        live_sessions,
        tracer_provider,
    )


async def serve(
    settings: Settings,
    database_url: str,
    *,
    reuse_port: bool,
    metrics_address: str | None = None,
) -> None:
    """Serve until SIGTERM or SIGINT, then shut down gracefully."""
    running = await start_server(
        settings, database_url, reuse_port=reuse_port, metrics_address=metrics_address
    )
    if running.metrics_port is not None:
        logger.info("metrics on port %d at /metrics", running.metrics_port)
    host = settings.listen_address.rpartition(":")[0]
    logger.info("qrsys serving on %s:%d", host, running.port)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()

    logger.info(
        "shutting down; calls in flight have %.0fs", settings.grace_period_seconds
    )
    await running.stop(settings.grace_period_seconds)
    logger.info("stopped")


def worker_metrics_address(address: str, index: int) -> str:
    """Worker ``index``'s metrics address: the configured port plus ``index``."""
    if not address:
        return ""
    host, _, port = address.rpartition(":")
    if not port.isdigit():
        return address
    return f"{host}:{int(port) + index}" if int(port) else address


def _worker(settings: Settings, database_url: str, metrics_address: str) -> None:
    logs.configure(settings.log_format, settings.log_level)
    try:
        asyncio.run(
            serve(
                settings,
                database_url,
                reuse_port=True,
                metrics_address=metrics_address,
            )
        )
    except StartupError as exc:
        logger.error("%s", exc)
        sys.exit(2)


def run_workers(settings: Settings, database_url: str) -> int:
    """Run ``settings.workers`` server processes on one address.

    Each is spawned fresh (never forked after gRPC started) with its own pool;
    SO_REUSEPORT lets the kernel spread connections between them. Worker N
    serves its metrics on the metrics port plus N.
    """
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(
            target=_worker,
            args=(
                settings,
                database_url,
                worker_metrics_address(settings.metrics_address, index),
            ),
        )
        for index in range(settings.workers)
    ]
    for process in workers:
        process.start()

    def forward(signum: int, _frame: object) -> None:
        for process in workers:
            if process.pid is not None and process.is_alive():
                os.kill(process.pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for process in workers:
        process.join()
    return max((process.exitcode or 0) for process in workers)


def upgrade_schema(database_url: str, migrations_dir: Path) -> None:
    """Upgrade the database to the newest revision.

    Raises:
        StartupError: the database cannot be reached or a revision failed.
    """
    try:
        migrate.upgrade(database_url, migrations_dir)
    except (sa_exc.SQLAlchemyError, AlembicError, OSError) as exc:
        raise StartupError(f"cannot migrate the database: {exc}") from exc
    logger.info("database schema is at the newest revision")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line of ``qrsys-server``."""
    parser = argparse.ArgumentParser(
        prog="qrsys-server",
        description=(
            "Serve qrsys (AuthService and QrCodeService over gRPC). Configured "
            "by QRSYS_* environment variables; see the README. With "
            "QRSYS_DATABASE_URL unset, an embedded PostgreSQL is started in "
            "QRSYS_DATA_DIR."
        ),
    )
    parser.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="server processes sharing the listen address, 1 to 64 "
        "(overrides QRSYS_WORKERS; default 1)",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--migrate",
        action="store_true",
        help="upgrade the database schema to the newest revision, then serve",
    )
    mode.add_argument(
        "--migrate-only",
        action="store_true",
        help="upgrade the database schema to the newest revision and exit",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``qrsys-server`` console script."""
    args = parse_args(argv)
    if args.workers is not None and not 1 <= args.workers <= MAX_WORKERS:
        print(f"qrsys-server: --workers must be 1 to {MAX_WORKERS}", file=sys.stderr)
        return 2
    overrides = {} if args.workers is None else {"workers": args.workers}
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        print("qrsys-server: invalid configuration:", file=sys.stderr)
        for error in exc.errors():
            names = [f"QRSYS_{str(part).upper()}" for part in error["loc"][:1]]
            print(f"  {' '.join(names) or 'settings'}: {error['msg']}", file=sys.stderr)
        return 2
    logs.configure(settings.log_format, settings.log_level)

    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(
            f"qrsys-server: invalid configuration:\n  QRSYS_DATA_DIR: {exc}",
            file=sys.stderr,
        )
        return 2
    embedded = (
        EmbeddedPostgres(settings.data_dir) if not settings.database_url else None
    )
    try:
        database_url = settings.database_url or embedded.start()  # type: ignore[union-attr]
        # The embedded database is qrsys's own, so it is always kept current.
        if args.migrate or args.migrate_only or embedded is not None:
            upgrade_schema(database_url, settings.migrations_dir)
            if args.migrate_only:
                return 0
        if settings.workers > 1:
            return run_workers(settings, database_url)
        asyncio.run(serve(settings, database_url, reuse_port=False))
    except StartupError as exc:
        logger.error("%s", exc)
        return 2
    finally:
        if embedded is not None:
            embedded.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
