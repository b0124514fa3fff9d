"""What a careless or hostile client sends, and what must come back."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import uuid
from typing import Any

import grpc
import pytest

from qrsys_grpc.v1 import auth_pb2, auth_pb2_grpc, qr_code_pb2, qr_code_pb2_grpc
from tests.service.conftest import PASSWORD, Account, create_code, register
from tests.service.richstatus import bad_fields, error_info


async def failure(call: object) -> grpc.aio.AioRpcError:
    """The error a call ends with; fails the test if it succeeds."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    return caught.value


def reencoded(token: str, **changes: object) -> str:
    payload = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    payload.update(changes)
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


class TestPageTokens:
    """A page token edited by hand is INVALID_ARGUMENT, never INTERNAL."""

    @pytest.mark.parametrize(
        "changes",
        [{"i": 5}, {"i": True}, {"i": []}, {"i": {}}, {"i": 1.5}, {"v": 5}, {"f": 7}],
        ids=[
            "id-int",
            "id-bool",
            "id-list",
            "id-object",
            "id-float",
            "value-int",
            "fp-int",
        ],
    )
    async def test_wrong_types_inside_the_token(
        self,
        qr: qr_code_pb2_grpc.QrCodeServiceStub,
        account: Account,
        changes: dict[str, object],
    ) -> None:
        for n in range(2):
            await create_code(qr, account, title=f"page {n}")
        first = await qr.ListQrCodes(
            qr_code_pb2.ListQrCodesRequest(page_size=1), metadata=account.metadata
        )
        error = await failure(
            qr.ListQrCodes(
                qr_code_pb2.ListQrCodesRequest(
                    page_size=1, page_token=reencoded(first.next_page_token, **changes)
                ),
                metadata=account.metadata,
            )
        )
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert bad_fields(error) == ["page_token"]

    async def test_a_lone_surrogate_as_the_position_names_the_token(
        self, qr: qr_code_pb2_grpc.QrCodeServiceStub, account: Account
    ) -> None:
        for n in range(2):
            await create_code(qr, account, title=f"surrogate {n}")
        first = await qr.ListQrCodes(
            qr_code_pb2.ListQrCodesRequest(page_size=1, order_by="title"),
            metadata=account.metadata,
        )
        forged = reencoded(first.next_page_token, v="\ud800")
        error = await failure(
            qr.ListQrCodes(
                qr_code_pb2.ListQrCodesRequest(
                    page_size=1, page_token=forged, order_by="title"
                ),
                metadata=account.metadata,
            )
        )
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert bad_fields(error) == ["page_token"]

    async def test_a_json_array_token(
        self, qr: qr_code_pb2_grpc.QrCodeServiceStub, account: Account
    ) -> None:
        token = base64.urlsafe_b64encode(b"[1, 2]").decode()
        error = await failure(
            qr.ListQrCodes(
                qr_code_pb2.ListQrCodesRequest(page_token=token),
                metadata=account.metadata,
            )
        )
        assert bad_fields(error) == ["page_token"]


class TestRequestIds:
    """A request id that could break metadata or logs is replaced. (This
    client cannot send non-ASCII metadata at all; the unit tests of the
    interceptor cover that case.)"""

    @pytest.mark.parametrize(
        "sent",
        ["a b", "x" * 129, "[fake] INFO line"],
        ids=["space", "long", "log-forgery"],
    )
    async def test_an_unsafe_id_is_replaced(
        self, auth: auth_pb2_grpc.AuthServiceStub, account: Account, sent: str
    ) -> None:
        call = auth.GetCurrentUser(
            auth_pb2.GetCurrentUserRequest(),
            metadata=(*account.metadata, ("x-request-id", sent)),
        )
        await call
        echoed = dict(tuple(await call.initial_metadata()))["x-request-id"]
        assert re.fullmatch("[0-9a-f]{32}", echoed)


class TestControlCharacters:
    """NUL and friends are refused with the field that held them."""

    async def test_nul_in_a_filter(
        self, qr: qr_code_pb2_grpc.QrCodeServiceStub, account: Account
    ) -> None:
        error = await failure(
            qr.ListQrCodes(
                qr_code_pb2.ListQrCodesRequest(filter='title:"a\x00b"'),
                metadata=account.metadata,
            )
        )
        assert bad_fields(error) == ["filter"]

    async def test_nul_in_an_email_at_registration(
        self, auth: auth_pb2_grpc.AuthServiceStub
    ) -> None:
        error = await failure(
            auth.Register(
                auth_pb2.RegisterRequest(email="a\x00@example.com", password=PASSWORD)
            )
        )
        assert bad_fields(error) == ["email"]

    async def test_nul_in_an_email_at_login(
        self, auth: auth_pb2_grpc.AuthServiceStub
    ) -> None:
        error = await failure(
            auth.Login(
                auth_pb2.LoginRequest(email="a\x00@example.com", password=PASSWORD)
            )
        )
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        assert error_info(error).reason == "INVALID_CREDENTIALS"


class TestMetadata:
    """Metadata up to 16 KiB always passes, and more never does."""

    async def test_metadata_under_the_bound_is_never_refused(
        self, auth: auth_pb2_grpc.AuthServiceStub, account: Account
    ) -> None:
        padded = (*account.metadata, ("x-pad", "p" * 12_000))
        for _ in range(20):
            await auth.GetCurrentUser(auth_pb2.GetCurrentUserRequest(), metadata=padded)

    async def test_metadata_over_the_bound_is_always_refused(
        self, auth: auth_pb2_grpc.AuthServiceStub, account: Account
    ) -> None:
        padded = (*account.metadata, ("x-pad", "p" * 20_000))
        for _ in range(5):
            error = await failure(
                auth.GetCurrentUser(auth_pb2.GetCurrentUserRequest(), metadata=padded)
            )
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


class TestInvisibleText:
    """Text that shows nothing, or breaks a line, where one line is wanted."""

    async def test_a_title_of_only_invisible_characters_is_missing(
        self, qr: qr_code_pb2_grpc.QrCodeServiceStub, account: Account
    ) -> None:
        error = await failure(
            qr.CreateQrCode(
                qr_code_pb2.CreateQrCodeRequest(
                    qr_code=qr_code_pb2.QrCode(
                        title="\u200b\u2060",
                        content=qr_code_pb2.QrContent(text="hi"),
                    )
                ),
                metadata=account.metadata,
            )
        )
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert bad_fields(error) == ["qr_code.title"]

    async def test_a_display_name_with_a_line_separator_is_refused(
        self, auth: auth_pb2_grpc.AuthServiceStub
    ) -> None:
        error = await failure(
            auth.Register(
                auth_pb2.RegisterRequest(
                    email=f"sep-{uuid.uuid4().hex[:8]}@example.com",
                    password=PASSWORD,
                    display_name="Trattoria\u2028Roma",
                )
            )
        )
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert bad_fields(error) == ["display_name"]


class TestBounds:
    """No single call may make the server do unbounded work."""

    async def test_a_batch_with_too_much_content(
        self, qr: qr_code_pb2_grpc.QrCodeServiceStub, account: Account
    ) -> None:
        template = qr_code_pb2.QrCode(
            title="Big {n}",
            content=qr_code_pb2.QrContent(text="a" * 2300 + "{n}"),
            style=qr_code_pb2.QrStyle(
                error_correction=qr_code_pb2.ERROR_CORRECTION_LOW
            ),
        )
        error = await failure(
            qr.BatchCreateQrCodes(
                qr_code_pb2.BatchCreateQrCodesRequest(
                    template=template, first_number=1, count=1000
                ),
                metadata=account.metadata,
            )
        )
        assert bad_fields(error) == ["count"]
        assert "262144 bytes" in error.details()
        listed = await qr.ListQrCodes(
            qr_code_pb2.ListQrCodesRequest(), metadata=account.metadata
        )
        assert listed.total_size == 0

    async def test_a_png_wider_than_the_limit(
        self, qr: qr_code_pb2_grpc.QrCodeServiceStub, account: Account
    ) -> None:
        created = await qr.CreateQrCode(
            qr_code_pb2.CreateQrCodeRequest(
                qr_code=qr_code_pb2.QrCode(
                    title="wide", content=qr_code_pb2.QrContent(text="a" * 2000)
                )
            ),
            metadata=account.metadata,
        )
        wide = qr_code_pb2.RenderQrCodeRequest(
            id=created.qr_code.id, format=qr_code_pb2.IMAGE_FORMAT_PNG, scale=50
        )
        error = await failure(qr.RenderQrCode(wide, metadata=account.metadata))
        assert bad_fields(error) == ["scale"]
        assert "4096" in error.details()

        wide.format = qr_code_pb2.IMAGE_FORMAT_SVG
        svg = await qr.RenderQrCode(wide, metadata=account.metadata)
        assert svg.content_type == "image/svg+xml"


class TestRaces:
    """Concurrent calls that must not both win."""

    async def test_concurrent_password_changes_let_one_win(
        self, auth: auth_pb2_grpc.AuthServiceStub, account: Account
    ) -> None:
        def change(i: int) -> object:
            return auth.ChangePassword(
                auth_pb2.ChangePasswordRequest(
                    current_password=PASSWORD, new_password=f"new-password-{i:03d}"
                ),
                metadata=account.metadata,
            )

        outcomes = await asyncio.gather(
            *(change(i) for i in range(4)), return_exceptions=True
        )
        winners = [
            i for i, o in enumerate(outcomes) if not isinstance(o, BaseException)
        ]
        assert len(winners) == 1
        for outcome in outcomes:
            if isinstance(outcome, grpc.aio.AioRpcError):
                assert outcome.code() == grpc.StatusCode.UNAUTHENTICATED
        await auth.Login(
            auth_pb2.LoginRequest(
                email=account.email, password=f"new-password-{winners[0]:03d}"
            )
        )

    async def test_wrong_passwords_on_sensitive_calls_are_throttled(
        self, auth: auth_pb2_grpc.AuthServiceStub, account: Account
    ) -> None:
        wrong = auth_pb2.DeleteAccountRequest(password="not-the-password")
        codes = []
        for _ in range(6):
            error = await failure(auth.DeleteAccount(wrong, metadata=account.metadata))
            codes.append(error.code())
        assert codes[:5] == [grpc.StatusCode.UNAUTHENTICATED] * 5
        assert codes[5] == grpc.StatusCode.RESOURCE_EXHAUSTED


class TestEtags:
    """An etag names one code: another code's etag never matches."""

    async def test_another_codes_etag_is_stale(
        self, qr: qr_code_pb2_grpc.QrCodeServiceStub, account: Account
    ) -> None:
        first = await create_code(qr, account, title="first")
        second = await create_code(qr, account, title="second")
        assert first.etag != second.etag

        update = qr_code_pb2.UpdateQrCodeRequest(
            qr_code=qr_code_pb2.QrCode(id=first.id, title="changed", etag=second.etag)
        )
        update.update_mask.paths.append("title")
        error = await failure(qr.UpdateQrCode(update, metadata=account.metadata))
        assert error.code() == grpc.StatusCode.ABORTED

        error = await failure(
            qr.DeleteQrCode(
                qr_code_pb2.DeleteQrCodeRequest(id=first.id, etag=second.etag),
                metadata=account.metadata,
            )
        )
        assert error.code() == grpc.StatusCode.ABORTED

    async def test_a_bare_version_is_not_an_etag(
        self, qr: qr_code_pb2_grpc.QrCodeServiceStub, account: Account
    ) -> None:
        code = await create_code(qr, account)
        error = await failure(
            qr.DeleteQrCode(
                qr_code_pb2.DeleteQrCodeRequest(id=code.id, etag='"1"'),
                metadata=account.metadata,
            )
        )
        assert bad_fields(error) == ["etag"]

    @pytest.mark.parametrize(
        "version",
        ["01", "0", "2147483648", "9999999999"],
        ids=["leading-zero", "zero", "past-int32", "ten-digits"],
    )
    async def test_an_etag_qrsys_cannot_have_written_names_its_field(
        self, qr: qr_code_pb2_grpc.QrCodeServiceStub, account: Account, version: str
    ) -> None:
        code = await create_code(qr, account)
        forged = re.sub(r"^W/\"1-", f'W/"{version}-', code.etag)
        assert forged != code.etag

        deleting = await failure(
            qr.DeleteQrCode(
                qr_code_pb2.DeleteQrCodeRequest(id=code.id, etag=forged),
                metadata=account.metadata,
            )
        )
        update = qr_code_pb2.UpdateQrCodeRequest(
            qr_code=qr_code_pb2.QrCode(id=code.id, title="changed", etag=forged)
        )
        update.update_mask.paths.append("title")
        updating = await failure(qr.UpdateQrCode(update, metadata=account.metadata))

        assert deleting.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert bad_fields(deleting) == ["etag"]
        assert updating.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert bad_fields(updating) == ["qr_code.etag"]
        got = await qr.GetQrCode(
            qr_code_pb2.GetQrCodeRequest(id=code.id), metadata=account.metadata
        )
        assert got.qr_code.title == code.title


class TestIds:
    """An id is a UUID in the one form qrsys writes, or INVALID_ARGUMENT."""

    @pytest.mark.parametrize(
        "spelling",
        [
            lambda u: "{" + u + "}",
            lambda u: "urn:uuid:" + u,
            lambda u: u.replace("-", ""),
            lambda u: "\u0660" * 32,
            lambda u: " " + u,
        ],
        ids=["braces", "urn", "no-hyphens", "arabic-indic-digits", "leading-space"],
    )
    async def test_other_spellings_of_an_id_name_the_field(
        self,
        qr: qr_code_pb2_grpc.QrCodeServiceStub,
        account: Account,
        spelling: Any,
    ) -> None:
        code = await create_code(qr, account)
        error = await failure(
            qr.GetQrCode(
                qr_code_pb2.GetQrCodeRequest(id=spelling(code.id)),
                metadata=account.metadata,
            )
        )
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert bad_fields(error) == ["id"]

    async def test_an_id_in_capitals_is_the_same_code(
        self, qr: qr_code_pb2_grpc.QrCodeServiceStub, account: Account
    ) -> None:
        code = await create_code(qr, account)
        got = await qr.GetQrCode(
            qr_code_pb2.GetQrCodeRequest(id=code.id.upper()), metadata=account.metadata
        )
        assert got.qr_code.id == code.id


async def test_an_export_stops_when_its_session_ends(
    auth: auth_pb2_grpc.AuthServiceStub,
    qr: qr_code_pb2_grpc.QrCodeServiceStub,
) -> None:
    account = await register(auth)
    await qr.BatchCreateQrCodes(
        qr_code_pb2.BatchCreateQrCodesRequest(
            template=qr_code_pb2.QrCode(
                title="Seat {n}", content=qr_code_pb2.QrContent(text="seat {n}")
            ),
            first_number=1,
            count=30,
        ),
        metadata=account.metadata,
    )
    stream = qr.ExportQrCodes(
        qr_code_pb2.ExportQrCodesRequest(), metadata=account.metadata
    )
    received = [await stream.read()]
    await auth.Logout(auth_pb2.LogoutRequest(), metadata=account.metadata)

    async def drain() -> None:
        while (message := await stream.read()) is not grpc.aio.EOF:
            received.append(message)

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await drain()
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert len(received) < 30
