"""QrCodeService through the real server: every RPC, its edges and its errors.

Every PNG the server draws here is read back with zxing-cpp and must say
exactly the code's ``encoded_text``.
"""

from __future__ import annotations

import asyncio
import io
import uuid
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any

import grpc
import pytest
import zxingcpp
from google.protobuf import field_mask_pb2
from PIL import Image

from qrsys_grpc.server import RunningServer, start_server
from qrsys_grpc.settings import MIN_MESSAGE_BYTES, Settings
from qrsys_grpc.v1 import auth_pb2, auth_pb2_grpc, qr_code_pb2, qr_code_pb2_grpc
from tests.service.conftest import PASSWORD, Account, create_code, decoded, register
from tests.service.richstatus import bad_fields, error_info

Stub = qr_code_pb2_grpc.QrCodeServiceStub
QrCode = qr_code_pb2.QrCode
QrContent = qr_code_pb2.QrContent
QrStyle = qr_code_pb2.QrStyle

INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
ABORTED = grpc.StatusCode.ABORTED

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DEFAULT_SCALE = 10
DEFAULT_BORDER = 4
MENU_URL = "https://menu.example/r/1?table={n}"
EC_RANK = {"L": 0, "M": 1, "Q": 2, "H": 3}
EC_LETTER = {
    qr_code_pb2.ERROR_CORRECTION_LOW: "L",
    qr_code_pb2.ERROR_CORRECTION_MEDIUM: "M",
    qr_code_pb2.ERROR_CORRECTION_QUARTILE: "Q",
    qr_code_pb2.ERROR_CORRECTION_HIGH: "H",
}
SVG_NS = "{http://www.w3.org/2000/svg}"
# More pages than any listing here can have: a token that never runs out
# fails the test instead of looping until the timeout.
MAX_PAGES = 200


# -- helpers ---------------------------------------------------------------


def decoded_barcodes(png: bytes) -> list[Any]:
    """The barcodes zxing-cpp finds in a PNG, with their metadata."""
    return list(zxingcpp.read_barcodes(Image.open(io.BytesIO(png))))


def png_of_txt(txt: bytes, scale: int = 8) -> bytes:
    """Draw a TXT render (``1`` dark, ``0`` light) as a PNG."""
    rows = txt.decode("ascii").splitlines()
    image = Image.new("L", (len(rows[0]), len(rows)), 255)
    for y, row in enumerate(rows):
        for x, cell in enumerate(row):
            if cell == "1":
                image.putpixel((x, y), 0)
    image = image.resize(
        (image.width * scale, image.height * scale), Image.Resampling.NEAREST
    )
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def modules(symbol_version: str) -> int:
    """The width in modules of a symbol version, quiet zone excluded."""
    if symbol_version.startswith("M"):
        return 9 + 2 * int(symbol_version[1:])
    return 17 + 4 * int(symbol_version)


def png_size(png: bytes) -> tuple[int, int]:
    """The pixel size of a PNG."""
    with Image.open(io.BytesIO(png)) as image:
        return image.size


def mask(*paths: str) -> field_mask_pb2.FieldMask:
    """A FieldMask with ``paths`` exactly as given."""
    return field_mask_pb2.FieldMask(paths=list(paths))


async def expect_error(
    call: Awaitable[Any], code: grpc.StatusCode
) -> grpc.aio.AioRpcError:
    """Await ``call``, which must fail with ``code``; return the error."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == code, caught.value.details()
    return caught.value


async def create(
    qr: Stub,
    account: Account,
    content: QrContent,
    *,
    title: str = "A code",
    style: QrStyle | None = None,
    request_id: str = "",
) -> QrCode:
    """Store a code for ``account``."""
    response = await qr.CreateQrCode(
        qr_code_pb2.CreateQrCodeRequest(
            qr_code=QrCode(title=title, content=content, style=style),
            request_id=request_id,
        ),
        metadata=account.metadata,
    )
    return response.qr_code


async def get(qr: Stub, account: Account, code_id: str) -> QrCode:
    """Fetch one code of ``account``."""
    response = await qr.GetQrCode(
        qr_code_pb2.GetQrCodeRequest(id=code_id), metadata=account.metadata
    )
    return response.qr_code


async def render(
    qr: Stub,
    account: Account,
    code_id: str,
    fmt: int = qr_code_pb2.IMAGE_FORMAT_PNG,
    **options: Any,
) -> qr_code_pb2.RenderQrCodeResponse:
    """Draw one code of ``account``."""
    return await qr.RenderQrCode(
        qr_code_pb2.RenderQrCodeRequest(id=code_id, format=fmt, **options),
        metadata=account.metadata,
    )


async def assert_png_reads_back(qr: Stub, account: Account, code: QrCode) -> bytes:
    """Render ``code`` as PNG and check zxing-cpp reads its encoded_text."""
    rendered = await render(qr, account, code.id)
    assert rendered.content_type == "image/png"
    assert decoded(rendered.data) == [code.encoded_text]
    return rendered.data


async def list_page(
    qr: Stub, account: Account, **fields: Any
) -> qr_code_pb2.ListQrCodesResponse:
    """One ListQrCodes call."""
    return await qr.ListQrCodes(
        qr_code_pb2.ListQrCodesRequest(**fields), metadata=account.metadata
    )


async def list_all(
    qr: Stub, account: Account, *, page_size: int = 1000, **fields: Any
) -> list[QrCode]:
    """Every code a listing yields, following next_page_token."""
    codes: list[QrCode] = []
    token = ""
    for _ in range(MAX_PAGES):
        page = await list_page(
            qr, account, page_size=page_size, page_token=token, **fields
        )
        codes.extend(page.qr_codes)
        token = page.next_page_token
        if not token:
            return codes
    raise AssertionError(f"the listing did not end within {MAX_PAGES} pages")


async def total(qr: Stub, account: Account) -> int:
    """How many codes ``account`` has."""
    return (await list_page(qr, account, page_size=1)).total_size


async def batch(
    qr: Stub,
    account: Account,
    count: int,
    *,
    first_number: int = 1,
    title: str = "Table {n}",
    content: QrContent | None = None,
    request_id: str = "",
) -> list[QrCode]:
    """Store ``count`` numbered codes for ``account``."""
    response = await qr.BatchCreateQrCodes(
        qr_code_pb2.BatchCreateQrCodesRequest(
            template=QrCode(title=title, content=content or QrContent(url=MENU_URL)),
            first_number=first_number,
            count=count,
            request_id=request_id,
        ),
        metadata=account.metadata,
    )
    return list(response.qr_codes)


async def export(
    qr: Stub, account: Account, ids: list[str], **options: Any
) -> list[qr_code_pb2.ExportQrCodesResponse]:
    """Every message of an ExportQrCodes stream."""
    call = qr.ExportQrCodes(
        qr_code_pb2.ExportQrCodesRequest(ids=ids, **options),
        metadata=account.metadata,
    )
    return [message async for message in call]


async def update(
    qr: Stub, account: Account, code: QrCode, *paths: str
) -> qr_code_pb2.UpdateQrCodeResponse:
    """UpdateQrCode with ``code`` and a mask of ``paths``."""
    return await qr.UpdateQrCode(
        qr_code_pb2.UpdateQrCodeRequest(qr_code=code, update_mask=mask(*paths)),
        metadata=account.metadata,
    )


def url(value: str) -> QrContent:
    return QrContent(url=value)


def text(value: str) -> QrContent:
    return QrContent(text=value)


# -- shared accounts -------------------------------------------------------


@pytest.fixture(scope="module")
async def user(auth: auth_pb2_grpc.AuthServiceStub) -> Account:
    """One account for the tests that never depend on how many codes it has.

    Registering is slow on purpose (argon2), so the many tests that only need
    some caller share this one; a test that counts codes counts before and
    after. Tests that list or count everything use a fresh ``account``.
    """
    return await register(auth)


@pytest.fixture(scope="module")
async def stranger(auth: auth_pb2_grpc.AuthServiceStub) -> Account:
    """A second shared account: the owner of codes ``user`` must not reach."""
    return await register(auth)


# -- Create: content kinds -------------------------------------------------

VCARD_CONTACT = qr_code_pb2.ContactContent(
    name="Jane Doe",
    phones=["+49 30 1234567"],
    emails=["jane@example.com"],
    organization="ACME",
    format=qr_code_pb2.CONTACT_FORMAT_VCARD,
)
MECARD_CONTACT = qr_code_pb2.ContactContent(
    name="Jane Doe",
    phones=["+49 30 1234567"],
    emails=["jane@example.com"],
    format=qr_code_pb2.CONTACT_FORMAT_MECARD,
)

CONTENT_KINDS = [
    pytest.param(text("Hello, world"), "Hello, world", id="text"),
    pytest.param(text("Grüße, 日本"), "Grüße, 日本", id="text-unicode"),
    pytest.param(text("line one\nline two"), "line one\nline two", id="text-multiline"),
    pytest.param(
        url("https://example.com/menu?x=1"), "https://example.com/menu?x=1", id="url"
    ),
    pytest.param(
        QrContent(
            wifi=qr_code_pb2.WifiContent(
                ssid="Cafe",
                password="secretpass",
                security=qr_code_pb2.WIFI_SECURITY_WPA,
            )
        ),
        "WIFI:T:WPA;S:Cafe;P:secretpass;;",
        id="wifi-wpa",
    ),
    pytest.param(
        QrContent(
            wifi=qr_code_pb2.WifiContent(
                ssid="Guest;Net", security=qr_code_pb2.WIFI_SECURITY_NONE, hidden=True
            )
        ),
        "WIFI:T:nopass;S:Guest\\;Net;H:true;;",
        id="wifi-open-hidden",
    ),
    pytest.param(
        QrContent(contact=VCARD_CONTACT),
        "BEGIN:VCARD\r\nVERSION:3.0\r\nN:Jane Doe;;;;\r\nFN:Jane Doe\r\n"
        "ORG:ACME\r\nTEL:+49 30 1234567\r\nEMAIL:jane@example.com\r\n"
        "END:VCARD\r\n",
        id="contact-vcard",
    ),
    pytest.param(
        QrContent(contact=MECARD_CONTACT),
        "MECARD:N:Jane Doe;TEL:+49 30 1234567;EMAIL:jane@example.com;;",
        id="contact-mecard",
    ),
    pytest.param(
        QrContent(
            email=qr_code_pb2.EmailContent(
                address="info@example.com", subject="Hello there"
            )
        ),
        "mailto:info@example.com?subject=Hello%20there",
        id="email",
    ),
    pytest.param(
        QrContent(sms=qr_code_pb2.SmsContent(number="+4915112345678", message="Hi")),
        "SMSTO:+4915112345678:Hi",
        id="sms",
    ),
    pytest.param(
        QrContent(geo=qr_code_pb2.GeoContent(latitude=52.52, longitude=13.405)),
        "geo:52.52,13.405",
        id="geo",
    ),
    pytest.param(
        QrContent(
            epc=qr_code_pb2.EpcContent(
                name="Red Cross",
                iban="DE89370400440532013000",
                amount="12.50",
                text="Donation",
            )
        ),
        "BCD\n002\n1\nSCT\n\nRed Cross\nDE89370400440532013000\nEUR12.5\n\n\nDonation",
        id="epc",
    ),
]


@pytest.mark.parametrize(("content", "expected_text"), CONTENT_KINDS)
async def test_create_each_content_kind(
    qr: Stub, user: Account, content: QrContent, expected_text: str
) -> None:
    code = await create(qr, user, content, title="My code")

    uuid.UUID(code.id)
    assert code.title == "My code"
    assert code.content == content
    assert code.encoded_text == expected_text
    assert code.symbol_version.isdigit()
    assert 1 <= int(code.symbol_version) <= 40
    assert code.etag
    assert code.create_time.seconds > 0
    assert code.update_time == code.create_time
    assert await get(qr, user, code.id) == code
    await assert_png_reads_back(qr, user, code)


# -- Create: style ---------------------------------------------------------


@pytest.mark.parametrize(
    "level",
    [
        qr_code_pb2.ERROR_CORRECTION_LOW,
        qr_code_pb2.ERROR_CORRECTION_MEDIUM,
        qr_code_pb2.ERROR_CORRECTION_QUARTILE,
        qr_code_pb2.ERROR_CORRECTION_HIGH,
    ],
    ids=["low", "medium", "quartile", "high"],
)
async def test_create_error_correction_is_at_least_the_requested_level(
    qr: Stub, user: Account, level: int
) -> None:
    code = await create(
        qr,
        user,
        url("https://example.com/a/fairly/long/path?with=query&and=more"),
        style=QrStyle(error_correction=level),
    )

    assert code.style.error_correction == level
    rendered = await render(qr, user, code.id)
    [barcode] = decoded_barcodes(rendered.data)
    assert barcode.text == code.encoded_text
    assert EC_RANK[barcode.ec_level] >= EC_RANK[EC_LETTER[level]]


async def test_create_epc_always_uses_medium_error_correction(
    qr: Stub, user: Account
) -> None:
    content = QrContent(
        epc=qr_code_pb2.EpcContent(name="Red Cross", iban="DE89370400440532013000")
    )
    code = await create(
        qr,
        user,
        content,
        style=QrStyle(error_correction=qr_code_pb2.ERROR_CORRECTION_HIGH),
    )

    assert code.encoded_text == "BCD\n002\n1\nSCT\n\nRed Cross\nDE89370400440532013000"
    rendered = await render(qr, user, code.id)
    [barcode] = decoded_barcodes(rendered.data)
    assert barcode.text == code.encoded_text
    assert barcode.ec_level == "M"


async def test_create_colours_are_drawn(qr: Stub, user: Account) -> None:
    style = QrStyle(dark_color="#1a2b3c", light_color="#fafafa")
    code = await create(qr, user, url("https://example.com/colours"), style=style)

    assert code.style.dark_color == "#1a2b3c"
    assert code.style.light_color == "#fafafa"
    svg = await render(qr, user, code.id, qr_code_pb2.IMAGE_FORMAT_SVG)
    assert "#1a2b3c" in svg.data.decode()
    assert "#fafafa" in svg.data.decode()
    png = await assert_png_reads_back(qr, user, code)
    with Image.open(io.BytesIO(png)) as image:
        colours = {colour for _, colour in image.convert("RGB").getcolors()}
    assert colours == {(0x1A, 0x2B, 0x3C), (0xFA, 0xFA, 0xFA)}


async def test_create_transparent_light_colour_draws_no_background(
    qr: Stub, user: Account
) -> None:
    style = QrStyle(light_color="#ffffff00")
    code = await create(qr, user, url("https://example.com/clear"), style=style)

    png = await assert_png_reads_back(qr, user, code)
    with Image.open(io.BytesIO(png)) as image:
        assert "transparency" in image.info or image.mode in ("RGBA", "LA")
    svg = await render(qr, user, code.id, qr_code_pb2.IMAGE_FORMAT_SVG)
    root = ET.fromstring(svg.data)  # noqa: S314 - our own server's output
    assert len(root.findall(f"{SVG_NS}path")) == 1


@pytest.mark.parametrize("border", [None, 0, 1, 8, 32], ids=lambda b: f"border-{b}")
async def test_create_border_sets_the_quiet_zone(
    qr: Stub, user: Account, border: int | None
) -> None:
    style = QrStyle() if border is None else QrStyle(border=border)
    code = await create(qr, user, url("https://example.com/border"), style=style)

    assert code.style.HasField("border") == (border is not None)
    if border is not None:
        assert code.style.border == border
    png = await assert_png_reads_back(qr, user, code)
    quiet = DEFAULT_BORDER if border is None else border
    side = (modules(code.symbol_version) + 2 * quiet) * DEFAULT_SCALE
    assert png_size(png) == (side, side)


async def test_create_micro_uses_a_micro_symbol(qr: Stub, user: Account) -> None:
    code = await create(qr, user, text("12345"), style=QrStyle(micro=True))

    assert code.style.micro
    assert code.symbol_version.startswith("M")
    rendered = await render(qr, user, code.id)
    [barcode] = decoded_barcodes(rendered.data)
    assert barcode.text == "12345"
    assert barcode.format == zxingcpp.BarcodeFormat.MicroQRCode
    side = (modules(code.symbol_version) + 2 * 2) * DEFAULT_SCALE
    assert png_size(rendered.data) == (side, side)


async def test_create_micro_falls_back_to_a_regular_symbol_when_too_long(
    qr: Stub, user: Account
) -> None:
    long_url = "https://example.com/" + "x" * 60
    code = await create(qr, user, url(long_url), style=QrStyle(micro=True))

    assert code.symbol_version.isdigit()
    await assert_png_reads_back(qr, user, code)


async def test_create_without_micro_never_uses_a_micro_symbol(
    qr: Stub, user: Account
) -> None:
    code = await create(qr, user, text("1"))

    assert code.symbol_version == "1"
    rendered = await render(qr, user, code.id)
    [barcode] = decoded_barcodes(rendered.data)
    assert barcode.format == zxingcpp.BarcodeFormat.QRCode


async def test_create_accepts_a_title_of_200_characters(
    qr: Stub, user: Account
) -> None:
    code = await create(qr, user, url("https://example.com"), title="t" * 200)

    assert code.title == "t" * 200


# -- Create: bad input -----------------------------------------------------


def _request(
    *,
    title: str = "A code",
    content: QrContent | None = None,
    style: QrStyle | None = None,
    request_id: str = "",
    no_content: bool = False,
) -> qr_code_pb2.CreateQrCodeRequest:
    code = QrCode(title=title, style=style)
    if not no_content:
        code.content.CopyFrom(content or url("https://example.com"))
    return qr_code_pb2.CreateQrCodeRequest(qr_code=code, request_id=request_id)


BAD_CREATES = [
    pytest.param(_request(title=""), ["qr_code.title"], id="empty-title"),
    pytest.param(_request(title="   "), ["qr_code.title"], id="blank-title"),
    pytest.param(_request(title="t" * 201), ["qr_code.title"], id="title-201-chars"),
    pytest.param(
        _request(title="Table\x071"), ["qr_code.title"], id="title-control-char"
    ),
    pytest.param(_request(title="Table\n1"), ["qr_code.title"], id="title-line-feed"),
    pytest.param(_request(no_content=True), ["qr_code.content"], id="no-content"),
    pytest.param(_request(content=text("")), ["qr_code.content.text"], id="empty-text"),
    pytest.param(
        _request(content=url("example.com")), ["qr_code.content.url"], id="url-scheme"
    ),
    pytest.param(
        _request(style=QrStyle(dark_color="black")),
        ["qr_code.style.dark_color"],
        id="dark-colour-name",
    ),
    pytest.param(
        _request(style=QrStyle(dark_color="#12345")),
        ["qr_code.style.dark_color"],
        id="dark-colour-5-digits",
    ),
    pytest.param(
        _request(style=QrStyle(light_color="#ggg")),
        ["qr_code.style.light_color"],
        id="light-colour",
    ),
    pytest.param(
        _request(style=QrStyle(border=33)), ["qr_code.style.border"], id="border-33"
    ),
    pytest.param(
        _request(style=QrStyle(border=-1)), ["qr_code.style.border"], id="border-neg"
    ),
    pytest.param(_request(request_id="r" * 101), ["request_id"], id="request-id-101"),
    pytest.param(
        _request(request_id="line\nbreak"), ["request_id"], id="request-id-control"
    ),
    pytest.param(
        _request(
            content=QrContent(
                epc=qr_code_pb2.EpcContent(name="X", iban="DE89370400440532013001")
            )
        ),
        ["qr_code.content.epc.iban"],
        id="epc-iban-checksum",
    ),
    pytest.param(
        _request(
            content=QrContent(
                epc=qr_code_pb2.EpcContent(name="X", iban="DE89370400440532013000"),
            ),
            style=QrStyle(micro=True),
        ),
        ["qr_code.style.micro"],
        id="epc-micro",
    ),
]


@pytest.mark.parametrize(("request_message", "fields"), BAD_CREATES)
async def test_create_rejects_bad_input(
    qr: Stub,
    user: Account,
    request_message: qr_code_pb2.CreateQrCodeRequest,
    fields: list[str],
) -> None:
    before = await total(qr, user)

    error = await expect_error(
        qr.CreateQrCode(request_message, metadata=user.metadata), INVALID
    )

    assert bad_fields(error) == fields
    assert await total(qr, user) == before


async def test_create_text_over_the_character_limit_states_the_limit(
    qr: Stub, user: Account
) -> None:
    error = await expect_error(
        qr.CreateQrCode(_request(content=text("x" * 4097)), metadata=user.metadata),
        INVALID,
    )

    assert bad_fields(error) == ["qr_code.content.text"]
    assert "4096" in (error.details() or "")


async def test_create_text_over_the_symbol_capacity_states_the_limit(
    qr: Stub, user: Account
) -> None:
    error = await expect_error(
        qr.CreateQrCode(_request(content=text("x" * 2400)), metadata=user.metadata),
        INVALID,
    )

    assert bad_fields(error) == ["qr_code.content"]
    assert "2331" in (error.details() or "")
    assert error_info(error).reason == "CONTENT_TOO_LONG"


async def test_create_names_every_bad_field(qr: Stub, user: Account) -> None:
    request_message = _request(
        title="",
        no_content=True,
        style=QrStyle(dark_color="dark", light_color="#zzz", border=33),
    )

    error = await expect_error(
        qr.CreateQrCode(request_message, metadata=user.metadata), INVALID
    )

    assert sorted(bad_fields(error)) == sorted(
        [
            "qr_code.title",
            "qr_code.content",
            "qr_code.style.dark_color",
            "qr_code.style.light_color",
            "qr_code.style.border",
        ]
    )


# -- Idempotency -----------------------------------------------------------


async def test_create_with_the_same_request_id_returns_the_first_code(
    qr: Stub, account: Account
) -> None:
    first = await create(qr, account, url("https://a.example"), request_id="req-1")
    second = await create(qr, account, url("https://b.example"), request_id="req-1")

    assert second.id == first.id
    assert second == first
    assert second.encoded_text == "https://a.example"
    assert await total(qr, account) == 1


async def test_create_with_the_same_request_id_at_once_stores_one_code(
    qr: Stub, account: Account
) -> None:
    codes = await asyncio.gather(
        *(
            create(qr, account, url("https://a.example"), request_id="same")
            for _ in range(5)
        )
    )

    assert len({code.id for code in codes}) == 1
    assert await total(qr, account) == 1


async def test_a_failed_create_does_not_use_up_its_request_id(
    qr: Stub, account: Account
) -> None:
    await expect_error(
        create(qr, account, url("no scheme"), request_id="retry-me"), INVALID
    )

    code = await create(qr, account, url("https://a.example"), request_id="retry-me")

    assert code.encoded_text == "https://a.example"
    assert await total(qr, account) == 1


async def test_create_replay_of_a_deleted_code_is_not_found(
    qr: Stub, user: Account
) -> None:
    request_id = uuid.uuid4().hex
    code = await create(qr, user, url("https://a.example"), request_id=request_id)
    await qr.DeleteQrCode(
        qr_code_pb2.DeleteQrCodeRequest(id=code.id), metadata=user.metadata
    )
    before = await total(qr, user)

    await expect_error(
        create(qr, user, url("https://a.example"), request_id=request_id), NOT_FOUND
    )

    assert await total(qr, user) == before


async def test_create_with_different_request_ids_stores_each(
    qr: Stub, account: Account
) -> None:
    first = await create(qr, account, url("https://a.example"), request_id="one")
    second = await create(qr, account, url("https://a.example"), request_id="two")

    assert first.id != second.id
    assert await total(qr, account) == 2


async def test_same_request_id_of_different_users_gives_different_codes(
    qr: Stub, account: Account, other_account: Account
) -> None:
    mine = await create(qr, account, url("https://a.example"), request_id="order-42")
    theirs = await create(
        qr, other_account, url("https://a.example"), request_id="order-42"
    )

    assert mine.id != theirs.id
    assert await total(qr, account) == 1
    assert await total(qr, other_account) == 1
    await expect_error(get(qr, account, theirs.id), NOT_FOUND)


async def test_batch_create_with_a_request_id_replays_the_same_ids(
    qr: Stub, account: Account
) -> None:
    first = await batch(qr, account, 5, request_id="batch-1")
    second = await batch(qr, account, 5, request_id="batch-1")

    assert [code.id for code in second] == [code.id for code in first]
    assert [code.title for code in second] == [f"Table {n}" for n in range(1, 6)]
    assert await total(qr, account) == 5


async def test_a_batch_retried_after_one_of_its_codes_was_deleted_is_not_found(
    qr: Stub, account: Account
) -> None:
    first = await batch(qr, account, 3, request_id="batch-then-delete")
    await qr.DeleteQrCode(
        qr_code_pb2.DeleteQrCodeRequest(id=first[1].id), metadata=account.metadata
    )

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await batch(qr, account, 3, request_id="batch-then-delete")

    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_info(caught.value).reason == "QR_CODE_NOT_FOUND"
    assert "1 of the 3" in (caught.value.details() or "")
    assert await total(qr, account) == 2


# -- Get -------------------------------------------------------------------


async def test_get_own_code(qr: Stub, user: Account) -> None:
    created = await create_code(qr, user, title="Mine")

    fetched = await get(qr, user, created.id)

    assert fetched == created
    assert fetched.title == "Mine"


async def test_get_another_users_code_is_not_found_like_a_random_id(
    qr: Stub, user: Account, stranger: Account
) -> None:
    theirs = await create_code(qr, stranger)

    foreign = await expect_error(get(qr, user, theirs.id), NOT_FOUND)
    missing = await expect_error(get(qr, user, str(uuid.uuid4())), NOT_FOUND)

    assert foreign.details() == missing.details()
    assert error_info(foreign).reason == error_info(missing).reason
    assert await get(qr, stranger, theirs.id) == theirs


@pytest.mark.parametrize(
    "code_id",
    ["not-a-uuid", "1234", str(uuid.uuid4()) + "0", "' OR 1=1 --", "x" * 500],
    ids=["words", "digits", "uuid-plus-one", "sql", "long"],
)
async def test_get_malformed_id_is_invalid(
    qr: Stub, user: Account, code_id: str
) -> None:
    error = await expect_error(get(qr, user, code_id), INVALID)

    assert bad_fields(error) == ["id"]


async def test_get_empty_id_is_invalid(qr: Stub, user: Account) -> None:
    error = await expect_error(get(qr, user, ""), INVALID)

    assert bad_fields(error) == ["id"]


# -- List ------------------------------------------------------------------


async def test_list_default_order_is_newest_first(qr: Stub, account: Account) -> None:
    created = [await create_code(qr, account, title=f"Code {i}") for i in range(4)]

    page = await list_page(qr, account)

    assert [code.id for code in page.qr_codes] == [c.id for c in reversed(created)]
    assert page.total_size == 4
    assert page.next_page_token == ""
    assert list(page.qr_codes) == list(reversed(created))


async def test_list_page_size_zero_means_fifty(qr: Stub, account: Account) -> None:
    await batch(qr, account, 55)

    page = await list_page(qr, account, page_size=0)

    assert len(page.qr_codes) == 50
    assert page.next_page_token
    assert page.total_size == 55
    rest = await list_page(qr, account, page_token=page.next_page_token)
    assert len(rest.qr_codes) == 5
    assert rest.next_page_token == ""


async def test_list_negative_page_size_is_invalid(qr: Stub, user: Account) -> None:
    error = await expect_error(list_page(qr, user, page_size=-1), INVALID)

    assert bad_fields(error) == ["page_size"]


async def test_list_paginates_every_code_exactly_once_in_order(
    qr: Stub, account: Account
) -> None:
    created = [await create_code(qr, account, title=f"Code {i}") for i in range(25)]
    expected = [code.id for code in reversed(created)]

    seen: list[str] = []
    sizes: list[int] = []
    token = ""
    for _ in range(MAX_PAGES):
        page = await list_page(qr, account, page_size=10, page_token=token)
        assert page.total_size == 25
        seen.extend(code.id for code in page.qr_codes)
        sizes.append(len(page.qr_codes))
        token = page.next_page_token
        if not token:
            break

    assert sizes == [10, 10, 5]
    assert seen == expected


async def test_list_paginates_a_batch_with_equal_create_times(
    qr: Stub, account: Account
) -> None:
    created = await batch(qr, account, 30)

    whole = [code.id for code in (await list_page(qr, account)).qr_codes]
    paged = [code.id for code in await list_all(qr, account, page_size=7)]

    assert paged == whole
    assert sorted(paged) == sorted(code.id for code in created)


async def test_list_exact_multiple_of_page_size_ends_with_empty_token(
    qr: Stub, account: Account
) -> None:
    await batch(qr, account, 20)

    first = await list_page(qr, account, page_size=10)
    second = await list_page(
        qr, account, page_size=10, page_token=first.next_page_token
    )

    assert len(second.qr_codes) == 10
    assert second.next_page_token == ""


TITLES = ["delta", "alpha", "echo", "charlie", "bravo"]


@pytest.fixture(scope="module")
async def titled(qr: Stub, auth: auth_pb2_grpc.AuthServiceStub) -> Account:
    """An account with one URL code for each of TITLES, created in that order."""
    owner = await register(auth)
    for title in TITLES:
        await create_code(qr, owner, title=title)
    return owner


@pytest.mark.parametrize(
    ("order_by", "expected"),
    [
        ("title", sorted(TITLES)),
        ("title asc", sorted(TITLES)),
        ("title desc", sorted(TITLES, reverse=True)),
        ("create_time", TITLES),
        ("create_time desc", list(reversed(TITLES))),
        ("", list(reversed(TITLES))),
    ],
    ids=["title", "title-asc", "title-desc", "create-asc", "create-desc", "default"],
)
async def test_list_order_by(
    qr: Stub, titled: Account, order_by: str, expected: list[str]
) -> None:
    whole = await list_page(qr, titled, order_by=order_by)
    paged = await list_all(qr, titled, page_size=2, order_by=order_by)

    assert [code.title for code in whole.qr_codes] == expected
    assert [code.title for code in paged] == expected


async def test_list_order_by_update_time_desc(qr: Stub, account: Account) -> None:
    codes = {title: await create_code(qr, account, title=title) for title in TITLES}
    await update(qr, account, QrCode(id=codes["alpha"].id, title="alpha 2"), "title")
    await update(
        qr,
        account,
        QrCode(id=codes["echo"].id, style=QrStyle(dark_color="#123456")),
        "style.dark_color",
    )

    listed = await list_all(qr, account, page_size=2, order_by="update_time desc")

    assert [code.title for code in listed] == [
        "echo",
        "alpha 2",
        "bravo",
        "charlie",
        "delta",
    ]


FILTER_TITLES = {
    "Summer Menu": "url",
    "summer drinks": "text",
    "Winter MENU": "url",
    "50% off": "url",
    "500 off": "url",
    "a_b": "text",
    "axb": "text",
    "C:\\menu": "text",
    "1/2 price": "url",
    'say "hi"': "text",
    "Äpfel und Birnen": "text",
}


@pytest.fixture(scope="module")
async def filtered(qr: Stub, auth: auth_pb2_grpc.AuthServiceStub) -> Account:
    """An account with the codes of FILTER_TITLES, of the kind each names."""
    owner = await register(auth)
    for title, kind in FILTER_TITLES.items():
        content = url("https://example.com") if kind == "url" else text(title)
        await create(qr, owner, content, title=title)
    return owner


@pytest.mark.parametrize(
    ("filter_text", "expected"),
    [
        ('title:"SUMMER"', {"Summer Menu", "summer drinks"}),
        ('title:"menu"', {"Summer Menu", "Winter MENU", "C:\\menu"}),
        ('title:"50%"', {"50% off"}),
        ('title:"%"', {"50% off"}),
        ('title:"a_b"', {"a_b"}),
        ('title:"_"', {"a_b"}),
        ('title:"nothing"', set()),
        (
            'kind = "url"',
            {"Summer Menu", "Winter MENU", "50% off", "500 off", "1/2 price"},
        ),
        (
            'kind="text"',
            {
                "summer drinks",
                "a_b",
                "axb",
                "C:\\menu",
                'say "hi"',
                "Äpfel und Birnen",
            },
        ),
        ('kind = "wifi"', set()),
        ('title:"summer" AND kind = "url"', {"Summer Menu"}),
        ('kind = "text" AND title:"Summer"', {"summer drinks"}),
        ('title:"off" AND kind = "text"', set()),
        ('title:"\\\\"', {"C:\\menu"}),
        ('title:"/"', {"1/2 price"}),
        ('title:"1/2"', {"1/2 price"}),
        ('title:"\\"hi\\""', {'say "hi"'}),
        ('TITLE:"summer" AND KIND = "url"', {"Summer Menu"}),
        ('title:"äPFEL"', {"Äpfel und Birnen"}),
    ],
    ids=[
        "title-upper",
        "title-lower",
        "title-percent",
        "title-only-percent",
        "title-underscore",
        "title-only-underscore",
        "title-no-match",
        "kind-url",
        "kind-text-no-spaces",
        "kind-no-match",
        "title-and-kind",
        "kind-and-title",
        "and-no-match",
        "title-backslash",
        "title-slash",
        "title-with-slash",
        "title-escaped-quotes",
        "upper-case-field-names",
        "title-unicode-case",
    ],
)
async def test_list_filter(
    qr: Stub, filtered: Account, filter_text: str, expected: set[str]
) -> None:
    page = await list_page(qr, filtered, filter=filter_text)
    paged = await list_all(qr, filtered, page_size=1, filter=filter_text)

    assert {code.title for code in page.qr_codes} == expected
    assert page.total_size == len(expected)
    assert [code.id for code in paged] == [code.id for code in page.qr_codes]


async def test_list_page_size_over_the_maximum_is_accepted(
    qr: Stub, filtered: Account
) -> None:
    page = await list_page(qr, filtered, page_size=5000)

    assert len(page.qr_codes) == len(FILTER_TITLES)
    assert page.next_page_token == ""


@pytest.mark.parametrize(
    "filter_text",
    [
        'title = "x"',
        'name:"x"',
        "title:x",
        'kind = "video"',
        'title:"a" kind = "url"',
        'title:"a" AND',
        'title:"a" OR kind = "url"',
        'title:"a" AND title:"b"',
        'title:"unterminated',
        "x" * 1001,
    ],
    ids=[
        "title-equals",
        "unknown-field",
        "unquoted",
        "unknown-kind",
        "missing-and",
        "dangling-and",
        "or",
        "title-twice",
        "unterminated",
        "too-long",
    ],
)
async def test_list_bad_filter_is_invalid(
    qr: Stub, user: Account, filter_text: str
) -> None:
    error = await expect_error(list_page(qr, user, filter=filter_text), INVALID)

    assert bad_fields(error) == ["filter"]


@pytest.mark.parametrize(
    "order_by",
    ["name", "title sideways", "title desc now", "-title", "encoded_text"],
    ids=["unknown-field", "bad-direction", "three-words", "minus", "not-sortable"],
)
async def test_list_bad_order_by_is_invalid(
    qr: Stub, user: Account, order_by: str
) -> None:
    error = await expect_error(list_page(qr, user, order_by=order_by), INVALID)

    assert bad_fields(error) == ["order_by"]


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ({"filter": 'title:"Table"'}, {"filter": 'title:"Tab"'}),
        ({"filter": 'title:"Table"'}, {}),
        ({}, {"filter": 'kind = "url"'}),
        ({}, {"order_by": "title"}),
        ({"order_by": "title"}, {"order_by": "title desc"}),
        ({"order_by": "create_time"}, {"order_by": "update_time"}),
    ],
    ids=[
        "other-title",
        "filter-dropped",
        "filter-added",
        "order-added",
        "direction-changed",
        "field-changed",
    ],
)
async def test_list_page_token_with_another_query_is_invalid(
    qr: Stub, user: Account, first: dict[str, str], second: dict[str, str]
) -> None:
    await batch(qr, user, 3)
    page = await list_page(qr, user, page_size=1, **first)
    assert page.next_page_token

    error = await expect_error(
        list_page(qr, user, page_size=1, page_token=page.next_page_token, **second),
        INVALID,
    )

    assert bad_fields(error) == ["page_token"]


async def test_list_page_token_of_another_user_is_invalid(
    qr: Stub, user: Account, stranger: Account
) -> None:
    await batch(qr, user, 3)
    await batch(qr, stranger, 3)
    page = await list_page(qr, user, page_size=1)

    error = await expect_error(
        list_page(qr, stranger, page_size=1, page_token=page.next_page_token),
        INVALID,
    )

    assert bad_fields(error) == ["page_token"]


@pytest.mark.parametrize(
    "token",
    ["garbage", "eyJmIjoxfQ", "!!!", "a" * 3000],
    ids=["garbage", "json-without-fields", "not-base64", "too-long"],
)
async def test_list_malformed_page_token_is_invalid(
    qr: Stub, user: Account, token: str
) -> None:
    error = await expect_error(list_page(qr, user, page_token=token), INVALID)

    assert bad_fields(error) == ["page_token"]


async def test_list_shows_only_own_codes(
    qr: Stub, account: Account, other_account: Account
) -> None:
    mine = await batch(qr, account, 3, title="Mine {n}")
    await batch(qr, other_account, 4, title="Theirs {n}")

    listed = await list_all(qr, account)
    filtered = await list_page(qr, account, filter='title:"Theirs"')

    assert sorted(code.id for code in listed) == sorted(code.id for code in mine)
    assert await total(qr, account) == 3
    assert await total(qr, other_account) == 4
    assert list(filtered.qr_codes) == []
    assert filtered.total_size == 0


@pytest.mark.parametrize(
    "order_by",
    ["", "create_time", "title", "title desc", "update_time desc"],
    ids=["default", "create-asc", "title-asc", "title-desc", "update-desc"],
)
async def test_list_pagination_is_stable_while_codes_are_inserted(
    qr: Stub, account: Account, order_by: str
) -> None:
    existing = [
        (await create_code(qr, account, title=f"Code {i:02d}")).id for i in range(15)
    ]
    inserted_titles = iter(["AAA", "Code 05a", "ZZZ", "Code 10a", "Code 00a", "MMM"])

    seen: list[str] = []
    token = ""
    for _ in range(MAX_PAGES):
        page = await list_page(
            qr, account, page_size=4, page_token=token, order_by=order_by
        )
        seen.extend(code.id for code in page.qr_codes)
        token = page.next_page_token
        if not token:
            break
        for _ in range(2):
            title = next(inserted_titles, None)
            if title is not None:
                await create_code(qr, account, title=title)

    assert token == "", "the listing did not end"
    assert len(seen) == len(set(seen)), "a code was listed twice"
    assert sorted(set(existing) - set(seen)) == [], "a code was skipped"


# -- Update ----------------------------------------------------------------


async def test_update_title_changes_only_the_title(qr: Stub, user: Account) -> None:
    original = await create(
        qr,
        user,
        url("https://example.com/t"),
        title="Before",
        style=QrStyle(dark_color="#102030", border=2),
    )

    updated = (
        await update(
            qr,
            user,
            QrCode(
                id=original.id,
                title="After",
                content=url("https://ignored.example"),
                style=QrStyle(dark_color="#ffffff"),
            ),
            "title",
        )
    ).qr_code

    assert updated.title == "After"
    assert updated.id == original.id
    assert updated.content == original.content
    assert updated.style == original.style
    assert updated.encoded_text == original.encoded_text
    assert updated.symbol_version == original.symbol_version
    assert updated.create_time == original.create_time
    assert updated.etag != original.etag
    assert updated.update_time.ToDatetime() > original.update_time.ToDatetime()
    assert await get(qr, user, original.id) == updated
    await assert_png_reads_back(qr, user, updated)


@pytest.mark.parametrize(
    "new_content",
    [
        url("https://example.com/another/page"),
        text("Now it is plain text"),
        QrContent(geo=qr_code_pb2.GeoContent(latitude=-33.8568, longitude=151.2153)),
    ],
    ids=["url", "text", "geo"],
)
async def test_update_content_re_encodes(
    qr: Stub, user: Account, new_content: QrContent
) -> None:
    original = await create_code(qr, user)

    updated = (
        await update(qr, user, QrCode(id=original.id, content=new_content), "content")
    ).qr_code

    assert updated.content == new_content
    assert updated.encoded_text != original.encoded_text
    assert updated.title == original.title
    assert updated.etag != original.etag
    await assert_png_reads_back(qr, user, updated)


async def test_update_content_kind_changes_the_kind_filter(
    qr: Stub, account: Account
) -> None:
    original = await create_code(qr, account)

    await update(qr, account, QrCode(id=original.id, content=text("hi")), "content")

    assert (await list_page(qr, account, filter='kind = "url"')).total_size == 0
    assert (await list_page(qr, account, filter='kind = "text"')).total_size == 1


async def test_update_style_dark_color_keeps_the_rest_of_the_style(
    qr: Stub, user: Account
) -> None:
    original = await create(
        qr,
        user,
        url("https://example.com/style"),
        style=QrStyle(
            error_correction=qr_code_pb2.ERROR_CORRECTION_HIGH,
            light_color="#fafafa",
            border=3,
        ),
    )

    updated = (
        await update(
            qr,
            user,
            QrCode(
                id=original.id,
                style=QrStyle(dark_color="#1a2b3c", light_color="#000000"),
            ),
            "style.dark_color",
        )
    ).qr_code

    assert updated.style.dark_color == "#1a2b3c"
    assert updated.style.light_color == "#fafafa"
    assert updated.style.error_correction == qr_code_pb2.ERROR_CORRECTION_HIGH
    assert updated.style.border == 3
    assert updated.encoded_text == original.encoded_text
    assert updated.etag != original.etag
    svg = await render(qr, user, updated.id, qr_code_pb2.IMAGE_FORMAT_SVG)
    assert "#1a2b3c" in svg.data.decode()
    await assert_png_reads_back(qr, user, updated)


async def test_update_style_border_path_without_a_value_restores_the_default(
    qr: Stub, user: Account
) -> None:
    original = await create(
        qr, user, url("https://example.com/b"), style=QrStyle(border=9)
    )

    updated = (await update(qr, user, QrCode(id=original.id), "style.border")).qr_code

    assert not updated.style.HasField("border")
    png = await assert_png_reads_back(qr, user, updated)
    side = (modules(updated.symbol_version) + 2 * DEFAULT_BORDER) * DEFAULT_SCALE
    assert png_size(png) == (side, side)


async def test_update_whole_style_replaces_it(qr: Stub, user: Account) -> None:
    original = await create(
        qr,
        user,
        url("https://example.com/style"),
        style=QrStyle(dark_color="#1a2b3c", border=3),
    )

    updated = (
        await update(
            qr, user, QrCode(id=original.id, style=QrStyle(micro=False)), "style"
        )
    ).qr_code

    assert updated.style == QrStyle()
    await assert_png_reads_back(qr, user, updated)


async def test_update_with_a_stale_etag_is_aborted(qr: Stub, user: Account) -> None:
    original = await create_code(qr, user, title="v1")
    current = (
        await update(qr, user, QrCode(id=original.id, title="v2"), "title")
    ).qr_code

    await expect_error(
        update(
            qr, user, QrCode(id=original.id, title="v3", etag=original.etag), "title"
        ),
        ABORTED,
    )

    assert await get(qr, user, original.id) == current


async def test_update_with_the_current_etag_succeeds(qr: Stub, user: Account) -> None:
    original = await create_code(qr, user, title="v1")

    updated = (
        await update(
            qr, user, QrCode(id=original.id, title="v2", etag=original.etag), "title"
        )
    ).qr_code
    again = (
        await update(
            qr, user, QrCode(id=original.id, title="v3", etag=updated.etag), "title"
        )
    ).qr_code

    assert updated.title == "v2"
    assert again.title == "v3"
    assert len({original.etag, updated.etag, again.etag}) == 3


async def test_two_updates_with_the_same_etag_at_once_let_one_win(
    qr: Stub, user: Account
) -> None:
    original = await create_code(qr, user, title="v1")

    results = await asyncio.gather(
        *(
            update(
                qr,
                user,
                QrCode(id=original.id, title=title, etag=original.etag),
                "title",
            )
            for title in ("left", "right")
        ),
        return_exceptions=True,
    )

    wins = [r for r in results if isinstance(r, qr_code_pb2.UpdateQrCodeResponse)]
    losses = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(wins) == 1, results
    assert [loss.code() for loss in losses] == [ABORTED]
    assert await get(qr, user, original.id) == wins[0].qr_code


async def test_update_with_a_malformed_etag_is_invalid(qr: Stub, user: Account) -> None:
    original = await create_code(qr, user)

    error = await expect_error(
        update(qr, user, QrCode(id=original.id, title="x", etag="nope"), "title"),
        INVALID,
    )

    assert bad_fields(error) == ["qr_code.etag"]


async def test_update_with_an_empty_mask_is_invalid(qr: Stub, user: Account) -> None:
    original = await create_code(qr, user)

    error = await expect_error(
        update(qr, user, QrCode(id=original.id, title="New")), INVALID
    )

    assert bad_fields(error) == ["update_mask"]
    assert await get(qr, user, original.id) == original


@pytest.mark.parametrize(
    "paths",
    [
        ("encoded_text",),
        ("id",),
        ("etag",),
        ("create_time",),
        ("style.colour",),
        ("content.url",),
        ("title", "symbol_version"),
    ],
    ids=[
        "encoded-text",
        "id",
        "etag",
        "create-time",
        "unknown-style-field",
        "inside-content",
        "one-good-one-bad",
    ],
)
async def test_update_with_an_unknown_path_is_invalid(
    qr: Stub, user: Account, paths: tuple[str, ...]
) -> None:
    original = await create_code(qr, user)

    error = await expect_error(
        update(qr, user, QrCode(id=original.id, title="New"), *paths), INVALID
    )

    assert bad_fields(error) == ["update_mask"]
    assert await get(qr, user, original.id) == original


async def test_update_another_users_code_is_not_found(
    qr: Stub, user: Account, stranger: Account
) -> None:
    theirs = await create_code(qr, stranger, title="Theirs")

    foreign = await expect_error(
        update(qr, user, QrCode(id=theirs.id, title="Hacked"), "title"), NOT_FOUND
    )
    missing = await expect_error(
        update(qr, user, QrCode(id=str(uuid.uuid4()), title="X"), "title"),
        NOT_FOUND,
    )

    assert foreign.details() == missing.details()
    assert await get(qr, stranger, theirs.id) == theirs


async def test_update_malformed_id_is_invalid(qr: Stub, user: Account) -> None:
    error = await expect_error(
        update(qr, user, QrCode(id="nope", title="X"), "title"), INVALID
    )

    assert bad_fields(error) == ["qr_code.id"]


@pytest.mark.parametrize(
    ("patch", "path", "field"),
    [
        (QrCode(title=""), "title", "qr_code.title"),
        (QrCode(title="t" * 201), "title", "qr_code.title"),
        (QrCode(content=url("no scheme")), "content", "qr_code.content.url"),
        (QrCode(), "content", "qr_code.content"),
        (QrCode(content=text("x" * 2400)), "content", "qr_code.content"),
        (
            QrCode(style=QrStyle(dark_color="blue")),
            "style.dark_color",
            "qr_code.style.dark_color",
        ),
        (
            QrCode(style=QrStyle(light_color="#000000")),
            "style.light_color",
            "qr_code.style.light_color",
        ),
        (QrCode(style=QrStyle(border=33)), "style.border", "qr_code.style.border"),
        (QrCode(style=QrStyle(border=40)), "style", "qr_code.style.border"),
    ],
    ids=[
        "empty-title",
        "long-title",
        "bad-url",
        "no-content",
        "content-too-long",
        "bad-dark-colour",
        "light-equals-dark",
        "border-path",
        "border-in-style",
    ],
)
async def test_update_with_an_invalid_value_leaves_the_code_unchanged(
    qr: Stub, user: Account, patch: QrCode, path: str, field: str
) -> None:
    original = await create_code(qr, user)
    request_patch = QrCode()
    request_patch.CopyFrom(patch)
    request_patch.id = original.id

    error = await expect_error(update(qr, user, request_patch, path), INVALID)

    assert bad_fields(error) == [field]
    assert await get(qr, user, original.id) == original


# -- Delete ----------------------------------------------------------------


async def test_delete_then_get_is_not_found(qr: Stub, user: Account) -> None:
    code = await create_code(qr, user)

    await qr.DeleteQrCode(
        qr_code_pb2.DeleteQrCodeRequest(id=code.id), metadata=user.metadata
    )

    await expect_error(get(qr, user, code.id), NOT_FOUND)
    await expect_error(
        qr.DeleteQrCode(
            qr_code_pb2.DeleteQrCodeRequest(id=code.id), metadata=user.metadata
        ),
        NOT_FOUND,
    )
    assert code.id not in {listed.id for listed in await list_all(qr, user)}


async def test_delete_with_a_stale_etag_is_aborted_and_keeps_the_code(
    qr: Stub, user: Account
) -> None:
    original = await create_code(qr, user, title="v1")
    current = (
        await update(qr, user, QrCode(id=original.id, title="v2"), "title")
    ).qr_code

    await expect_error(
        qr.DeleteQrCode(
            qr_code_pb2.DeleteQrCodeRequest(id=original.id, etag=original.etag),
            metadata=user.metadata,
        ),
        ABORTED,
    )

    assert await get(qr, user, original.id) == current


async def test_delete_with_the_matching_etag_succeeds(qr: Stub, user: Account) -> None:
    code = await create_code(qr, user)

    await qr.DeleteQrCode(
        qr_code_pb2.DeleteQrCodeRequest(id=code.id, etag=code.etag),
        metadata=user.metadata,
    )

    await expect_error(get(qr, user, code.id), NOT_FOUND)


async def test_delete_another_users_code_is_not_found_and_keeps_it(
    qr: Stub, user: Account, stranger: Account
) -> None:
    theirs = await create_code(qr, stranger)

    for etag in ("", theirs.etag):
        await expect_error(
            qr.DeleteQrCode(
                qr_code_pb2.DeleteQrCodeRequest(id=theirs.id, etag=etag),
                metadata=user.metadata,
            ),
            NOT_FOUND,
        )

    assert await get(qr, stranger, theirs.id) == theirs


@pytest.mark.parametrize(
    ("code_id", "etag", "field"),
    [("", "", "id"), ("nope", "", "id"), (None, "garbage", "etag")],
    ids=["empty-id", "malformed-id", "malformed-etag"],
)
async def test_delete_bad_id_or_etag_is_invalid(
    qr: Stub, user: Account, code_id: str | None, etag: str, field: str
) -> None:
    code = await create_code(qr, user)

    error = await expect_error(
        qr.DeleteQrCode(
            qr_code_pb2.DeleteQrCodeRequest(
                id=code.id if code_id is None else code_id, etag=etag
            ),
            metadata=user.metadata,
        ),
        INVALID,
    )

    assert bad_fields(error) == [field]
    assert await get(qr, user, code.id) == code


# -- Render ----------------------------------------------------------------


def _check_png(data: bytes, code: QrCode) -> None:
    assert data.startswith(PNG_MAGIC)
    assert decoded(data) == [code.encoded_text]


def _check_svg(data: bytes, code: QrCode) -> None:
    root = ET.fromstring(data)  # noqa: S314 - our own server's output
    assert root.tag == f"{SVG_NS}svg"
    side = modules(code.symbol_version) + 2 * DEFAULT_BORDER
    assert root.get("width") == str(side * DEFAULT_SCALE)


def _check_pdf(data: bytes, code: QrCode) -> None:
    assert data.startswith(b"%PDF-")
    assert b"%%EOF" in data[-16:]
    assert b"/CreationDate(D:2" not in data


def _check_eps(data: bytes, code: QrCode) -> None:
    assert data.startswith(b"%!PS-Adobe")
    assert b"EPSF" in data.splitlines()[0]
    assert b"%%BoundingBox:" in data
    assert b"%%CreationDate" not in data


def _check_txt(data: bytes, code: QrCode) -> None:
    rows = data.decode("ascii").splitlines()
    side = modules(code.symbol_version) + 2 * DEFAULT_BORDER
    assert len(rows) == side
    assert all(len(row) == side and set(row) <= {"0", "1"} for row in rows)
    assert rows[0] == "0" * side
    assert decoded(png_of_txt(data)) == [code.encoded_text]


FORMATS = [
    pytest.param(
        qr_code_pb2.IMAGE_FORMAT_UNSPECIFIED, "image/png", _check_png, id="default"
    ),
    pytest.param(qr_code_pb2.IMAGE_FORMAT_PNG, "image/png", _check_png, id="png"),
    pytest.param(qr_code_pb2.IMAGE_FORMAT_SVG, "image/svg+xml", _check_svg, id="svg"),
    pytest.param(qr_code_pb2.IMAGE_FORMAT_PDF, "application/pdf", _check_pdf, id="pdf"),
    pytest.param(
        qr_code_pb2.IMAGE_FORMAT_EPS, "application/postscript", _check_eps, id="eps"
    ),
    pytest.param(
        qr_code_pb2.IMAGE_FORMAT_TXT, "text/plain; charset=utf-8", _check_txt, id="txt"
    ),
]


@pytest.mark.parametrize(("fmt", "content_type", "check"), FORMATS)
async def test_render_every_format(
    qr: Stub, user: Account, fmt: int, content_type: str, check: Any
) -> None:
    code = await create_code(qr, user)

    rendered = await render(qr, user, code.id, fmt)

    assert rendered.content_type == content_type
    check(rendered.data, code)


@pytest.mark.parametrize(("fmt", "content_type", "check"), FORMATS)
async def test_render_repeats_byte_identical(
    qr: Stub, user: Account, fmt: int, content_type: str, check: Any
) -> None:
    code = await create_code(qr, user, url="https://example.com/same")

    first = await render(qr, user, code.id, fmt)
    second = await render(qr, user, code.id, fmt)
    twin = await create_code(qr, user, url="https://example.com/same")
    third = await render(qr, user, twin.id, fmt)

    assert first.data == second.data == third.data
    if fmt in (qr_code_pb2.IMAGE_FORMAT_PNG, qr_code_pb2.IMAGE_FORMAT_UNSPECIFIED):
        assert decoded(first.data) == [code.encoded_text]


@pytest.mark.parametrize(
    ("scale", "pixels"), [(0, DEFAULT_SCALE), (1, 1), (3, 3), (50, 50)]
)
async def test_render_scale(qr: Stub, user: Account, scale: int, pixels: int) -> None:
    code = await create_code(qr, user)

    rendered = await render(qr, user, code.id, scale=scale)

    side = (modules(code.symbol_version) + 2 * DEFAULT_BORDER) * pixels
    assert png_size(rendered.data) == (side, side)
    assert decoded(rendered.data) == [code.encoded_text]


@pytest.mark.parametrize("scale", [51, -1, 1000], ids=lambda s: f"scale-{s}")
async def test_render_scale_out_of_range_is_invalid(
    qr: Stub, user: Account, scale: int
) -> None:
    code = await create_code(qr, user)

    error = await expect_error(render(qr, user, code.id, scale=scale), INVALID)

    assert bad_fields(error) == ["scale"]


@pytest.mark.parametrize("border", [0, 1, 32])
async def test_render_border_overrides_the_style(
    qr: Stub, user: Account, border: int
) -> None:
    code = await create(qr, user, url("https://example.com/b"), style=QrStyle(border=6))

    rendered = await render(qr, user, code.id, border=border)

    side = (modules(code.symbol_version) + 2 * border) * DEFAULT_SCALE
    assert png_size(rendered.data) == (side, side)
    assert decoded(rendered.data) == [code.encoded_text]


@pytest.mark.parametrize("border", [33, -1], ids=lambda b: f"border-{b}")
async def test_render_border_out_of_range_is_invalid(
    qr: Stub, user: Account, border: int
) -> None:
    code = await create_code(qr, user)

    error = await expect_error(render(qr, user, code.id, border=border), INVALID)

    assert bad_fields(error) == ["border"]


@pytest.mark.parametrize("fmt", [6, 99, -1])
async def test_render_unknown_format_is_invalid(
    qr: Stub, user: Account, fmt: int
) -> None:
    code = await create_code(qr, user)

    error = await expect_error(render(qr, user, code.id, fmt), INVALID)

    assert bad_fields(error) == ["format"]


async def test_render_another_users_code_is_not_found(
    qr: Stub, user: Account, stranger: Account
) -> None:
    theirs = await create_code(qr, stranger)

    await expect_error(render(qr, user, theirs.id), NOT_FOUND)
    await expect_error(render(qr, user, str(uuid.uuid4())), NOT_FOUND)


async def test_render_malformed_id_is_invalid(qr: Stub, user: Account) -> None:
    error = await expect_error(render(qr, user, "nope"), INVALID)

    assert bad_fields(error) == ["id"]


# -- Preview ---------------------------------------------------------------


@pytest.mark.parametrize(("content", "expected_text"), CONTENT_KINDS)
async def test_preview_draws_without_storing(
    qr: Stub, user: Account, content: QrContent, expected_text: str
) -> None:
    before = await total(qr, user)

    preview = await qr.PreviewQrCode(
        qr_code_pb2.PreviewQrCodeRequest(content=content),
        metadata=user.metadata,
    )

    assert preview.content_type == "image/png"
    assert preview.encoded_text == expected_text
    assert decoded(preview.data) == [expected_text]
    assert await total(qr, user) == before


async def test_preview_uses_style_format_scale_and_border(
    qr: Stub, user: Account
) -> None:
    preview = await qr.PreviewQrCode(
        qr_code_pb2.PreviewQrCodeRequest(
            content=url("https://example.com/p"),
            style=QrStyle(dark_color="#1a2b3c"),
            format=qr_code_pb2.IMAGE_FORMAT_SVG,
            scale=2,
            border=1,
        ),
        metadata=user.metadata,
    )

    assert preview.content_type == "image/svg+xml"
    root = ET.fromstring(preview.data)  # noqa: S314 - our own server's output
    assert root.tag == f"{SVG_NS}svg"
    assert "#1a2b3c" in preview.data.decode()
    assert preview.encoded_text == "https://example.com/p"


async def test_preview_matches_the_render_of_a_stored_code(
    qr: Stub, user: Account
) -> None:
    content = url("https://example.com/twins")
    style = QrStyle(error_correction=qr_code_pb2.ERROR_CORRECTION_QUARTILE)
    code = await create(qr, user, content, style=style)

    preview = await qr.PreviewQrCode(
        qr_code_pb2.PreviewQrCodeRequest(content=content, style=style),
        metadata=user.metadata,
    )
    rendered = await render(qr, user, code.id)

    assert preview.encoded_text == code.encoded_text
    assert preview.data == rendered.data
    assert decoded(preview.data) == [code.encoded_text]


@pytest.mark.parametrize(
    ("request_message", "field"),
    [
        (qr_code_pb2.PreviewQrCodeRequest(), "content"),
        (qr_code_pb2.PreviewQrCodeRequest(content=url("nope")), "content.url"),
        (qr_code_pb2.PreviewQrCodeRequest(content=text("x" * 2400)), "content"),
        (
            qr_code_pb2.PreviewQrCodeRequest(
                content=url("https://e.example"), style=QrStyle(dark_color="x")
            ),
            "style.dark_color",
        ),
        (
            qr_code_pb2.PreviewQrCodeRequest(
                content=url("https://e.example"), scale=51
            ),
            "scale",
        ),
        (
            qr_code_pb2.PreviewQrCodeRequest(
                content=url("https://e.example"), border=33
            ),
            "border",
        ),
        (
            qr_code_pb2.PreviewQrCodeRequest(
                content=url("https://e.example"), format=99
            ),
            "format",
        ),
    ],
    ids=[
        "no-content",
        "bad-url",
        "too-long",
        "bad-colour",
        "bad-scale",
        "bad-border",
        "bad-format",
    ],
)
async def test_preview_bad_input_is_invalid(
    qr: Stub,
    user: Account,
    request_message: qr_code_pb2.PreviewQrCodeRequest,
    field: str,
) -> None:
    before = await total(qr, user)

    error = await expect_error(
        qr.PreviewQrCode(request_message, metadata=user.metadata), INVALID
    )

    assert bad_fields(error) == [field]
    assert await total(qr, user) == before


# -- Batch -----------------------------------------------------------------


async def test_batch_create_numbers_codes_in_order(qr: Stub, account: Account) -> None:
    codes = await batch(qr, account, 100)

    assert [code.title for code in codes] == [f"Table {n}" for n in range(1, 101)]
    assert [code.encoded_text for code in codes] == [
        MENU_URL.replace("{n}", str(n)) for n in range(1, 101)
    ]
    assert [code.content.url for code in codes] == [code.encoded_text for code in codes]
    assert len({code.id for code in codes}) == 100
    assert all(code.etag and code.symbol_version for code in codes)
    assert await total(qr, account) == 100
    for number in (1, 42, 100):
        code = codes[number - 1]
        rendered = await render(qr, account, code.id)
        assert decoded(rendered.data) == [f"https://menu.example/r/1?table={number}"]


async def test_batch_create_from_another_first_number(qr: Stub, user: Account) -> None:
    codes = await batch(
        qr,
        user,
        3,
        first_number=-1,
        title="Seat {n} of {n}",
        content=text("seat={n}"),
    )

    assert [code.title for code in codes] == [
        "Seat -1 of -1",
        "Seat 0 of 0",
        "Seat 1 of 1",
    ]
    assert [code.encoded_text for code in codes] == ["seat=-1", "seat=0", "seat=1"]
    for code in codes:
        await assert_png_reads_back(qr, user, code)


async def test_batch_create_accepts_the_maximum_count(
    qr: Stub, account: Account
) -> None:
    codes = await batch(qr, account, 1000, content=text("{n}"))

    assert [code.encoded_text for code in codes] == [str(n) for n in range(1, 1001)]
    assert await total(qr, account) == 1000
    await assert_png_reads_back(qr, account, codes[-1])


@pytest.mark.parametrize("count", [0, 1001, -1], ids=lambda c: f"count-{c}")
async def test_batch_create_count_out_of_range_is_invalid(
    qr: Stub, user: Account, count: int
) -> None:
    before = await total(qr, user)

    error = await expect_error(batch(qr, user, count), INVALID)

    assert bad_fields(error) == ["count"]
    assert await total(qr, user) == before


@pytest.mark.parametrize(
    ("first_number", "count", "title", "content", "field"),
    [
        # 2328 letters + "1000" is 2332 bytes; version 40-M holds 2331.
        (998, 3, "T {n}", text("a" * 2328 + "{n}"), "template.content"),
        # 4092 digits + "10000" is 4097 characters; the limit is 4096.
        (9999, 2, "T {n}", text("1" * 4092 + "{n}"), "template.content.text"),
        # 198 letters + "100" is 201 characters; the limit is 200.
        (98, 3, "t" * 198 + "{n}", url(MENU_URL), "template.title"),
    ],
    ids=["over-capacity", "over-text-limit", "title-over-limit"],
)
async def test_batch_create_is_all_or_nothing(
    qr: Stub,
    user: Account,
    first_number: int,
    count: int,
    title: str,
    content: QrContent,
    field: str,
) -> None:
    before = await total(qr, user)

    error = await expect_error(
        batch(
            qr,
            user,
            count,
            first_number=first_number,
            title=title,
            content=content,
        ),
        INVALID,
    )

    assert bad_fields(error) == [field]
    assert await total(qr, user) == before


async def test_batch_create_rejects_a_bad_template(qr: Stub, user: Account) -> None:
    before = await total(qr, user)

    error = await expect_error(
        qr.BatchCreateQrCodes(
            qr_code_pb2.BatchCreateQrCodesRequest(
                template=QrCode(title="", style=QrStyle(border=33)), count=2
            ),
            metadata=user.metadata,
        ),
        INVALID,
    )

    assert sorted(bad_fields(error)) == [
        "template.content",
        "template.style.border",
        "template.title",
    ]
    assert await total(qr, user) == before


async def test_batch_create_rejects_a_long_request_id(qr: Stub, user: Account) -> None:
    error = await expect_error(batch(qr, user, 2, request_id="r" * 101), INVALID)

    assert bad_fields(error) == ["request_id"]


# -- Export ----------------------------------------------------------------


async def test_export_explicit_ids_in_the_given_order(qr: Stub, user: Account) -> None:
    codes = [
        await create(qr, user, text("first"), title="First"),
        await create(qr, user, url("https://example.com/2"), title="Second"),
        await create(
            qr,
            user,
            QrContent(wifi=qr_code_pb2.WifiContent(ssid="Cafe", password="12345678")),
            title="Third",
        ),
    ]
    order = [codes[2], codes[0], codes[1]]

    messages = await export(qr, user, [code.id for code in order])

    assert [message.id for message in messages] == [code.id for code in order]
    assert [message.title for message in messages] == ["Third", "First", "Second"]
    for message, code in zip(messages, order, strict=True):
        assert message.content_type == "image/png"
        assert decoded(message.data) == [code.encoded_text]


async def test_export_every_code_when_no_ids_are_given(
    qr: Stub, account: Account, other_account: Account
) -> None:
    codes = await batch(qr, account, 110)
    await create_code(qr, other_account)
    by_id = {code.id: code for code in codes}
    listed = [code.id for code in await list_all(qr, account)]

    messages = await export(qr, account, [])

    assert [message.id for message in messages] == listed
    assert sorted(message.id for message in messages) == sorted(by_id)
    for message in messages:
        assert message.title == by_id[message.id].title
        assert message.content_type == "image/png"
        assert decoded(message.data) == [by_id[message.id].encoded_text]


async def test_export_newest_first_when_no_ids_are_given(
    qr: Stub, account: Account
) -> None:
    codes = [await create_code(qr, account, title=f"C{i}") for i in range(3)]

    messages = await export(qr, account, [])

    assert [message.id for message in messages] == [c.id for c in reversed(codes)]


async def test_export_of_no_codes_is_empty(qr: Stub, account: Account) -> None:
    assert await export(qr, account, []) == []


async def test_export_uses_format_scale_and_border(qr: Stub, user: Account) -> None:
    code = await create_code(qr, user)

    [svg] = await export(qr, user, [code.id], format=qr_code_pb2.IMAGE_FORMAT_SVG)
    [png] = await export(qr, user, [code.id], scale=2, border=1)

    assert svg.content_type == "image/svg+xml"
    root = ET.fromstring(svg.data)  # noqa: S314 - our own server's output
    assert root.tag == f"{SVG_NS}svg"
    side = (modules(code.symbol_version) + 2) * 2
    assert png_size(png.data) == (side, side)
    assert decoded(png.data) == [code.encoded_text]


async def test_export_unknown_id_is_not_found(qr: Stub, user: Account) -> None:
    code = await create_code(qr, user)

    await expect_error(export(qr, user, [code.id, str(uuid.uuid4())]), NOT_FOUND)


async def test_export_another_users_id_is_not_found(
    qr: Stub, user: Account, stranger: Account
) -> None:
    mine = await create_code(qr, user)
    theirs = await create_code(qr, stranger)

    await expect_error(export(qr, user, [mine.id, theirs.id]), NOT_FOUND)
    await expect_error(export(qr, user, [theirs.id]), NOT_FOUND)


async def test_export_malformed_id_is_invalid(qr: Stub, user: Account) -> None:
    code = await create_code(qr, user)

    error = await expect_error(export(qr, user, [code.id, "nope"]), INVALID)

    assert bad_fields(error) == ["ids[1]"]


@pytest.mark.parametrize(
    ("options", "field"),
    [({"scale": 51}, "scale"), ({"border": 33}, "border"), ({"format": 99}, "format")],
    ids=["scale", "border", "format"],
)
async def test_export_bad_options_are_invalid(
    qr: Stub, user: Account, options: dict[str, int], field: str
) -> None:
    code = await create_code(qr, user)

    error = await expect_error(export(qr, user, [code.id], **options), INVALID)

    assert bad_fields(error) == [field]


async def test_export_too_many_ids_is_invalid(qr: Stub, user: Account) -> None:
    ids = [str(uuid.uuid4()) for _ in range(1001)]

    error = await expect_error(export(qr, user, ids), INVALID)

    assert bad_fields(error) == ["ids"]


# -- Accounts --------------------------------------------------------------


async def test_codes_of_a_new_account_are_separate(
    qr: Stub, auth: auth_pb2_grpc.AuthServiceStub, account: Account
) -> None:
    await batch(qr, account, 2)

    newcomer = await register(auth)

    assert await total(qr, newcomer) == 0
    assert await export(qr, newcomer, []) == []


@pytest.fixture
async def small_messages_server(
    tmp_path: Path, database_url: str, server_settings: Settings
) -> AsyncIterator[RunningServer]:
    """A server whose messages may hold no more than the least allowed."""
    settings = server_settings.model_copy(
        update={"data_dir": tmp_path, "max_message_bytes": MIN_MESSAGE_BYTES}
    )
    running = await start_server(settings, database_url)
    try:
        yield running
    finally:
        await running.stop(0)


async def test_a_page_too_large_for_one_response_stops_early_and_continues(
    small_messages_server: RunningServer,
) -> None:
    address = f"127.0.0.1:{small_messages_server.port}"
    async with grpc.aio.insecure_channel(address) as channel:
        account = await register(auth_pb2_grpc.AuthServiceStub(channel))
        qr = qr_code_pb2_grpc.QrCodeServiceStub(channel)
        # Each code holds its text twice (content and encoded_text): about
        # 8 KB, so 300 of them need about 2.4 MB, more than one response.
        created: list[str] = []
        for batch in range(10):
            response = await qr.BatchCreateQrCodes(
                qr_code_pb2.BatchCreateQrCodesRequest(
                    template=QrCode(
                        title="Long {n}", content=QrContent(text="1" * 3990 + "{n}")
                    ),
                    first_number=1000 + 30 * batch,
                    count=30,
                ),
                metadata=account.metadata,
            )
            created += [code.id for code in response.qr_codes]
        pages: list[qr_code_pb2.ListQrCodesResponse] = []
        token = ""
        while True:
            page = await qr.ListQrCodes(
                qr_code_pb2.ListQrCodesRequest(page_size=1000, page_token=token),
                metadata=account.metadata,
            )
            pages.append(page)
            token = page.next_page_token
            if not token:
                break

    assert len(pages) == 2
    assert all(page.ByteSize() <= MIN_MESSAGE_BYTES for page in pages)
    assert all(page.total_size == 300 for page in pages)
    listed = [code.id for page in pages for code in page.qr_codes]
    assert sorted(listed) == sorted(created)
    assert len(set(listed)) == 300


async def test_a_batch_whose_account_is_deleted_meanwhile_is_refused_as_signed_out(
    auth: auth_pb2_grpc.AuthServiceStub, qr: qr_code_pb2_grpc.QrCodeServiceStub
) -> None:
    account = await register(auth)
    # Three hundred symbols take seconds to build; the account goes meanwhile.
    batch = asyncio.ensure_future(
        qr.BatchCreateQrCodes(
            qr_code_pb2.BatchCreateQrCodesRequest(
                template=QrCode(
                    title="Gone {n}", content=QrContent(text="g" * 200 + "{n}")
                ),
                count=300,
            ),
            metadata=account.metadata,
        )
    )
    await asyncio.sleep(0.3)
    await auth.DeleteAccount(
        auth_pb2.DeleteAccountRequest(password=PASSWORD), metadata=account.metadata
    )

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await batch
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_info(caught.value).reason == "SESSION_REVOKED"
