"""Build QR symbols with segno and draw them as PNG, SVG, PDF, EPS or text.

Pure and synchronous: the server calls it in a thread pool.
"""

from __future__ import annotations

import enum
import io
import re
import threading
from dataclasses import dataclass, field

import segno
from cachetools import LRUCache
from coloraide import Color

from qrsys_grpc.errors import ContentTooLong, FieldViolation, InvalidArgument
from qrsys_grpc.qr.content import EPC_ERROR_CORRECTION
from qrsys_grpc.v1 import qr_code_pb2

__all__ = [
    "DEFAULT_BORDER",
    "DEFAULT_CACHE_BYTES",
    "DEFAULT_DARK_COLOR",
    "DEFAULT_ERROR_CORRECTION",
    "DEFAULT_LIGHT_COLOR",
    "DEFAULT_SCALE",
    "MAX_BORDER",
    "MAX_SCALE",
    "MIN_BORDER",
    "MIN_CONTRAST",
    "MIN_SCALE",
    "ImageFormat",
    "RenderCache",
    "Style",
    "Symbol",
    "contrast",
    "make_symbol",
    "render",
    "style_from_proto",
]

MIN_SCALE = 1
MAX_SCALE = 50
DEFAULT_SCALE = 10
MIN_BORDER = 0
MAX_BORDER = 32
MAX_PNG_SIDE = 4096
# None lets segno pick the recommended quiet zone: 4 modules, 2 for Micro QR.
DEFAULT_BORDER: int | None = None
DEFAULT_ERROR_CORRECTION = "M"
MIN_CONTRAST = 2.0
"""The least WCAG contrast ratio between the colours: below it, phone
cameras in ordinary light miss modules that a clean image still shows."""

DEFAULT_DARK_COLOR = "#000000"
DEFAULT_LIGHT_COLOR = "#ffffff"
DEFAULT_CACHE_BYTES = 64 * 1024 * 1024

_COLOR_FORMS = "#rgb, #rgba, #rrggbb or #rrggbbaa (hexadecimal digits)"
_HEX_COLOR = re.compile(r"#(?:[0-9a-f]{3,4}|[0-9a-f]{6}|[0-9a-f]{8})", re.IGNORECASE)
_ALPHANUMERIC = re.compile(r"[0-9A-Z $%*+\-./:]*")
_PDF_CREATION_DATE = re.compile(rb"/CreationDate\(D:[^)]*\)")
_EPS_CREATION_DATE = re.compile(r"^%%CreationDate:[^\n]*\n", re.MULTILINE)

_ERROR_CORRECTION_FROM_PROTO: dict[int, str] = {
    qr_code_pb2.ERROR_CORRECTION_UNSPECIFIED: DEFAULT_ERROR_CORRECTION,
    qr_code_pb2.ERROR_CORRECTION_LOW: "L",
    qr_code_pb2.ERROR_CORRECTION_MEDIUM: "M",
    qr_code_pb2.ERROR_CORRECTION_QUARTILE: "Q",
    qr_code_pb2.ERROR_CORRECTION_HIGH: "H",
}

# What a version 40 symbol holds per mode and error correction level
# (ISO/IEC 18004:2015, table 7). qrsys never uses Kanji mode.
_MAX_CAPACITY = {
    "numeric": {"L": 7089, "M": 5596, "Q": 3993, "H": 3057},
    "alphanumeric": {"L": 4296, "M": 3391, "Q": 2420, "H": 1852},
    "byte": {"L": 2953, "M": 2331, "Q": 1663, "H": 1273},
}
_UNITS = {"numeric": "digits", "alphanumeric": "characters", "byte": "bytes"}


class ImageFormat(enum.Enum):
    """An image format that ``render`` writes; the value is segno's kind."""

    PNG = "png"
    SVG = "svg"
    PDF = "pdf"
    EPS = "eps"
    TXT = "txt"

    @property
    def content_type(self) -> str:
        """The MIME type of images in this format."""
        return _CONTENT_TYPES[self]

    @classmethod
    def from_proto(cls, value: int) -> ImageFormat:
        """Map a ``qrsys.v1.ImageFormat`` number to a format; 0 means PNG.

        Raises:
            InvalidArgument: on field "format" for an unknown number.
        """
        try:
            return _FORMAT_FROM_PROTO[value]
        except KeyError:
            raise InvalidArgument.field(
                "format", f"unknown image format {value}"
            ) from None


_CONTENT_TYPES = {
    ImageFormat.PNG: "image/png",
    ImageFormat.SVG: "image/svg+xml",
    ImageFormat.PDF: "application/pdf",
    ImageFormat.EPS: "application/postscript",
    ImageFormat.TXT: "text/plain; charset=utf-8",
}

_FORMAT_FROM_PROTO: dict[int, ImageFormat] = {
    qr_code_pb2.IMAGE_FORMAT_UNSPECIFIED: ImageFormat.PNG,
    qr_code_pb2.IMAGE_FORMAT_PNG: ImageFormat.PNG,
    qr_code_pb2.IMAGE_FORMAT_SVG: ImageFormat.SVG,
    qr_code_pb2.IMAGE_FORMAT_PDF: ImageFormat.PDF,
    qr_code_pb2.IMAGE_FORMAT_EPS: ImageFormat.EPS,
    qr_code_pb2.IMAGE_FORMAT_TXT: ImageFormat.TXT,
}


@dataclass(frozen=True)
class Style:
    """How a symbol looks, validated and normalised.

    Colours are lower-case ``#rrggbb`` or ``#rrggbbaa`` (an opaque alpha is
    dropped). ``boost_error`` is False only for EPC payment codes, which must
    keep level M exactly.
    """

    error_correction: str = DEFAULT_ERROR_CORRECTION
    micro: bool = False
    dark_color: str = DEFAULT_DARK_COLOR
    light_color: str = DEFAULT_LIGHT_COLOR
    border: int | None = DEFAULT_BORDER
    boost_error: bool = True


@dataclass(frozen=True)
class Symbol:
    """A built QR symbol and what it says.

    ``version`` is ``"1"`` to ``"40"`` or ``"M1"`` to ``"M4"``;
    ``error_correction`` is the level after boosting (None for M1, which only
    detects errors); ``size`` is the width in modules without quiet zone.
    """

    encoded_text: str
    version: str
    error_correction: str | None
    mode: str
    size: int
    is_micro: bool
    qr: segno.QRCode = field(repr=False, compare=False)


def _normalise_color(value: str) -> str | None:
    """Return ``value`` as ``#rrggbb`` / ``#rrggbbaa``, or None if malformed."""
    text = value.strip()
    if not _HEX_COLOR.fullmatch(text):
        return None
    digits = text[1:].lower()
    if len(digits) <= 4:
        digits = "".join(char * 2 for char in digits)
    if len(digits) == 8 and digits.endswith("ff"):
        digits = digits[:6]
    if len(digits) == 8 and digits.endswith("01"):
        # segno's PNG writer takes an alpha of 1 (of 255) for opaque, as it
        # compares it with 1.0; 1/255 and 0 look the same, so 0 it is.
        digits = digits[:6] + "00"
    return "#" + digits


def contrast(dark: str, light: str) -> float:
    """The WCAG 2.1 contrast ratio of the two colours as printed: the light
    one over white paper, the dark one over that."""
    paper = Color.layer([light, "white"])
    return float(Color.layer([dark, paper]).contrast(paper, method="wcag21"))


def style_from_proto(style: qr_code_pb2.QrStyle | None, *, kind: str) -> Style:
    """Validate a ``QrStyle`` for content of ``kind`` and normalise it.

    An unset style gives the defaults: level M, no Micro QR, black on white,
    segno's quiet zone. For kind "epc" the level is forced to M without
    boosting, as the EPC standard requires.

    Raises:
        InvalidArgument: listing every bad field among ``error_correction``,
            ``micro``, ``dark_color``, ``light_color`` and ``border``.
    """
    if style is None:
        style = qr_code_pb2.QrStyle()
    violations: list[FieldViolation] = []

    level_number = int(style.error_correction)
    level = _ERROR_CORRECTION_FROM_PROTO.get(level_number)
    if level is None:
        violations.append(
            FieldViolation(
                "error_correction",
                f"unknown error correction {level_number}; use LOW, MEDIUM, "
                "QUARTILE or HIGH",
            )
        )
        level = DEFAULT_ERROR_CORRECTION
    micro = bool(style.micro)
    boost_error = True
    if kind == "epc":
        level = EPC_ERROR_CORRECTION
        boost_error = False
        if micro:
            violations.append(
                FieldViolation("micro", "EPC payment codes cannot be Micro QR")
            )

    colors: dict[str, str] = {}
    for name, default in (
        ("dark_color", DEFAULT_DARK_COLOR),
        ("light_color", DEFAULT_LIGHT_COLOR),
    ):
        raw: str = getattr(style, name)
        color = _normalise_color(raw) if raw else default
        if color is None:
            violations.append(
                FieldViolation(
                    name, f"{raw[:40]!r} is not a colour; use {_COLOR_FORMS}"
                )
            )
        else:
            colors[name] = color
    dark = colors.get("dark_color")
    light = colors.get("light_color")
    if dark is not None and _is_transparent(dark):
        violations.append(
            FieldViolation("dark_color", "dark modules must not be fully transparent")
        )
        dark = None  # already refused; nothing to compare
    if dark is not None and dark == light:
        violations.append(FieldViolation("light_color", "must differ from dark_color"))
    elif dark is not None and light is not None:
        ratio = contrast(dark, light)
        if ratio < MIN_CONTRAST:
            violations.append(
                FieldViolation(
                    "light_color",
                    f"contrast with dark_color is {ratio:.2f}:1; a code must "
                    f"have at least {MIN_CONTRAST:g}:1 to scan reliably",
                )
            )

    border: int | None = None
    if style.HasField("border"):
        border = int(style.border)
        if not MIN_BORDER <= border <= MAX_BORDER:
            violations.append(
                FieldViolation(
                    "border",
                    f"must be {MIN_BORDER} to {MAX_BORDER} modules, got {border}",
                )
            )
    if violations:
        raise InvalidArgument(violations)
    return Style(
        error_correction=level,
        micro=micro,
        dark_color=colors["dark_color"],
        light_color=colors["light_color"],
        border=border,
        boost_error=boost_error,
    )


def _mode_of(text: str) -> str:
    """The mode ``make_symbol`` has segno use for ``text``."""
    if not text.isascii():
        return "byte"
    if text.isdigit():
        return "numeric"
    if _ALPHANUMERIC.fullmatch(text):
        return "alphanumeric"
    return "byte"


def _too_long(text: str, level: str) -> ContentTooLong:
    mode = _mode_of(text)
    count = len(text.encode("utf-8")) if mode == "byte" else len(text)
    unit = _UNITS[mode]
    capacity = _MAX_CAPACITY[mode][level]
    in_mode = "" if mode == "byte" else f" in {mode} mode"
    return ContentTooLong(
        [
            FieldViolation(
                "",
                f"content is {count} {unit}; the largest QR symbol at error "
                f"correction {level} holds {capacity} {unit}{in_mode}",
            )
        ]
    )


def make_symbol(text: str, style: Style) -> Symbol:
    """Build the smallest symbol for ``text`` in ``style``.

    ASCII text lets segno pick numeric, alphanumeric or byte mode; any other
    text is written as UTF-8 in byte mode without an ECI header (segno would
    otherwise choose Latin-1 or Shift_JIS, or mistake UTF-8 bytes for Kanji).
    The level is raised as far as the same symbol allows unless
    ``style.boost_error`` is False. Micro QR is tried only when
    ``style.micro``; a text too long for it gets a regular symbol.

    Raises:
        InvalidArgument: on field "" when ``text`` is empty.
        ContentTooLong: on field "" when no symbol holds ``text``; the message
            states the limit at the style's error correction level.
    """
    if not text:
        raise InvalidArgument.field("", "the content is empty")
    ascii_only = text.isascii()
    try:
        qr = segno.make(
            text,
            error=style.error_correction,
            mode=None if ascii_only else "byte",
            encoding=None if ascii_only else "utf-8",
            eci=False,
            micro=None if style.micro else False,
            boost_error=style.boost_error,
        )
    except segno.DataOverflowError:
        raise _too_long(text, style.error_correction) from None
    width, _ = qr.symbol_size(scale=1, border=0)
    return Symbol(
        encoded_text=text,
        version=str(qr.version),
        error_correction=qr.error or None,
        mode=str(qr.mode),
        size=int(width),
        is_micro=bool(qr.is_micro),
        qr=qr,
    )


def _check_scale(scale: int) -> None:
    if isinstance(scale, bool) or not MIN_SCALE <= scale <= MAX_SCALE:
        raise InvalidArgument.field(
            "scale", f"must be {MIN_SCALE} to {MAX_SCALE}, got {scale}"
        )


def _check_png_side(symbol: Symbol, scale: int, border: int | None) -> None:
    """Refuse a PNG wider than MAX_PNG_SIDE pixels: raster work and memory
    grow with the square of the side."""
    quiet = border if border is not None else (2 if symbol.is_micro else 4)
    modules = symbol.size + 2 * quiet
    side = modules * scale
    if side > MAX_PNG_SIDE:
        raise InvalidArgument.field(
            "scale",
            f"would make a PNG {side} pixels wide; the most is {MAX_PNG_SIDE}, "
            f"so at most scale {max(1, MAX_PNG_SIDE // modules)} for this code "
            "(SVG, PDF and EPS have no such limit)",
        )


def _check_border(border: int | None) -> None:
    if border is not None and (
        isinstance(border, bool) or not MIN_BORDER <= border <= MAX_BORDER
    ):
        raise InvalidArgument.field(
            "border", f"must be {MIN_BORDER} to {MAX_BORDER} modules, got {border}"
        )


def _on_white(color: str) -> str:
    """Flatten a translucent colour onto white paper, for PDF and EPS."""
    if len(color) != 9:
        return color
    alpha = int(color[7:9], 16) / 255
    channels = (int(color[i : i + 2], 16) for i in (1, 3, 5))
    return "#" + "".join(
        f"{round(value * alpha + 255 * (1 - alpha)):02x}" for value in channels
    )


def _is_transparent(color: str) -> bool:
    return len(color) == 9 and color.endswith("00")


def render(
    symbol: Symbol,
    style: Style,
    fmt: ImageFormat,
    *,
    scale: int,
    border: int | None,
) -> bytes:
    """Draw ``symbol`` in ``fmt`` with the colours of ``style``.

    ``scale`` is the size of a module in pixels (points for PDF and EPS; TXT
    ignores it); ``border`` is the quiet zone in modules, None meaning
    ``style.border`` and then segno's default (4, or 2 for Micro QR). A fully
    transparent light colour draws no background; PDF and EPS cannot draw
    translucency, so their colours are flattened onto white. The output holds
    no timestamp: the same input always gives the same bytes.

    Raises:
        InvalidArgument: on field "scale" outside 1..50, or making a PNG
            wider than MAX_PNG_SIDE pixels; on field "border" outside 0..32.
    """
    _check_scale(scale)
    if border is None:
        border = style.border
    _check_border(border)
    if fmt is ImageFormat.PNG:
        _check_png_side(symbol, scale, border)
    qr = symbol.qr
    if fmt is ImageFormat.TXT:
        text_out = io.StringIO()
        qr.save(text_out, kind="txt", border=border)
        return text_out.getvalue().encode("ascii")
    dark = style.dark_color
    light: str | None = style.light_color
    if light is not None and _is_transparent(light):
        light = None
    if fmt in (ImageFormat.PDF, ImageFormat.EPS):
        dark = _on_white(dark)
        light = _on_white(light) if light is not None else None
    if fmt is ImageFormat.EPS:
        text_out = io.StringIO()
        qr.save(
            text_out, kind="eps", scale=scale, border=border, dark=dark, light=light
        )
        return _EPS_CREATION_DATE.sub("", text_out.getvalue(), count=1).encode("ascii")
    out = io.BytesIO()
    qr.save(out, kind=fmt.value, scale=scale, border=border, dark=dark, light=light)
    data = out.getvalue()
    if fmt is ImageFormat.PDF:
        # Blank the date out with spaces so the cross-reference offsets hold.
        data = _PDF_CREATION_DATE.sub(lambda m: b" " * len(m.group()), data, count=1)
    return data


def draw(
    text: str, style: Style, fmt: ImageFormat, scale: int, border: int | None
) -> tuple[Symbol, bytes]:
    """Build the symbol for ``text`` and render it: what a cache miss costs.

    Raises:
        InvalidArgument: on a bad scale or border (see ``render``).
        ContentTooLong: when ``text`` fits no symbol (see ``make_symbol``).
    """
    symbol = make_symbol(text, style)
    return symbol, render(symbol, style, fmt, scale=scale, border=border)


@dataclass(frozen=True)
class _Entry:
    """A cached render; its length is the memory it is charged for."""

    symbol: Symbol
    data: bytes

    def __len__(self) -> int:
        # The image, plus the module matrix and text the symbol keeps alive.
        return (
            len(self.data)
            + self.symbol.size * self.symbol.size
            + len(self.symbol.encoded_text.encode("utf-8"))
        )


_Key = tuple[str, Style, ImageFormat, int, int | None]


class RenderCache:
    """A thread-safe LRU cache of rendered images, bounded by total bytes.

    Entries are keyed by everything that shapes the image: the encoded text,
    the style, the format, the scale and the border. An entry larger than the
    whole bound is returned but not kept.
    """

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        """Create an empty cache that holds at most ``max_bytes``.

        Raises:
            ValueError: when ``max_bytes`` is not positive.
        """
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self._cache: LRUCache[_Key, _Entry] = LRUCache(maxsize=max_bytes, getsizeof=len)
        self._lock = threading.Lock()
        self._hits = 0
        self._misses = 0

    @property
    def hits(self) -> int:
        """How many calls were answered from the cache."""
        return self._hits

    @property
    def misses(self) -> int:
        """How many calls had to build and draw the symbol."""
        return self._misses

    @property
    def max_bytes(self) -> int:
        """The bound on the bytes the cache holds."""
        return int(self._cache.maxsize)

    @property
    def current_bytes(self) -> int:
        """The bytes the cache holds now."""
        with self._lock:
            return int(self._cache.currsize)

    def __len__(self) -> int:
        with self._lock:
            return len(self._cache)

    def clear(self) -> None:
        """Drop every entry; the counters stay."""
        with self._lock:
            self._cache.clear()

    def lookup(
        self,
        text: str,
        style: Style,
        fmt: ImageFormat,
        scale: int = DEFAULT_SCALE,
        border: int | None = None,
    ) -> tuple[Symbol, bytes] | None:
        """The cached symbol and image, or ``None``; counted as a hit or miss.

        Cheap enough for the event loop: it only takes the lock and reads.
        """
        key: _Key = (text, style, fmt, scale, border)
        with self._lock:
            entry = self._cache.get(key)
            if entry is None:
                self._misses += 1
                return None
            self._hits += 1
            return entry.symbol, entry.data

    def render_cached(
        self,
        text: str,
        style: Style,
        fmt: ImageFormat,
        scale: int = DEFAULT_SCALE,
        border: int | None = None,
    ) -> tuple[Symbol, bytes]:
        """Return the symbol for ``text`` and its image, from the cache if any.

        The bytes are identical to ``render(make_symbol(text, style), style,
        fmt, scale=scale, border=border)``.

        Raises:
            InvalidArgument: on a bad scale or border (see ``render``).
            ContentTooLong: when ``text`` fits no symbol (see ``make_symbol``).
        """
        _check_scale(scale)
        _check_border(border)
        cached = self.lookup(text, style, fmt, scale, border)
        if cached is not None:
            return cached
        symbol, data = draw(text, style, fmt, scale, border)
        self.store(text, style, fmt, scale, border, symbol=symbol, data=data)
        return symbol, data

    def store(
        self,
        text: str,
        style: Style,
        fmt: ImageFormat,
        scale: int,
        border: int | None,
        *,
        symbol: Symbol,
        data: bytes,
    ) -> None:
        """Keep an image drawn elsewhere (by ``draw``) for later lookups."""
        entry = _Entry(symbol, data)
        if len(entry) <= self._cache.maxsize:
            with self._lock:
                self._cache[(text, style, fmt, scale, border)] = entry
