"""The data the scenarios need, made through the API where that is cheap.

Accounts and every code a scenario reads or renders are made through
AuthService and QrCodeService (``BatchCreateQrCodes``, up to 1000 codes a
call), so they are exactly what the server itself would store. Only the
bulk rows of the data-growth checks (100,000 codes of one user, a million
rows in the table) are written with SQL ``INSERT ... SELECT`` over
``generate_series``: every such row copies the content, style, encoded text
and symbol version of one code the API stored, with its own id, title and
creation time, and each extra owner is a copy of a real account with its
own id and email. Those rows are valid: the server reads them like any
other.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass

import grpc
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from qrsys_grpc.repository.database import async_url
from qrsys_grpc.v1 import auth_pb2, auth_pb2_grpc, qr_code_pb2, qr_code_pb2_grpc

# Every bench account has this password; the accounts live only as long as
# the bench's own database.
PASSWORD = "bench-password-0123456789"  # noqa: S105
MAX_BATCH = 1000
FIRST_NUMBER = 100_000
"""Codes are numbered from here, so every number has six digits and codes
of one template have texts of one length (so one symbol version)."""


@dataclass(frozen=True)
class Account:
    """A registered user and the access token of one of its sessions."""

    email: str
    user_id: str
    access_token: str

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        """Call metadata carrying the access token."""
        return (("authorization", f"Bearer {self.access_token}"),)


@dataclass(frozen=True)
class StoredCode:
    """A code the API stored: its id and the exact text in its symbol."""

    id: str
    encoded_text: str


class Api:
    """Typed calls to a qrsys server, for making fixtures."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.auth = auth_pb2_grpc.AuthServiceStub(channel)
        self.qr = qr_code_pb2_grpc.QrCodeServiceStub(channel)

    async def register(self, label: str) -> Account:
        """Register a new account ``<label>-<random>@bench.example.com``."""
        email = f"{label}-{uuid.uuid4().hex[:12]}@bench.example.com"
        answer = await self.auth.Register(
            auth_pb2.RegisterRequest(
                email=email, password=PASSWORD, display_name=f"Bench {label}"
            )
        )
        return Account(email, answer.user.id, answer.tokens.access_token)

    async def batch_create(
        self, account: Account, url_template: str, count: int, *, parallel: int = 2
    ) -> list[StoredCode]:
        """Store ``count`` URL codes numbered from ``FIRST_NUMBER``.

        ``url_template`` has ``{n}`` where the number goes. Batches of up to
        1000 run ``parallel`` at a time.
        """
        starts = list(range(FIRST_NUMBER, FIRST_NUMBER + count, MAX_BATCH))
        slots = asyncio.Semaphore(parallel)

        async def one(first: int) -> list[StoredCode]:
            size = min(MAX_BATCH, FIRST_NUMBER + count - first)
            request = qr_code_pb2.BatchCreateQrCodesRequest(
                template=qr_code_pb2.QrCode(
                    title="Bench {n}",
                    content=qr_code_pb2.QrContent(url=url_template),
                ),
                first_number=first,
                count=size,
            )
            async with slots:
                answer = await self.qr.BatchCreateQrCodes(
                    request, metadata=account.metadata, timeout=120
                )
            return [StoredCode(code.id, code.encoded_text) for code in answer.qr_codes]

        batches = await asyncio.gather(*(one(first) for first in starts))
        return [code for batch in batches for code in batch]

    async def create(self, account: Account, url: str) -> StoredCode:
        """Store one URL code."""
        answer = await self.qr.CreateQrCode(
            qr_code_pb2.CreateQrCodeRequest(
                qr_code=qr_code_pb2.QrCode(
                    title="Bench template", content=qr_code_pb2.QrContent(url=url)
                )
            ),
            metadata=account.metadata,
        )
        return StoredCode(answer.qr_code.id, answer.qr_code.encoded_text)

    async def render_png(self, account: Account, code_id: str) -> bytes:
        """RenderQrCode as PNG at the default scale."""
        answer = await self.qr.RenderQrCode(
            qr_code_pb2.RenderQrCodeRequest(
                id=code_id, format=qr_code_pb2.IMAGE_FORMAT_PNG
            ),
            metadata=account.metadata,
        )
        return bytes(answer.data)

    async def page_token_of_page(
        self, account: Account, page: int, page_size: int
    ) -> tuple[str, list[float]]:
        """Walk ListQrCodes to the token that fetches page ``page`` (from 1).

        Returns the token and the latency in ms of every page walked.
        """
        token = ""
        latencies: list[float] = []
        for _ in range(page - 1):
            began = time.perf_counter()
            answer = await self.qr.ListQrCodes(
                qr_code_pb2.ListQrCodesRequest(page_size=page_size, page_token=token),
                metadata=account.metadata,
                timeout=60,
            )
            latencies.append((time.perf_counter() - began) * 1000)
            token = answer.next_page_token
            if not token:
                raise RuntimeError(f"the listing ended before page {page}")
        return token, latencies


class Sql:
    """Bulk SQL for the data-growth checks, on the benchmark's database."""

    def __init__(self, database_url: str) -> None:
        self.engine: AsyncEngine = create_async_engine(async_url(database_url))

    async def close(self) -> None:
        """Close the connections."""
        await self.engine.dispose()

    async def count_codes(self) -> int:
        """Rows in ``qr_codes``."""
        async with self.engine.connect() as conn:
            return int(await conn.scalar(sa.text("SELECT count(*) FROM qr_codes")))

    async def copy_code(self, template_id: str, owner_id: str, copies: int) -> None:
        """Insert ``copies`` rows for ``owner_id`` copying the code
        ``template_id``, each with a new id, title and creation time (one
        millisecond apart, older than the template)."""
        async with self.engine.begin() as conn:
            await conn.execute(
                sa.text(
                    """
                    INSERT INTO qr_codes (id, owner_id, title, kind, content, style,
                        encoded_text, symbol_version, version, create_time,
                        update_time)
                    SELECT gen_random_uuid(), CAST(:owner AS uuid),
                        'Bench copy ' || n, t.kind, t.content, t.style,
                        t.encoded_text, t.symbol_version, 1,
                        t.create_time - n * interval '1 millisecond',
                        t.create_time - n * interval '1 millisecond'
                    FROM qr_codes t, generate_series(1, :copies) AS n
                    WHERE t.id = CAST(:template AS uuid)
                    """
                ),
                {"owner": owner_id, "template": template_id, "copies": copies},
            )

    async def fill_table(
        self, template_id: str, owner_id: str, total: int, owners: int
    ) -> int:
        """Add rows until ``qr_codes`` holds ``total``: ``owners`` new users
        (copies of ``owner_id``'s account) sharing copies of ``template_id``.

        Returns how many rows were added.
        """
        async with self.engine.begin() as conn:
            have = int(await conn.scalar(sa.text("SELECT count(*) FROM qr_codes")))
            missing = max(0, total - have)
            if missing == 0:
                return 0
            await conn.execute(
                sa.text(
                    """
                    CREATE TEMPORARY TABLE bench_owners ON COMMIT DROP AS
                    SELECT gen_random_uuid() AS id, o AS ordinal
                    FROM generate_series(0, :owners - 1) AS o
                    """
                ),
                {"owners": owners},
            )
            await conn.execute(
                sa.text(
                    """
                    INSERT INTO users (id, email, display_name, password_hash,
                        create_time, update_time)
                    SELECT b.id, 'bulk-' || b.id || '@bench.example.com',
                        u.display_name, u.password_hash, now(), now()
                    FROM bench_owners b, users u
                    WHERE u.id = CAST(:owner AS uuid)
                    """
                ),
                {"owner": owner_id},
            )
            await conn.execute(
                sa.text(
                    """
                    INSERT INTO qr_codes (id, owner_id, title, kind, content, style,
                        encoded_text, symbol_version, version, create_time,
                        update_time)
                    SELECT gen_random_uuid(), b.id, 'Bulk ' || n, t.kind,
                        t.content, t.style, t.encoded_text, t.symbol_version, 1,
                        t.create_time - n * interval '1 millisecond',
                        t.create_time - n * interval '1 millisecond'
                    FROM qr_codes t, generate_series(1, :missing) AS n
                    JOIN bench_owners b ON b.ordinal = n % :owners
                    WHERE t.id = CAST(:template AS uuid)
                    """
                ),
                {"template": template_id, "missing": missing, "owners": owners},
            )
        return missing

    async def analyze(self) -> None:
        """Refresh the planner's statistics, as autovacuum would in time."""
        async with self.engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(sa.text("VACUUM ANALYZE qr_codes"))
            await conn.execute(sa.text("ANALYZE users"))
