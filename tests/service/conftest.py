"""A real qrsys server on a free port, real channels to it, and callers."""

from __future__ import annotations

import io
import secrets
import subprocess
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import zxingcpp
from PIL import Image

from qrsys_grpc.server import RunningServer, start_server
from qrsys_grpc.settings import Settings
from qrsys_grpc.v1 import auth_pb2, auth_pb2_grpc, qr_code_pb2, qr_code_pb2_grpc
from tests.conftest import MIGRATIONS

PASSWORD = "a-long-enough-pass"


@pytest.fixture(scope="session")
def server_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings of the test server: a random key, any free port."""
    return Settings(
        listen_address="127.0.0.1:0",
        data_dir=tmp_path_factory.mktemp("qrsys-data"),
        jwt_secret=secrets.token_urlsafe(48),
        migrations_dir=MIGRATIONS,
        grace_period_seconds=1,
        render_processes=1,
        # Every test calls from 127.0.0.1, so the per-address allowance is
        # raised here and tested on a server of its own; replayed refresh
        # tokens are tested without the grace window, which has its own test.
        login_free_failures_per_address=10_000,
        refresh_reuse_grace_seconds=0,
    )


@pytest.fixture(scope="session")
async def server(
    server_settings: Settings, database_url: str
) -> AsyncIterator[RunningServer]:
    """A running qrsys server backed by the test database."""
    running = await start_server(server_settings, database_url)
    try:
        yield running
    finally:
        await running.stop(1)


@pytest.fixture(scope="session")
async def channel(server: RunningServer) -> AsyncIterator[grpc.aio.Channel]:
    """A channel to the test server over TCP."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as chan:
        yield chan


@pytest.fixture(scope="session")
def auth(channel: grpc.aio.Channel) -> auth_pb2_grpc.AuthServiceStub:
    """An AuthService client."""
    return auth_pb2_grpc.AuthServiceStub(channel)


@pytest.fixture(scope="session")
def qr(channel: grpc.aio.Channel) -> qr_code_pb2_grpc.QrCodeServiceStub:
    """A QrCodeService client."""
    return qr_code_pb2_grpc.QrCodeServiceStub(channel)


@dataclass
class Account:
    """A registered user with the tokens of one session."""

    email: str
    user_id: str
    tokens: auth_pb2.TokenPair

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        """Call metadata carrying this account's access token."""
        return (("authorization", f"Bearer {self.tokens.access_token}"),)


def unique_email(prefix: str = "user") -> str:
    """An address no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}@example.com"


async def register(
    auth: auth_pb2_grpc.AuthServiceStub, email: str | None = None
) -> Account:
    """Register a new account and return it signed in."""
    email = email or unique_email()
    response = await auth.Register(
        auth_pb2.RegisterRequest(email=email, password=PASSWORD, display_name="Test")
    )
    return Account(email, response.user.id, response.tokens)


@pytest.fixture
async def account(auth: auth_pb2_grpc.AuthServiceStub) -> Account:
    """A freshly registered, signed-in user."""
    return await register(auth)


@pytest.fixture
async def other_account(auth: auth_pb2_grpc.AuthServiceStub) -> Account:
    """A second user, to check that users cannot see each other's codes."""
    return await register(auth)


async def create_code(
    qr: qr_code_pb2_grpc.QrCodeServiceStub,
    account: Account,
    *,
    title: str = "Table 1",
    url: str = "https://menu.example/r/1?table=1",
) -> qr_code_pb2.QrCode:
    """Store a URL code for ``account``."""
    response = await qr.CreateQrCode(
        qr_code_pb2.CreateQrCodeRequest(
            qr_code=qr_code_pb2.QrCode(
                title=title, content=qr_code_pb2.QrContent(url=url)
            )
        ),
        metadata=account.metadata,
    )
    return response.qr_code


def decoded(png: bytes) -> list[str]:
    """What zxing-cpp reads in a PNG."""
    image = Image.open(io.BytesIO(png))
    return [barcode.text for barcode in zxingcpp.read_barcodes(image)]


def scrape(port: int) -> dict[str, float]:
    """The samples of /metrics as ``name{labels}`` -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        assert r.status == 200
        text = r.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            samples[key] = float(value)
    return samples


def project_root() -> Path:
    """The repository's top folder."""
    return MIGRATIONS.parent


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Server processes started by a test, killed if the test left them."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()
