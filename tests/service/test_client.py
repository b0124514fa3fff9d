"""The qrsys client library against the real test server.

The server runs in pytest's event loop, so every use of the blocking
``QrsysClient`` goes through ``asyncio.to_thread``: a blocking call on the
loop's own thread would wait for a server that cannot run.
"""

from __future__ import annotations

import asyncio
import contextlib
import pickle
import socket
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from grpc_status import rpc_status

from qrsys_grpc.auth.tokens import SigningKey
from qrsys_grpc.client import (
    AbortedError,
    AlreadyExistsError,
    AsyncQrsysClient,
    DeadlineExceededError,
    InvalidArgumentError,
    NotFoundError,
    QrContent,
    QrStyle,
    QrsysClient,
    QrsysError,
    ResourceExhaustedError,
    TlsConfig,
    TokenPair,
    UnauthenticatedError,
    UnavailableError,
    WifiContent,
    error_correction_value,
    image_format_value,
)
from qrsys_grpc.server import RunningServer, start_server
from qrsys_grpc.settings import Settings
from qrsys_grpc.v1 import auth_pb2_grpc, qr_code_pb2, qr_code_pb2_grpc
from tests.service.conftest import (
    PASSWORD,
    Account,
    decoded,
    register,
    unique_email,
)
from tests.service.test_operations import Authority

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MENU = "https://menu.example/r/1?table={n}"
WRONG = "not-the-password"


# -- helpers ---------------------------------------------------------------


def expired_access_token(settings: Settings, access_token: str) -> str:
    """An access token for the same user and live session as
    ``access_token``, signed with the test server's key, that expired five
    minutes ago."""
    assert settings.jwt_secret is not None
    key = SigningKey.hs256(settings.jwt_secret.get_secret_value().encode())
    claims: dict[str, Any] = jwt.decode(
        access_token, options={"verify_signature": False}
    )
    issued = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=20)
    claims.update(
        iat=issued,
        nbf=issued,
        exp=issued + timedelta(minutes=15),
        jti=uuid.uuid4().hex,
    )
    return jwt.encode(
        claims, key.sign_with, algorithm=key.algorithm, headers={"kid": key.kid}
    )


def pair_of(account: Account) -> TokenPair:
    """The account's tokens as the client keeps them."""
    return TokenPair.from_proto(account.tokens)


def target(server: RunningServer) -> str:
    """The test server's address."""
    return f"127.0.0.1:{server.port}"


def free_port() -> int:
    """A local port nothing listens on (just now)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
async def client(
    server: RunningServer, account: Account
) -> AsyncIterator[AsyncQrsysClient]:
    """An asyncio client signed in as ``account``."""
    async with AsyncQrsysClient(target(server), tokens=pair_of(account)) as client:
        yield client


# -- signing in ------------------------------------------------------------


async def test_register_login_whoami_and_logout(server: RunningServer) -> None:
    email = unique_email("client")
    seen: list[TokenPair] = []
    async with AsyncQrsysClient(target(server), on_tokens=seen.append) as client:
        assert client.tokens is None
        session = await client.register(email, PASSWORD, "Trattoria")
        assert session.user.email == email
        assert session.user.display_name == "Trattoria"
        assert seen == [session.tokens]
        assert client.tokens == session.tokens
        assert session.tokens.access_token_expire_time is not None
        assert session.tokens.access_token_expire_time > datetime.now(UTC)

        me = await client.whoami()
        assert me.id == session.user.id

        again = await client.login(email.upper(), PASSWORD)
        assert again.user.id == session.user.id
        assert again.tokens.refresh_token != session.tokens.refresh_token
        assert seen == [session.tokens, again.tokens]

        await client.logout()
        assert client.tokens is None
        with pytest.raises(UnauthenticatedError) as caught:
            await client.whoami()
        assert caught.value.reason == "TOKEN_MISSING"

    # The first session is still live; the logged-out one is not.
    async with AsyncQrsysClient(target(server), tokens=session.tokens) as first:
        assert (await first.whoami()).id == session.user.id
    async with AsyncQrsysClient(target(server), tokens=again.tokens) as ended:
        with pytest.raises(UnauthenticatedError) as caught:
            await ended.whoami()
        assert caught.value.reason == "SESSION_REVOKED"


async def test_sync_client_signs_in_and_out(server: RunningServer) -> None:
    email = unique_email("sync")

    def flow() -> tuple[str, str, str]:
        seen: list[TokenPair] = []
        with QrsysClient(target(server), on_tokens=seen.append) as client:
            registered = client.register(email, PASSWORD)
            client.logout()
            logged_in = client.login(email, PASSWORD)
            me = client.whoami()
            refreshed = client.refresh()
            assert seen == [registered.tokens, logged_in.tokens, refreshed]
            assert client.whoami().id == me.id
            return registered.user.id, me.id, me.email

    registered_id, me_id, me_email = await asyncio.to_thread(flow)
    assert registered_id == me_id
    assert me_email == email


# -- refreshing ------------------------------------------------------------


async def test_expired_access_token_is_refreshed_and_the_call_retried(
    server: RunningServer, server_settings: Settings, account: Account
) -> None:
    expired = expired_access_token(server_settings, account.tokens.access_token)
    old = TokenPair(expired, account.tokens.refresh_token)
    seen: list[TokenPair] = []
    async with AsyncQrsysClient(
        target(server), tokens=old, on_tokens=seen.append
    ) as client:
        me = await client.whoami()
        assert me.id == account.user_id
        assert len(seen) == 1
        assert client.tokens == seen[0]
        assert seen[0].access_token != expired
        assert seen[0].refresh_token != account.tokens.refresh_token

    # The refresh token the client started with was used up by the refresh.
    async with AsyncQrsysClient(target(server), tokens=old) as stale:
        with pytest.raises(UnauthenticatedError) as caught:
            await stale.refresh()
        assert caught.value.reason == "TOKEN_INVALID"


async def test_concurrent_calls_share_one_refresh(
    server: RunningServer, server_settings: Settings, account: Account
) -> None:
    expired = expired_access_token(server_settings, account.tokens.access_token)
    seen: list[TokenPair] = []

    async def persist(pair: TokenPair) -> None:
        await asyncio.sleep(0)
        seen.append(pair)

    async with AsyncQrsysClient(
        target(server),
        tokens=TokenPair(expired, account.tokens.refresh_token),
        on_tokens=persist,
    ) as client:
        users = await asyncio.gather(*(client.whoami() for _ in range(8)))
        assert {user.id for user in users} == {account.user_id}
        # A second refresh would have replayed a used refresh token and so
        # ended the session; one refresh served every call.
        assert len(seen) == 1
        assert (await client.whoami()).id == account.user_id


async def test_export_stream_is_retried_after_a_refresh(
    server: RunningServer, server_settings: Settings, account: Account
) -> None:
    async with AsyncQrsysClient(target(server), tokens=pair_of(account)) as client:
        codes = await client.batch_create("Export {n}", url_template=MENU, count=3)
        live = client.tokens
        assert live is not None
        expired = expired_access_token(server_settings, live.access_token)
        client.tokens = TokenPair(expired, live.refresh_token)
        exported = [item async for item in client.export([c.id for c in codes])]
        assert [item.id for item in exported] == [c.id for c in codes]
        assert client.tokens is not None
        assert client.tokens.access_token != expired


async def test_sync_client_refreshes_an_expired_token(
    server: RunningServer, server_settings: Settings, account: Account
) -> None:
    expired = expired_access_token(server_settings, account.tokens.access_token)
    seen: list[TokenPair] = []

    def flow() -> tuple[str, list[str], str, int]:
        with QrsysClient(
            target(server),
            tokens=TokenPair(expired, account.tokens.refresh_token),
            on_tokens=seen.append,
        ) as client:
            me = client.whoami()
            code = client.create_code("After refresh", url=MENU.format(n=1))
            # Expire it again and go through the export stream.
            assert client.tokens is not None
            client.tokens = TokenPair(
                expired_access_token(server_settings, client.tokens.access_token),
                client.tokens.refresh_token,
            )
            exported = [item.id for item in client.export([code.id])]
            return me.id, exported, code.id, len(seen)

    user_id, exported, code_id, refreshes = await asyncio.to_thread(flow)
    assert user_id == account.user_id
    assert exported == [code_id]
    assert refreshes == 2


async def test_a_revoked_session_is_not_refreshed(
    server: RunningServer, account: Account
) -> None:
    seen: list[TokenPair] = []
    async with AsyncQrsysClient(
        target(server), tokens=pair_of(account), on_tokens=seen.append
    ) as client:
        async with AsyncQrsysClient(target(server), tokens=pair_of(account)) as other:
            await other.logout()
        with pytest.raises(UnauthenticatedError) as caught:
            await client.whoami()
        assert caught.value.reason == "SESSION_REVOKED"
        assert seen == []


# -- errors ----------------------------------------------------------------


async def test_invalid_argument_names_the_field(client: AsyncQrsysClient) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        await client.create_code("Bad", url=MENU.format(n=1), dark_color="black")
    error = caught.value
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.reason == "INVALID_ARGUMENT"
    assert error.fields == ["qr_code.style.dark_color"]
    assert error.field_violations[0][1]
    assert "qr_code.style.dark_color" in str(error)
    assert error.request_id
    copy = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own bytes
    assert isinstance(copy, InvalidArgumentError)
    assert (copy.fields, copy.reason, str(copy)) == (
        error.fields,
        error.reason,
        str(error),
    )


async def test_several_bad_fields_are_all_named(client: AsyncQrsysClient) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        await client.create_code("", url="", light_color="#12345")
    assert set(caught.value.fields) >= {"qr_code.title"}
    for field in caught.value.fields:
        assert field in str(caught.value)


async def test_sync_errors_carry_the_same_details(
    server: RunningServer, account: Account
) -> None:
    def flow() -> tuple[InvalidArgumentError, NotFoundError]:
        with QrsysClient(target(server), tokens=pair_of(account)) as client:
            with pytest.raises(InvalidArgumentError) as bad:
                client.create_code("Bad", text="x", dark_color="#12345")
            with pytest.raises(NotFoundError) as missing:
                client.get_code(str(uuid.uuid4()))
            return bad.value, missing.value

    bad, missing = await asyncio.to_thread(flow)
    assert bad.fields == ["qr_code.style.dark_color"]
    assert "qr_code.style.dark_color" in str(bad)
    assert missing.reason == "QR_CODE_NOT_FOUND"
    assert missing.code == grpc.StatusCode.NOT_FOUND


async def test_blocking_statuses_parse_with_grpc_status(
    server: RunningServer, account: Account
) -> None:
    """The blocking client reads details with ``rpc_status.from_call``, which
    refuses a status whose code or message differs from the call's."""

    def flow() -> list[str]:
        with grpc.insecure_channel(target(server)) as channel:
            stub = qr_code_pb2_grpc.QrCodeServiceStub(channel)
            request = qr_code_pb2.CreateQrCodeRequest(
                qr_code=qr_code_pb2.QrCode(
                    title="Bad",
                    content=QrContent(text="x"),
                    style=QrStyle(dark_color="black"),
                )
            )
            with pytest.raises(grpc.RpcError) as caught:
                stub.CreateQrCode(request, metadata=account.metadata)
            assert isinstance(caught.value, grpc.Call)
            status = rpc_status.from_call(caught.value)
            assert status is not None
            return [detail.type_url for detail in status.details]

    type_urls = await asyncio.to_thread(flow)
    assert any(url.endswith("google.rpc.BadRequest") for url in type_urls)


async def test_content_too_long_has_its_reason(client: AsyncQrsysClient) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        await client.create_code("Long", text="x" * 4000, error_correction="H")
    assert caught.value.reason == "CONTENT_TOO_LONG"
    assert caught.value.fields


async def test_auth_errors_have_their_reasons(
    server: RunningServer, auth: auth_pb2_grpc.AuthServiceStub
) -> None:
    account = await register(auth)
    async with AsyncQrsysClient(target(server)) as client:
        with pytest.raises(UnauthenticatedError) as wrong:
            await client.login(account.email, WRONG)
        assert wrong.value.reason == "INVALID_CREDENTIALS"
        with pytest.raises(AlreadyExistsError) as taken:
            await client.register(account.email, PASSWORD)
        assert taken.value.reason == "EMAIL_TAKEN"
        with pytest.raises(InvalidArgumentError) as short:
            await client.register(unique_email(), "short")
        assert short.value.fields == ["password"]
        with pytest.raises(UnauthenticatedError) as missing:
            await client.whoami()
        assert missing.value.reason == "TOKEN_MISSING"
        with pytest.raises(UnauthenticatedError) as no_refresh:
            await client.refresh()
        assert no_refresh.value.reason == "TOKEN_MISSING"


async def test_too_many_failed_logins_give_retry_after(
    server: RunningServer, auth: auth_pb2_grpc.AuthServiceStub
) -> None:
    account = await register(auth)
    async with AsyncQrsysClient(target(server)) as client:
        for _ in range(5):
            with pytest.raises(UnauthenticatedError):
                await client.login(account.email, WRONG)
        with pytest.raises(ResourceExhaustedError) as caught:
            await client.login(account.email, PASSWORD)
    error = caught.value
    assert error.reason == "TOO_MANY_ATTEMPTS"
    assert error.retry_after is not None
    assert 0 < error.retry_after <= 1.0
    assert "retry in" in str(error)


async def test_stale_etag_is_aborted(client: AsyncQrsysClient) -> None:
    code = await client.create_code("Etag", url=MENU.format(n=1))
    changed = await client.update_code(code.id, title="Etag 2", etag=code.etag)
    assert changed.title == "Etag 2"
    with pytest.raises(AbortedError) as caught:
        await client.update_code(code.id, dark_color="#8b0000", etag=code.etag)
    assert caught.value.reason == "ETAG_MISMATCH"
    assert caught.value.precondition_violations[0][0] == "ETAG"
    with pytest.raises(AbortedError):
        await client.delete_code(code.id, etag=code.etag)


async def test_unreachable_server_is_unavailable() -> None:
    async with AsyncQrsysClient(f"127.0.0.1:{free_port()}", timeout=5) as client:
        with pytest.raises(UnavailableError) as caught:
            await client.login("a@example.com", PASSWORD)
    assert caught.value.reason == "UNAVAILABLE"


async def test_the_default_deadline_applies(
    server: RunningServer, account: Account
) -> None:
    async with AsyncQrsysClient(
        target(server), tokens=pair_of(account), timeout=1e-6
    ) as client:
        with pytest.raises(DeadlineExceededError) as caught:
            await client.whoami()
    assert caught.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert isinstance(caught.value, QrsysError)


# -- codes -----------------------------------------------------------------


async def test_create_get_update_delete(client: AsyncQrsysClient) -> None:
    code = await client.create_code(
        "Table 7",
        url=MENU.format(n=7),
        dark_color="#8b0000",
        error_correction="Q",
        border=2,
    )
    assert code.content.url == MENU.format(n=7)
    assert code.style.dark_color == "#8b0000"
    assert code.style.error_correction >= qr_code_pb2.ERROR_CORRECTION_QUARTILE
    assert code.style.border == 2

    wifi = await client.create_code(
        "Guest Wi-Fi", wifi=WifiContent(ssid="Trattoria", password="spaghetti-42")
    )
    assert wifi.encoded_text.startswith("WIFI:")
    text = await client.create_code(
        "Note", QrContent(text="hello"), style=QrStyle(light_color="#fafafa")
    )
    assert text.style.light_color == "#fafafa"

    assert (await client.get_code(code.id)).title == "Table 7"
    updated = await client.update_code(
        code.id, url=MENU.format(n=8), light_color="#eee"
    )
    assert updated.content.url == MENU.format(n=8)
    assert updated.style.light_color == "#eee"
    assert updated.style.dark_color == "#8b0000"

    await client.delete_code(code.id)
    with pytest.raises(NotFoundError):
        await client.get_code(code.id)

    with pytest.raises(ValueError, match="one content"):
        await client.create_code("Two", url="https://a.example", text="b")
    with pytest.raises(ValueError, match="give the content"):
        await client.create_code("None")
    with pytest.raises(ValueError, match="nothing to change"):
        await client.update_code(text.id)


async def test_request_id_makes_create_idempotent(client: AsyncQrsysClient) -> None:
    key = uuid.uuid4().hex
    first = await client.create_code("Once", url=MENU.format(n=1), request_id=key)
    second = await client.create_code("Once", url=MENU.format(n=1), request_id=key)
    assert first.id == second.id


async def test_iter_codes_walks_every_page(client: AsyncQrsysClient) -> None:
    created = await client.batch_create("Page {n}", url_template=MENU, count=23)
    assert [c.title for c in created] == [f"Page {n}" for n in range(1, 24)]

    page = await client.list_codes(page_size=7, order_by="title")
    assert len(page.codes) == 7
    assert page.next_page_token
    assert page.total_size == 23

    walked = [code async for code in client.iter_codes(page_size=7)]
    assert len(walked) == 23
    assert {c.id for c in walked} == {c.id for c in created}

    filtered = [
        code.title
        async for code in client.iter_codes(
            filter='title:"Page 1"', order_by="title", page_size=2
        )
    ]
    assert sorted(filtered) == sorted(f"Page {n}" for n in (1, *range(10, 20)))


async def test_export_yields_every_code(client: AsyncQrsysClient) -> None:
    created = await client.batch_create("Export {n}", url_template=MENU, count=12)
    exported = [item async for item in client.export(scale=4)]
    assert {item.id for item in exported} == {c.id for c in created}
    by_id = {c.id: c for c in created}
    for code_id, title, content_type, data in exported:
        assert title == by_id[code_id].title
        assert content_type == "image/png"
        assert data.startswith(PNG_MAGIC)
        assert decoded(data) == [by_id[code_id].encoded_text]

    chosen = [created[0].id, created[5].id]
    pdfs = [item async for item in client.export(chosen, format="pdf")]
    assert [item.id for item in pdfs] == chosen
    assert all(item.data.startswith(b"%PDF") for item in pdfs)
    assert all(item.content_type == "application/pdf" for item in pdfs)


async def test_an_abandoned_export_is_cancelled(client: AsyncQrsysClient) -> None:
    await client.batch_create("Abandon {n}", url_template=MENU, count=5)
    stream = client.export()
    first = await anext(stream)
    assert first.data.startswith(PNG_MAGIC)
    await stream.aclose()
    # The client still works afterwards.
    assert (await client.list_codes(page_size=1)).total_size == 5


async def test_render_returns_bytes_and_content_type(client: AsyncQrsysClient) -> None:
    code = await client.create_code("Render", url=MENU.format(n=3))
    png = await client.render(code.id, scale=6)
    assert png.content_type == "image/png"
    assert decoded(png.data) == [code.encoded_text]
    svg, content_type = await client.render(code.id, format="svg")
    assert content_type == "image/svg+xml"
    assert b"<svg" in svg
    txt = await client.render(code.id, format=qr_code_pb2.IMAGE_FORMAT_TXT, border=0)
    assert txt.content_type.startswith("text/plain")
    assert set(txt.data.decode().replace("\n", "")) == {"0", "1"}


async def test_sync_client_codes(server: RunningServer, account: Account) -> None:
    def flow() -> None:
        with QrsysClient(target(server), tokens=pair_of(account)) as client:
            made = client.batch_create(
                "Sync {n}", text_template="item {n}", first=10, count=15
            )
            assert [c.content.text for c in made][:2] == ["item 10", "item 11"]
            listed = list(client.iter_codes(page_size=4, order_by="create_time"))
            assert {c.id for c in listed} == {c.id for c in made}
            exported = list(client.export(format="eps"))
            assert len(exported) == 15
            assert all(item.data.startswith(b"%!PS") for item in exported)
            image = client.render(made[0].id)
            assert decoded(image.data) == ["item 10"]
            client.delete_code(made[0].id)
            assert client.list_codes().total_size == 14

    await asyncio.to_thread(flow)


# -- TLS -------------------------------------------------------------------


def pem(authority: Authority) -> bytes:
    """An authority's certificate in PEM."""
    return authority.cert.public_bytes(serialization.Encoding.PEM)


@contextlib.asynccontextmanager
async def running_mtls_server(
    directory: Path, database_url: str, server_settings: Settings
) -> AsyncIterator[RunningServer]:
    """A server requiring client certificates. ``directory`` receives the
    ``ca.pem`` to trust it with and a client's ``client.pem``/``client.key``."""
    servers, clients = Authority("server CA"), Authority("client CA")
    files = {
        "server": servers.issue("localhost"),
        "client": clients.issue("a client"),
    }
    for name, (cert, key) in files.items():
        (directory / f"{name}.pem").write_bytes(cert)
        (directory / f"{name}.key").write_bytes(key)
    (directory / "ca.pem").write_bytes(pem(servers))
    (directory / "clients.pem").write_bytes(pem(clients))
    settings = server_settings.model_copy(
        update={
            "data_dir": directory,
            "tls_cert_file": directory / "server.pem",
            "tls_key_file": directory / "server.key",
            "tls_client_ca_file": directory / "clients.pem",
        }
    )
    running = await start_server(settings, database_url)
    try:
        yield running
    finally:
        await running.stop(0)


@pytest.fixture
async def mtls_server(
    tmp_path: Path, database_url: str, server_settings: Settings
) -> AsyncIterator[tuple[RunningServer, Path]]:
    """A mutual-TLS server and the directory of its PEM files."""
    async with running_mtls_server(tmp_path, database_url, server_settings) as running:
        yield running, tmp_path


async def test_mutual_tls(mtls_server: tuple[RunningServer, Path]) -> None:
    running, files = mtls_server
    tls = TlsConfig.from_files(
        ca_file=files / "ca.pem",
        cert_file=files / "client.pem",
        key_file=files / "client.key",
        server_name="localhost",
    )
    async with AsyncQrsysClient(target(running), tls=tls) as client:
        session = await client.register(unique_email("tls"), PASSWORD)
        assert (await client.whoami()).id == session.user.id

    def blocking() -> str:
        with QrsysClient(target(running), tls=tls, tokens=session.tokens) as client:
            return client.whoami().id

    assert await asyncio.to_thread(blocking) == session.user.id

    no_client_cert = TlsConfig(
        root_certificates=tls.root_certificates, server_name="localhost"
    )
    async with AsyncQrsysClient(
        target(running), tls=no_client_cert, timeout=5
    ) as client:
        with pytest.raises(UnavailableError):
            await client.whoami()


# -- plain values ----------------------------------------------------------


def test_token_pair_round_trips_and_hides_its_tokens() -> None:
    pair = TokenPair(
        "access-secret",
        "refresh-secret",
        datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC),
        None,
    )
    assert TokenPair.from_dict(pair.to_dict()) == pair
    assert "secret" not in repr(pair)
    with pytest.raises(ValueError, match="access_token"):
        TokenPair.from_dict({"refresh_token": "x"})


def test_enum_names() -> None:
    assert error_correction_value("h") == qr_code_pb2.ERROR_CORRECTION_HIGH
    assert error_correction_value("Low") == qr_code_pb2.ERROR_CORRECTION_LOW
    assert image_format_value("PDF") == qr_code_pb2.IMAGE_FORMAT_PDF
    assert image_format_value(qr_code_pb2.IMAGE_FORMAT_SVG) == 2
    with pytest.raises(ValueError, match="error correction"):
        error_correction_value("X")
    with pytest.raises(ValueError, match="image format"):
        image_format_value("gif")


def test_tls_config_needs_key_and_chain_together() -> None:
    with pytest.raises(ValueError, match="private key"):
        TlsConfig(private_key=b"key")
    assert "root" not in repr(TlsConfig(root_certificates=b"root-pem"))
