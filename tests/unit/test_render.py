"""Unit tests of qrsys_grpc.qr.render: styles, symbols, images and the cache."""

from __future__ import annotations

import io
import re
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import segno
import zxingcpp
from PIL import Image

from qrsys_grpc.errors import ContentTooLong, InvalidArgument
from qrsys_grpc.qr.content import content_kind, encode_content
from qrsys_grpc.qr.render import (
    DEFAULT_BORDER,
    DEFAULT_SCALE,
    MAX_BORDER,
    MAX_SCALE,
    MIN_CONTRAST,
    MIN_SCALE,
    ImageFormat,
    RenderCache,
    Style,
    Symbol,
    contrast,
    make_symbol,
    render,
    style_from_proto,
)
from qrsys_grpc.v1 import qr_code_pb2 as pb

SVG_NS = "{http://www.w3.org/2000/svg}"


def decode(png: bytes) -> list[tuple[str, str]]:
    """Read every barcode in a PNG; return (text, format name) pairs."""
    return decode_image(Image.open(io.BytesIO(png)))


def decode_image(image: Image.Image) -> list[tuple[str, str]]:
    """Read every barcode in an image; return (text, format name) pairs."""
    barcodes = zxingcpp.read_barcodes(image.convert("RGB"))
    return [(r.text, r.format.name) for r in barcodes]


def png_of(text: str, style: Style | None = None, scale: int = 4) -> bytes:
    style = style or Style()
    return render(
        make_symbol(text, style), style, ImageFormat.PNG, scale=scale, border=None
    )


def violation(error: InvalidArgument) -> tuple[str, str]:
    assert len(error.violations) == 1
    return error.violations[0].field, error.violations[0].description


class TestImageFormat:
    @pytest.mark.parametrize(
        ("fmt", "content_type"),
        [
            (ImageFormat.PNG, "image/png"),
            (ImageFormat.SVG, "image/svg+xml"),
            (ImageFormat.PDF, "application/pdf"),
            (ImageFormat.EPS, "application/postscript"),
            (ImageFormat.TXT, "text/plain; charset=utf-8"),
        ],
        ids=["png", "svg", "pdf", "eps", "txt"],
    )
    def test_has_a_content_type(self, fmt: ImageFormat, content_type: str) -> None:
        assert fmt.content_type == content_type

    @pytest.mark.parametrize(
        ("number", "fmt"),
        [
            (pb.IMAGE_FORMAT_UNSPECIFIED, ImageFormat.PNG),
            (pb.IMAGE_FORMAT_PNG, ImageFormat.PNG),
            (pb.IMAGE_FORMAT_SVG, ImageFormat.SVG),
            (pb.IMAGE_FORMAT_PDF, ImageFormat.PDF),
            (pb.IMAGE_FORMAT_EPS, ImageFormat.EPS),
            (pb.IMAGE_FORMAT_TXT, ImageFormat.TXT),
        ],
        ids=["unspecified", "png", "svg", "pdf", "eps", "txt"],
    )
    def test_maps_proto_numbers(self, number: int, fmt: ImageFormat) -> None:
        assert ImageFormat.from_proto(number) is fmt

    def test_rejects_an_unknown_proto_number(self) -> None:
        with pytest.raises(InvalidArgument) as caught:
            ImageFormat.from_proto(42)
        assert violation(caught.value)[0] == "format"


class TestStyleFromProto:
    @pytest.mark.parametrize("style", [None, pb.QrStyle()], ids=["none", "empty"])
    def test_defaults(self, style: pb.QrStyle | None) -> None:
        assert style_from_proto(style, kind="text") == Style(
            error_correction="M",
            micro=False,
            dark_color="#000000",
            light_color="#ffffff",
            border=None,
            boost_error=True,
        )

    @pytest.mark.parametrize(
        ("number", "level"),
        [
            (pb.ERROR_CORRECTION_UNSPECIFIED, "M"),
            (pb.ERROR_CORRECTION_LOW, "L"),
            (pb.ERROR_CORRECTION_MEDIUM, "M"),
            (pb.ERROR_CORRECTION_QUARTILE, "Q"),
            (pb.ERROR_CORRECTION_HIGH, "H"),
        ],
        ids=["unspecified", "low", "medium", "quartile", "high"],
    )
    def test_maps_error_correction(self, number: int, level: str) -> None:
        style = style_from_proto(pb.QrStyle(error_correction=number), kind="url")
        assert style.error_correction == level

    def test_rejects_an_unknown_error_correction(self) -> None:
        with pytest.raises(InvalidArgument) as caught:
            style_from_proto(pb.QrStyle(error_correction=9), kind="text")
        assert violation(caught.value)[0] == "error_correction"

    @pytest.mark.parametrize(
        ("given", "normalised", "partner"),
        [
            ("#abc", "#aabbcc", "#000"),
            ("#ABCD", "#aabbccdd", "#000"),
            ("#12AB34", "#12ab34", "#000"),
            ("#12ab34cc", "#12ab34cc", "#000"),
            ("#12AB34FF", "#12ab34", "#000"),
            ("#123F", "#112233", "#fff"),
            (" #123456 ", "#123456", "#fff"),
        ],
        ids=[
            "rgb",
            "rgba",
            "rrggbb",
            "rrggbbaa",
            "opaque-alpha",
            "short-opaque",
            "spaces",
        ],
    )
    def test_normalises_colours(
        self, given: str, normalised: str, partner: str
    ) -> None:
        """Each colour beside one it contrasts with, as dark and as light."""
        style = style_from_proto(
            pb.QrStyle(dark_color=given, light_color=partner), kind="text"
        )
        assert style.dark_color == normalised
        style = style_from_proto(
            pb.QrStyle(dark_color=partner, light_color=given), kind="text"
        )
        assert style.light_color == normalised

    @pytest.mark.parametrize(
        ("dark", "light"),
        [
            ("#000000", "#010101"),
            ("#fefefe", "#ffffff"),
            ("#808080", "#7f7f7f"),
            ("#ffcc00", "#ffffff"),
            ("#00000020", "#ffffff"),
        ],
        ids=["near-black", "near-white", "mid-grey", "yellow-on-white", "faint-dark"],
    )
    def test_rejects_colours_too_alike_to_scan(self, dark: str, light: str) -> None:
        with pytest.raises(InvalidArgument) as caught:
            style_from_proto(
                pb.QrStyle(dark_color=dark, light_color=light), kind="text"
            )
        path, description = violation(caught.value)
        assert path == "light_color"
        assert f"at least {MIN_CONTRAST:g}:1" in description

    @pytest.mark.parametrize(
        ("dark", "light", "ratio"),
        [
            ("#000000", "#ffffff", 21.0),
            ("#ffffff", "#000000", 21.0),
            ("#8b0000", "#ffffff", 10.01),
            ("#000000", "#ffffff00", 21.0),
            ("#777777", "#ffffff", 4.48),
        ],
        ids=["black-on-white", "inverted", "dark-red", "clear-background", "grey"],
    )
    def test_contrast_is_wcag_as_printed_on_white(
        self, dark: str, light: str, ratio: float
    ) -> None:
        assert contrast(dark, light) == pytest.approx(ratio, abs=0.01)
        style_from_proto(pb.QrStyle(dark_color=dark, light_color=light), kind="text")

    @pytest.mark.parametrize(
        "color",
        [
            "red",
            "123456",
            "#12",
            "#12345",
            "#1234567",
            "#123456789",
            "#ggg",
            "rgb(0,0,0)",
        ],
        ids=["name", "no-hash", "2", "5", "7", "9", "not-hex", "css-function"],
    )
    @pytest.mark.parametrize("field", ["dark_color", "light_color"])
    def test_rejects_bad_colours(self, color: str, field: str) -> None:
        with pytest.raises(InvalidArgument) as caught:
            style_from_proto(pb.QrStyle(**{field: color}), kind="text")
        path, description = violation(caught.value)
        assert path == field
        assert "#rgb, #rgba, #rrggbb or #rrggbbaa" in description

    @pytest.mark.parametrize(
        ("dark", "light"),
        [("#000", "#000000"), ("", "#000"), ("#fff", ""), ("#AbC", "#aabbccff")],
        ids=["same", "light-is-default-dark", "dark-is-default-light", "same-case"],
    )
    def test_rejects_equal_dark_and_light(self, dark: str, light: str) -> None:
        with pytest.raises(InvalidArgument) as caught:
            style_from_proto(
                pb.QrStyle(dark_color=dark, light_color=light), kind="text"
            )
        assert violation(caught.value) == ("light_color", "must differ from dark_color")

    def test_rejects_invisible_dark_modules(self) -> None:
        with pytest.raises(InvalidArgument) as caught:
            style_from_proto(pb.QrStyle(dark_color="#12345600"), kind="text")
        assert violation(caught.value)[0] == "dark_color"

    def test_accepts_a_transparent_background(self) -> None:
        style = style_from_proto(pb.QrStyle(light_color="#fff0"), kind="text")
        assert style.light_color == "#ffffff00"

    @pytest.mark.parametrize("border", [0, 4, MAX_BORDER], ids=["0", "4", "32"])
    def test_accepts_borders_in_range(self, border: int) -> None:
        assert style_from_proto(pb.QrStyle(border=border), kind="text").border == border

    @pytest.mark.parametrize("border", [-1, MAX_BORDER + 1], ids=["-1", "33"])
    def test_rejects_borders_out_of_range(self, border: int) -> None:
        with pytest.raises(InvalidArgument) as caught:
            style_from_proto(pb.QrStyle(border=border), kind="text")
        assert violation(caught.value)[0] == "border"

    def test_unset_border_is_none(self) -> None:
        assert style_from_proto(pb.QrStyle(), kind="text").border is DEFAULT_BORDER

    def test_epc_forces_medium_without_boost(self) -> None:
        style = style_from_proto(
            pb.QrStyle(error_correction=pb.ERROR_CORRECTION_HIGH), kind="epc"
        )
        assert style.error_correction == "M"
        assert style.boost_error is False

    def test_epc_rejects_micro(self) -> None:
        with pytest.raises(InvalidArgument) as caught:
            style_from_proto(pb.QrStyle(micro=True), kind="epc")
        assert violation(caught.value)[0] == "micro"

    def test_micro_is_kept_for_other_kinds(self) -> None:
        assert style_from_proto(pb.QrStyle(micro=True), kind="text").micro is True

    def test_reports_every_bad_field_at_once(self) -> None:
        with pytest.raises(InvalidArgument) as caught:
            style_from_proto(
                pb.QrStyle(
                    error_correction=7, dark_color="x", light_color="y", border=99
                ),
                kind="text",
            )
        fields = [v.field for v in caught.value.violations]
        assert fields == ["error_correction", "dark_color", "light_color", "border"]


UNICODE_TEXTS = [
    "hello world",
    "café",
    "naïve façade über",
    "Привет, мир! Съешь же ещё этих мягких французских булок",
    "Pizza 🍕 — 12,50 €",
    "👨‍👩‍👧‍👦🏳️‍🌈",
    "日本語のテキスト",
    "ああ",
    "こんにちは 世界 123",
    "中文字符",
    "한국어",
    "עִבְרִית and العربية",
    "HELLO WORLD 123",
    "0123456789",
    "line 1\nline 2\r\nline 3\ttab",
    "ÿ",
]
UNICODE_IDS = [
    "ascii",
    "latin1",
    "latin1-more",
    "cyrillic",
    "pizza-euro",
    "emoji-zwj",
    "japanese",
    "kana-pair",
    "japanese-mixed",
    "chinese",
    "korean",
    "rtl",
    "alphanumeric",
    "numeric",
    "control-whitespace",
    "latin1-ff",
]


class TestMakeSymbol:
    @pytest.mark.parametrize("text", UNICODE_TEXTS, ids=UNICODE_IDS)
    def test_zxing_reads_back_exactly_the_text(self, text: str) -> None:
        assert decode(png_of(text)) == [(text, "QRCode")]

    @pytest.mark.parametrize("text", UNICODE_TEXTS, ids=UNICODE_IDS)
    def test_zxing_reads_back_micro_symbols(self, text: str) -> None:
        style = Style(micro=True, error_correction="L")
        symbol = make_symbol(text, style)
        got = decode(png_of(text, style))
        expected_format = "MicroQRCode" if symbol.is_micro else "QRCode"
        assert got == [(text, expected_format)]

    def test_utf8_without_byte_mode_would_be_read_as_kanji(self) -> None:
        # Why non-ASCII text is forced into byte mode: segno takes these UTF-8
        # bytes for Shift_JIS pairs and picks Kanji mode.
        qr = segno.make("ああ", encoding="utf-8", micro=False)
        assert qr.mode == "kanji"
        out = io.BytesIO()
        qr.save(out, kind="png", scale=4)
        assert decode(out.getvalue())[0][0] != "ああ"
        assert make_symbol("ああ", Style()).mode == "byte"

    @pytest.mark.parametrize(
        ("text", "mode"),
        [
            ("0123", "numeric"),
            ("HELLO 1", "alphanumeric"),
            ("hello", "byte"),
            ("é", "byte"),
        ],
        ids=["numeric", "alphanumeric", "byte", "utf8"],
    )
    def test_uses_the_compact_mode(self, text: str, mode: str) -> None:
        assert make_symbol(text, Style()).mode == mode

    def test_describes_the_symbol(self) -> None:
        symbol = make_symbol("https://example.com", Style(error_correction="L"))
        assert symbol.encoded_text == "https://example.com"
        assert symbol.version == "2"
        assert symbol.size == 25
        assert symbol.is_micro is False
        assert symbol.error_correction in {"L", "M", "Q", "H"}

    def test_boosts_error_correction_within_the_same_version(self) -> None:
        symbol = make_symbol("hi", Style(error_correction="L"))
        assert symbol.version == "1"
        assert symbol.error_correction == "H"

    def test_keeps_the_level_without_boost(self) -> None:
        symbol = make_symbol("hi", Style(error_correction="M", boost_error=False))
        assert symbol.error_correction == "M"

    def test_uses_micro_only_when_asked(self) -> None:
        assert make_symbol("HELLO", Style()).version == "1"
        micro = make_symbol("HELLO", Style(micro=True))
        assert micro.version == "M2"
        assert micro.is_micro is True
        assert micro.size == 13

    def test_falls_back_to_regular_qr_when_micro_cannot_hold_the_text(self) -> None:
        symbol = make_symbol("x" * 40, Style(micro=True))
        assert symbol.is_micro is False
        assert not symbol.version.startswith("M")

    def test_epc_payload_of_331_bytes_fits_version_13_at_m(self) -> None:
        style = style_from_proto(None, kind="epc")
        symbol = make_symbol("a" * 331, style)
        assert int(symbol.version) <= 13
        assert symbol.error_correction == "M"

    @pytest.mark.parametrize(
        ("char", "level", "limit", "unit"),
        [
            ("a", "L", 2953, "bytes"),
            ("a", "M", 2331, "bytes"),
            ("a", "Q", 1663, "bytes"),
            ("a", "H", 1273, "bytes"),
            ("7", "L", 7089, "digits"),
            ("7", "M", 5596, "digits"),
            ("7", "Q", 3993, "digits"),
            ("7", "H", 3057, "digits"),
            ("A", "L", 4296, "characters"),
            ("A", "M", 3391, "characters"),
            ("A", "Q", 2420, "characters"),
            ("A", "H", 1852, "characters"),
        ],
        ids=[
            "byte-L",
            "byte-M",
            "byte-Q",
            "byte-H",
            "numeric-L",
            "numeric-M",
            "numeric-Q",
            "numeric-H",
            "alnum-L",
            "alnum-M",
            "alnum-Q",
            "alnum-H",
        ],
    )
    def test_accepts_the_limit_and_rejects_one_more(
        self, char: str, level: str, limit: int, unit: str
    ) -> None:
        style = Style(error_correction=level)
        assert make_symbol(char * limit, style).version == "40"
        with pytest.raises(ContentTooLong) as caught:
            make_symbol(char * (limit + 1), style)
        field, description = violation(caught.value)
        assert field == ""
        assert description.startswith(
            f"content is {limit + 1} {unit}; the largest QR symbol at error "
            f"correction {level} holds {limit} {unit}"
        )

    def test_counts_utf8_bytes_at_the_limit(self) -> None:
        style = Style(error_correction="L")
        fits = "é" * 1476 + "a"  # 2952 + 1 = 2953 bytes
        assert decode(png_of(fits, style, scale=2)) == [(fits, "QRCode")]
        with pytest.raises(ContentTooLong) as caught:
            make_symbol(fits + "a", style)
        assert violation(caught.value) == (
            "",
            "content is 2954 bytes; the largest QR symbol at error correction L "
            "holds 2953 bytes",
        )

    def test_too_long_is_an_invalid_argument(self) -> None:
        with pytest.raises(InvalidArgument):
            make_symbol("a" * 3000, Style(error_correction="L"))

    def test_rejects_empty_text(self) -> None:
        with pytest.raises(InvalidArgument) as caught:
            make_symbol("", Style())
        assert violation(caught.value)[0] == ""


CONTENTS = [
    pb.QrContent(text="Pizza 🍕 — 12,50 €"),
    pb.QrContent(url="https://bücher.example/straße?q=1&r=2"),
    pb.QrContent(
        wifi=pb.WifiContent(ssid='Café;"Net"', password="pa:ss,word\\1", hidden=True)
    ),
    pb.QrContent(
        contact=pb.ContactContent(
            name="Jürgen Müller, Jr.",
            phones=["+49 (30) 1234-567"],
            emails=["j.mueller@example.de"],
            organization="ACME; Inc.",
            title="CTO",
            url="https://example.de",
            address="Hauptstr. 1, 10115 Berlin",
            note="Line 1\nLine 2 \\ done",
        )
    ),
    pb.QrContent(
        contact=pb.ContactContent(
            name="山田 太郎",
            phones=["+81 3-1234-5678"],
            emails=["taro@example.jp"],
            note="メモ: ok",
            format=pb.CONTACT_FORMAT_MECARD,
        )
    ),
    pb.QrContent(
        email=pb.EmailContent(
            address="info@example.com", subject="Grüße / hello?", body="a\nb & c"
        )
    ),
    pb.QrContent(sms=pb.SmsContent(number="+1 555 0100", message="Привет: 👋")),
    pb.QrContent(geo=pb.GeoContent(latitude=-33.8688, longitude=151.2093)),
    pb.QrContent(
        epc=pb.EpcContent(
            name="Red Cross of Belgium",
            iban="BE72000000001616",
            bic="BPOTBEB1",
            amount="1",
            text="Urgency fund",
        )
    ),
    pb.QrContent(
        epc=pb.EpcContent(
            name="Zoë Ümlaut", iban="DE89370400440532013000", amount="12.50"
        )
    ),
]
CONTENT_IDS = [
    "text",
    "url",
    "wifi",
    "vcard",
    "mecard",
    "email",
    "sms",
    "geo",
    "epc-guideline",
    "epc-utf8",
]


def style_for(content: pb.QrContent, **fields: Any) -> Style:
    return style_from_proto(pb.QrStyle(**fields), kind=content_kind(content))


class TestRenderEveryKind:
    @pytest.mark.parametrize("content", CONTENTS, ids=CONTENT_IDS)
    def test_png_reads_back_as_the_encoded_text(self, content: pb.QrContent) -> None:
        text = encode_content(content)
        style = style_for(content)
        symbol = make_symbol(text, style)
        png = render(symbol, style, ImageFormat.PNG, scale=4, border=None)
        # zxing-cpp returns vCard CRLFs and EPC LFs exactly as encoded.
        assert decode(png) == [(symbol.encoded_text, "QRCode")]

    @pytest.mark.parametrize("content", CONTENTS, ids=CONTENT_IDS)
    def test_reads_back_in_colour_with_a_narrow_border(
        self, content: pb.QrContent
    ) -> None:
        text = encode_content(content)
        style = style_for(
            content, dark_color="#1a237e", light_color="#fff8e1", border=2
        )
        png = render(
            make_symbol(text, style), style, ImageFormat.PNG, scale=5, border=None
        )
        assert decode(png) == [(text, "QRCode")]

    def test_epc_symbols_stay_at_level_m(self) -> None:
        content = CONTENTS[8]
        symbol = make_symbol(encode_content(content), style_for(content))
        assert symbol.error_correction == "M"


@pytest.fixture
def symbol() -> Symbol:
    return make_symbol("https://example.com/render", Style())


class TestRender:
    @pytest.mark.parametrize(
        ("scale", "border", "side"),
        [
            (1, None, 25 + 8),
            (10, None, (25 + 8) * 10),
            (3, 0, 25 * 3),
            (2, 32, (25 + 64) * 2),
        ],
        ids=["scale-1", "default", "no-border", "max-border"],
    )
    def test_png_has_the_size_of_scale_and_border(
        self, symbol: Symbol, scale: int, border: int | None, side: int
    ) -> None:
        png = render(symbol, Style(), ImageFormat.PNG, scale=scale, border=border)
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
        assert Image.open(io.BytesIO(png)).size == (side, side)

    def test_png_uses_the_style_border_when_none_is_given(self, symbol: Symbol) -> None:
        png = render(symbol, Style(border=1), ImageFormat.PNG, scale=2, border=None)
        assert Image.open(io.BytesIO(png)).size == (54, 54)
        png = render(symbol, Style(border=1), ImageFormat.PNG, scale=2, border=6)
        assert Image.open(io.BytesIO(png)).size == (74, 74)

    def test_micro_png_has_the_micro_quiet_zone(self) -> None:
        style = Style(micro=True)
        micro = make_symbol("12345", style)
        png = render(micro, style, ImageFormat.PNG, scale=3, border=None)
        assert Image.open(io.BytesIO(png)).size == ((micro.size + 4) * 3,) * 2
        assert decode(png) == [("12345", "MicroQRCode")]

    def test_png_uses_the_style_colours(self, symbol: Symbol) -> None:
        style = Style(dark_color="#1a237e", light_color="#ffeb3b")
        png = render(symbol, style, ImageFormat.PNG, scale=2, border=4)
        image = Image.open(io.BytesIO(png)).convert("RGB")
        assert image.getpixel((0, 0)) == (0xFF, 0xEB, 0x3B)  # quiet zone
        assert image.getpixel((8, 8)) == (0x1A, 0x23, 0x7E)  # finder corner

    def test_png_background_can_be_transparent(self, symbol: Symbol) -> None:
        style = Style(light_color="#ffffff00")
        png = render(symbol, style, ImageFormat.PNG, scale=2, border=4)
        image = Image.open(io.BytesIO(png)).convert("RGBA")
        assert image.getpixel((0, 0))[3] == 0
        assert image.getpixel((8, 8)) == (0, 0, 0, 255)

    def test_svg_is_an_svg_document_in_the_style_colours(self, symbol: Symbol) -> None:
        style = Style(dark_color="#1a237e", light_color="#fff8e1")
        svg = render(symbol, style, ImageFormat.SVG, scale=4, border=None)
        root = ET.fromstring(svg)  # noqa: S314 - our own output
        assert root.tag == f"{SVG_NS}svg"
        assert root.get("width") == root.get("height") == str((25 + 8) * 4)
        paths = root.iter(f"{SVG_NS}path")
        strokes = {p.get("stroke") for p in paths} - {None}
        fills = {p.get("fill") for p in root.iter(f"{SVG_NS}path")} - {None}
        assert strokes == {"#1a237e"}
        assert fills == {"#fff8e1"}

    def test_svg_without_background_when_light_is_transparent(
        self, symbol: Symbol
    ) -> None:
        style = Style(dark_color="#12345680", light_color="#ffffff00")
        svg = render(symbol, style, ImageFormat.SVG, scale=1, border=None)
        root = ET.fromstring(svg)  # noqa: S314 - our own output
        [path] = root.iter(f"{SVG_NS}path")
        assert path.get("fill") is None
        assert path.get("stroke") == "#123456"
        assert path.get("stroke-opacity") == "0.5"

    def test_pdf_is_a_pdf_of_reasonable_size(self, symbol: Symbol) -> None:
        pdf = render(symbol, Style(), ImageFormat.PDF, scale=10, border=None)
        assert pdf.startswith(b"%PDF-")
        assert pdf.rstrip().endswith(b"%%EOF")
        assert 300 < len(pdf) < 20_000
        assert b"/MediaBox [0 0 330 330]" in pdf

    def test_pdf_xref_offsets_still_point_at_objects(self, symbol: Symbol) -> None:
        pdf = render(symbol, Style(), ImageFormat.PDF, scale=2, border=None)
        xref = pdf[pdf.index(b"xref") :]
        offsets = [int(m) for m in re.findall(rb"(\d{10}) 00000 n", xref)]
        assert offsets
        for number, offset in enumerate(offsets, start=1):
            assert pdf[offset:].startswith(f"{number} 0 obj".encode())

    @pytest.mark.parametrize(
        "fmt", [ImageFormat.PDF, ImageFormat.EPS], ids=["pdf", "eps"]
    )
    def test_translucent_colours_are_flattened_for_print(
        self, symbol: Symbol, fmt: ImageFormat
    ) -> None:
        style = Style(dark_color="#00000080", light_color="#ff000000")
        data = render(symbol, style, fmt, scale=1, border=None)
        assert len(data) > 100

    def test_a_nearly_clear_background_stays_clear_in_a_png(
        self, symbol: Symbol
    ) -> None:
        """An alpha of 1/255 is drawn as clear, not (as segno would) opaque."""
        style = style_from_proto(pb.QrStyle(light_color="#00000001"), kind="text")
        assert style.light_color == "#00000000"
        png = render(symbol, style, ImageFormat.PNG, scale=4, border=None)
        image = Image.open(io.BytesIO(png)).convert("RGBA")
        assert image.getpixel((0, 0))[3] == 0
        on_white = Image.new("RGBA", image.size, "white")
        on_white.alpha_composite(image)
        assert [text for text, _ in decode_image(on_white)] == [symbol.encoded_text]

    @pytest.mark.parametrize("scale", [1, 3, 10], ids=["1", "3", "10"])
    def test_eps_bounding_box_follows_scale(self, symbol: Symbol, scale: int) -> None:
        eps = render(symbol, Style(), ImageFormat.EPS, scale=scale, border=None)
        assert eps.startswith(b"%!PS-Adobe-3.0 EPSF-3.0")
        side = (25 + 8) * scale
        assert f"%%BoundingBox: 0 0 {side} {side}\n".encode() in eps

    @pytest.mark.parametrize(
        "fmt", [ImageFormat.PDF, ImageFormat.EPS], ids=["pdf", "eps"]
    )
    def test_output_carries_no_timestamp(
        self, symbol: Symbol, fmt: ImageFormat, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(time, "strftime", lambda *_: "20000101000000")
        first = render(symbol, Style(), fmt, scale=2, border=None)
        monkeypatch.setattr(time, "strftime", lambda *_: "20991231235959")
        second = render(symbol, Style(), fmt, scale=2, border=None)
        assert first == second
        assert b"CreationDate" not in first

    @pytest.mark.parametrize(
        ("border", "rows"), [(None, 33), (0, 25), (2, 29)], ids=["default", "0", "2"]
    )
    def test_txt_has_one_row_per_module_row(
        self, symbol: Symbol, border: int | None, rows: int
    ) -> None:
        txt = render(symbol, Style(), ImageFormat.TXT, scale=7, border=border)
        lines = txt.decode("ascii").splitlines()
        assert len(lines) == rows
        assert all(len(line) == rows for line in lines)
        assert set("".join(lines)) == {"0", "1"}

    def test_txt_matches_the_module_matrix(self, symbol: Symbol) -> None:
        txt = render(symbol, Style(), ImageFormat.TXT, scale=1, border=0)
        expected = "".join(
            "".join(str(int(bool(m))) for m in row) + "\n" for row in symbol.qr.matrix
        )
        assert txt.decode("ascii") == expected

    @pytest.mark.parametrize("scale", [MIN_SCALE, MAX_SCALE], ids=["1", "50"])
    def test_accepts_scales_at_the_bounds(self, scale: int) -> None:
        small = make_symbol("1", Style())
        png = render(small, Style(), ImageFormat.PNG, scale=scale, border=0)
        assert Image.open(io.BytesIO(png)).size == (small.size * scale,) * 2

    @pytest.mark.parametrize("scale", [0, -1, MAX_SCALE + 1], ids=["0", "-1", "51"])
    def test_rejects_scales_out_of_range(self, symbol: Symbol, scale: int) -> None:
        with pytest.raises(InvalidArgument) as caught:
            render(symbol, Style(), ImageFormat.PNG, scale=scale, border=None)
        assert violation(caught.value)[0] == "scale"

    @pytest.mark.parametrize("border", [-1, MAX_BORDER + 1], ids=["-1", "33"])
    def test_rejects_borders_out_of_range(self, symbol: Symbol, border: int) -> None:
        with pytest.raises(InvalidArgument) as caught:
            render(symbol, Style(), ImageFormat.SVG, scale=1, border=border)
        assert violation(caught.value)[0] == "border"

    def test_rejects_a_bad_border_in_a_hand_made_style(self, symbol: Symbol) -> None:
        with pytest.raises(InvalidArgument) as caught:
            render(symbol, Style(border=40), ImageFormat.TXT, scale=1, border=None)
        assert violation(caught.value)[0] == "border"


ALL_FORMATS = list(ImageFormat)
FORMAT_IDS = [fmt.name.lower() for fmt in ImageFormat]


class TestRenderCache:
    @pytest.mark.parametrize("fmt", ALL_FORMATS, ids=FORMAT_IDS)
    def test_returns_the_bytes_of_a_fresh_render(self, fmt: ImageFormat) -> None:
        cache = RenderCache()
        style = Style(dark_color="#333333")
        first_symbol, first = cache.render_cached("cached text", style, fmt, 3, None)
        second_symbol, second = cache.render_cached("cached text", style, fmt, 3, None)
        fresh_symbol = make_symbol("cached text", style)
        fresh = render(fresh_symbol, style, fmt, scale=3, border=None)
        assert first == second == fresh
        assert second_symbol is first_symbol
        assert first_symbol.version == fresh_symbol.version
        assert first_symbol.encoded_text == "cached text"

    def test_lookup_finds_only_what_was_rendered(self) -> None:
        cache = RenderCache()
        style = Style()
        assert cache.lookup("a", style, ImageFormat.PNG) is None
        symbol, data = cache.render_cached("a", style, ImageFormat.PNG)
        assert cache.lookup("a", style, ImageFormat.PNG) == (symbol, data)
        assert cache.lookup("a", style, ImageFormat.SVG) is None
        assert (cache.hits, cache.misses) == (1, 3)

    def test_counts_hits_and_misses(self) -> None:
        cache = RenderCache()
        style = Style()
        cache.render_cached("a", style, ImageFormat.PNG)
        cache.render_cached("a", style, ImageFormat.PNG)
        cache.render_cached("a", style, ImageFormat.PNG, DEFAULT_SCALE)
        assert (cache.hits, cache.misses) == (2, 1)
        assert len(cache) == 1

    @pytest.mark.parametrize(
        "change",
        [
            {"text": "b"},
            {"style": Style(dark_color="#111111")},
            {"style": Style(error_correction="H")},
            {"style": Style(micro=True)},
            {"style": Style(border=1)},
            {"fmt": ImageFormat.SVG},
            {"scale": 4},
            {"border": 0},
        ],
        ids=[
            "text",
            "colour",
            "level",
            "micro",
            "style-border",
            "format",
            "scale",
            "border",
        ],
    )
    def test_keys_on_everything_that_shapes_the_image(
        self, change: dict[str, Any]
    ) -> None:
        cache = RenderCache()
        base: dict[str, Any] = {
            "text": "a",
            "style": Style(),
            "fmt": ImageFormat.PNG,
            "scale": 3,
            "border": None,
        }
        cache.render_cached(**base)
        _, changed = cache.render_cached(**(base | change))
        assert (cache.hits, cache.misses) == (0, 2)
        cache.render_cached(**base)
        assert cache.hits == 1
        assert cache.render_cached(**(base | change))[1] == changed
        assert cache.hits == 2

    def test_stays_within_its_byte_bound(self) -> None:
        cache = RenderCache(max_bytes=20_000)
        for number in range(60):
            cache.render_cached(f"item {number}", Style(), ImageFormat.SVG, 2, None)
            assert cache.current_bytes <= cache.max_bytes
        assert 0 < len(cache) < 60
        # The oldest entries were evicted, the newest are still there.
        cache.render_cached("item 59", Style(), ImageFormat.SVG, 2, None)
        assert cache.hits == 1
        cache.render_cached("item 0", Style(), ImageFormat.SVG, 2, None)
        assert cache.hits == 1

    def test_does_not_keep_an_image_larger_than_the_bound(self) -> None:
        cache = RenderCache(max_bytes=300)
        style = Style()
        _, data = cache.render_cached("big", style, ImageFormat.PNG, 20, None)
        assert len(data) > 300
        assert data == render(
            make_symbol("big", style), style, ImageFormat.PNG, scale=20, border=None
        )
        assert len(cache) == 0
        assert cache.current_bytes == 0
        cache.render_cached("big", style, ImageFormat.PNG, 20, None)
        assert (cache.hits, cache.misses) == (0, 2)

    def test_is_safe_across_threads(self) -> None:
        cache = RenderCache(max_bytes=200_000)
        texts = [f"thread {n % 7}" for n in range(200)]

        def work(text: str) -> bytes:
            return cache.render_cached(text, Style(), ImageFormat.TXT, 1, None)[1]

        with ThreadPoolExecutor(max_workers=8) as pool:
            results = list(pool.map(work, texts))
        for text, data in zip(texts, results, strict=True):
            assert data == render(
                make_symbol(text, Style()),
                Style(),
                ImageFormat.TXT,
                scale=1,
                border=None,
            )
        assert cache.hits + cache.misses == len(texts)
        assert cache.misses >= 7
        assert cache.current_bytes <= cache.max_bytes

    def test_validates_arguments_before_looking_up(self) -> None:
        cache = RenderCache()
        with pytest.raises(InvalidArgument):
            cache.render_cached("a", Style(), ImageFormat.PNG, 0, None)
        with pytest.raises(InvalidArgument):
            cache.render_cached("a", Style(), ImageFormat.PNG, 1, 99)
        assert (cache.hits, cache.misses) == (0, 0)

    def test_propagates_content_too_long(self) -> None:
        cache = RenderCache()
        with pytest.raises(ContentTooLong):
            cache.render_cached("a" * 4000, Style(), ImageFormat.PNG, 1, None)

    def test_clear_drops_entries(self) -> None:
        cache = RenderCache()
        cache.render_cached("a", Style(), ImageFormat.TXT, 1, None)
        cache.clear()
        assert len(cache) == 0
        assert cache.current_bytes == 0

    @pytest.mark.parametrize("max_bytes", [0, -1], ids=["0", "-1"])
    def test_needs_a_positive_bound(self, max_bytes: int) -> None:
        with pytest.raises(ValueError, match="positive"):
            RenderCache(max_bytes=max_bytes)
