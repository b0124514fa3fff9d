"""What a QR code says: validate a ``QrContent`` and build the exact symbol text.

Pure functions: no gRPC, no database, no I/O.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal
from urllib.parse import quote, urlsplit

import segno.helpers
from schwifty import BIC, IBAN
from schwifty import exceptions as schwifty_errors

from qrsys_grpc.errors import ContentTooLong, InvalidArgument
from qrsys_grpc.text import check_no_controls
from qrsys_grpc.v1 import qr_code_pb2

__all__ = [
    "CONTENT_KINDS",
    "EPC_ERROR_CORRECTION",
    "EPC_MAX_PAYLOAD_BYTES",
    "MAX_TEXT_CHARS",
    "MAX_URL_CHARS",
    "content_kind",
    "encode_content",
]

CONTENT_KINDS = ("text", "url", "wifi", "contact", "email", "sms", "geo", "epc")

MAX_TEXT_CHARS = 4096
MAX_URL_CHARS = 4096
WIFI_MAX_SSID_BYTES = 32
WPA_MIN_PASSWORD_BYTES = 8
WPA_MAX_PASSWORD_BYTES = 63
WEB_SCHEMES = frozenset(("http", "https"))
"""Schemes whose URLs must name a host for a phone to open them."""
WEP_KEY_CHARS = (5, 13, 16, 29)
"""The lengths of a WEP key typed as text (40, 104, 128 and 232 bits)."""
WEP_KEY_HEX_DIGITS = (10, 26, 32, 58)
"""The same keys written in hex digits."""
_HEX = re.compile(r"[0-9A-Fa-f]+")
MAX_PHONE_CHARS = 32
MAX_EMAIL_CHARS = 254
EPC_MAX_NAME_CHARS = 70
EPC_MAX_TEXT_CHARS = 140
EPC_MAX_PAYLOAD_BYTES = 331
EPC_MIN_AMOUNT = Decimal("0.01")
EPC_MAX_AMOUNT = Decimal("999999999.99")
# EPC069-12 requires error correction level M for payment codes.
EPC_ERROR_CORRECTION = "M"

_NEWLINE = re.compile(r"\r\n|\r|\n")
_URL_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:.")
_PHONE = re.compile(r"\+?[0-9 ()\-.]*[0-9][0-9 ()\-.]*")
_EMAIL_ATOM = r"[^\s@<>()\[\],;:\"\\]"
_EMAIL = re.compile(
    rf"{_EMAIL_ATOM}{{1,64}}@(?:[^\s@<>()\[\],;:\"\\.]+\.)+[^\s@<>()\[\],;:\"\\.]{{2,}}"
)
_AMOUNT = re.compile(r"[0-9]+(?:\.[0-9]{1,2})?")

_WIFI_ESCAPE = str.maketrans({c: "\\" + c for c in '\\;,:"'})
_MECARD_ESCAPE = str.maketrans({c: "\\" + c for c in "\\;,:"})
_VCARD_ESCAPE = str.maketrans({"\\": "\\\\", ";": "\\;", ",": "\\,"})


def content_kind(content: qr_code_pb2.QrContent) -> str:
    """Return the name of the kind set in ``content``, e.g. ``"url"``.

    Raises:
        InvalidArgument: on field "" when no kind is set.
    """
    kind = content.WhichOneof("kind")
    if kind is None:
        raise InvalidArgument.field(
            "", "set exactly one kind of content: " + ", ".join(CONTENT_KINDS)
        )
    return str(kind)


def encode_content(content: qr_code_pb2.QrContent) -> str:
    """Validate ``content`` and return the exact text to put in the symbol.

    Field paths in errors are relative to ``content`` (``url``, ``wifi.ssid``,
    ``epc.iban``, ...); "" means the content as a whole.

    Raises:
        InvalidArgument: when no kind is set or a field is missing, malformed
            or out of range.
        ContentTooLong: when an EPC payment exceeds the 331 bytes the EPC
            standard allows.
    """
    kind = content_kind(content)
    if kind == "text":
        return _encode_text(content.text)
    if kind == "url":
        return _encode_url(content.url)
    if kind == "wifi":
        return _encode_wifi(content.wifi)
    if kind == "contact":
        return _encode_contact(content.contact)
    if kind == "email":
        return _encode_email(content.email)
    if kind == "sms":
        return _encode_sms(content.sms)
    if kind == "geo":
        return _encode_geo(content.geo)
    return _encode_epc(content.epc)


# -- shared checks ---------------------------------------------------------


def _check_chars(value: str, field: str, *, multiline: bool) -> None:
    """Reject control characters and text that is not valid Unicode."""
    check_no_controls(value, field, multiline=multiline)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidArgument.field(
            field, f"is not valid Unicode (lone surrogate at position {exc.start})"
        ) from None


def _required(value: str, field: str, *, multiline: bool = False) -> str:
    """Check a required single- or multi-line value; return it unchanged."""
    if not value:
        raise InvalidArgument.field(field, "is required")
    if not value.strip():
        raise InvalidArgument.field(field, "holds only spaces or line breaks")
    _check_chars(value, field, multiline=multiline)
    return value


def _optional(value: str, field: str, *, multiline: bool = False) -> str:
    """Check an optional value; return it unchanged ("" when absent)."""
    if value:
        _check_chars(value, field, multiline=multiline)
    return value


def _max_chars(value: str, field: str, limit: int) -> None:
    if len(value) > limit:
        raise InvalidArgument.field(
            field, f"must be at most {limit} characters, got {len(value)}"
        )


def _phone(value: str, field: str) -> str:
    """Validate a telephone number loosely; return it without outer spaces."""
    number = value.strip()
    if not number:
        raise InvalidArgument.field(field, "is required")
    if len(number) > MAX_PHONE_CHARS or not _PHONE.fullmatch(number):
        raise InvalidArgument.field(
            field,
            f"{value[:40]!r} is not a telephone number: use at most {MAX_PHONE_CHARS} "
            "digits, spaces and the characters + - ( ) . with + only first",
        )
    return number


def _email_address(value: str, field: str) -> str:
    """Validate an email address loosely; return it without outer spaces."""
    address = value.strip()
    if not address:
        raise InvalidArgument.field(field, "is required")
    _check_chars(address, field, multiline=False)
    if len(address) > MAX_EMAIL_CHARS or not _EMAIL.fullmatch(address):
        raise InvalidArgument.field(
            field, f"{value[:60]!r} is not an email address like name@example.com"
        )
    return address


# -- text and url ----------------------------------------------------------


def _encode_text(text: str) -> str:
    _required(text, "text", multiline=True)
    _max_chars(text, "text", MAX_TEXT_CHARS)
    return text


def _encode_url(url: str) -> str:
    if not url:
        raise InvalidArgument.field("url", "is required")
    _max_chars(url, "url", MAX_URL_CHARS)
    _check_chars(url, "url", multiline=False)
    if url != url.strip():
        raise InvalidArgument.field("url", "must not start or end with white space")
    if not _URL_SCHEME.match(url):
        raise InvalidArgument.field(
            "url", f"{url[:100]!r} has no scheme; write it like https://example.com"
        )
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError as exc:
        raise InvalidArgument.field(
            "url", f"{url[:100]!r} is not a URL: {exc}"
        ) from None
    if parts.scheme.lower() in WEB_SCHEMES and (
        not host or any(char.isspace() for char in parts.netloc)
    ):
        raise InvalidArgument.field(
            "url",
            f"{url[:100]!r} names no host; write it like https://example.com/menu",
        )
    return url


# -- wifi ------------------------------------------------------------------


def _encode_wifi(wifi: qr_code_pb2.WifiContent) -> str:
    """Build ``WIFI:T:<auth>;S:<ssid>;P:<password>;H:true;;``.

    segno's ``make_wifi_data`` is not used: it does not escape ``,`` and
    leaves out the closing ``;`` when the network is hidden.
    """
    ssid: str = wifi.ssid
    password: str = wifi.password
    if not ssid:
        raise InvalidArgument.field("wifi.ssid", "is required")
    _check_chars(ssid, "wifi.ssid", multiline=False)
    size = len(ssid.encode("utf-8"))
    if size > WIFI_MAX_SSID_BYTES:
        raise InvalidArgument.field(
            "wifi.ssid",
            f"must be at most {WIFI_MAX_SSID_BYTES} bytes in UTF-8, got {size}",
        )
    _optional(password, "wifi.password")
    security = int(wifi.security)
    if security == qr_code_pb2.WIFI_SECURITY_UNSPECIFIED:
        auth = "WPA" if password else "nopass"
    elif security == qr_code_pb2.WIFI_SECURITY_WPA:
        auth = "WPA"
    elif security == qr_code_pb2.WIFI_SECURITY_WEP:
        auth = "WEP"
    elif security == qr_code_pb2.WIFI_SECURITY_NONE:
        auth = "nopass"
    else:
        raise InvalidArgument.field(
            "wifi.security", f"unknown Wi-Fi security {security}"
        )
    if auth == "nopass" and password:
        raise InvalidArgument.field(
            "wifi.password", "an open network (security NONE) takes no password"
        )
    # A passphrase is bytes to the network (the key is derived from its
    # UTF-8 encoding), so its bounds count bytes, not characters.
    size = len(password.encode("utf-8"))
    if auth == "WPA" and not (WPA_MIN_PASSWORD_BYTES <= size <= WPA_MAX_PASSWORD_BYTES):
        raise InvalidArgument.field(
            "wifi.password",
            f"a WPA password has {WPA_MIN_PASSWORD_BYTES} to "
            f"{WPA_MAX_PASSWORD_BYTES} bytes in UTF-8, got {size}",
        )
    if auth == "WEP" and not password:
        raise InvalidArgument.field("wifi.password", "a WEP network needs a password")
    if auth == "WEP" and not (
        (password.isascii() and len(password) in WEP_KEY_CHARS)
        or (len(password) in WEP_KEY_HEX_DIGITS and _HEX.fullmatch(password))
    ):
        raise InvalidArgument.field(
            "wifi.password",
            f"a WEP key has 5, 13, 16 or 29 ASCII characters, or 10, 26, 32 or "
            f"58 hex digits, got {len(password)} characters",
        )
    parts = [f"WIFI:T:{auth};S:{ssid.translate(_WIFI_ESCAPE)};"]
    if auth != "nopass":
        parts.append(f"P:{password.translate(_WIFI_ESCAPE)};")
    if wifi.hidden:
        parts.append("H:true;")
    parts.append(";")
    return "".join(parts)


# -- contact ---------------------------------------------------------------


class _Contact:
    """The checked fields of a ``ContactContent``."""

    def __init__(self, contact: qr_code_pb2.ContactContent) -> None:
        self.name = _required(contact.name, "contact.name")
        self.phones = [
            _phone(phone, f"contact.phones[{index}]")
            for index, phone in enumerate(contact.phones)
        ]
        self.emails = [
            _email_address(email, f"contact.emails[{index}]")
            for index, email in enumerate(contact.emails)
        ]
        self.organization = _optional(contact.organization, "contact.organization")
        self.title = _optional(contact.title, "contact.title")
        self.url = _optional(contact.url, "contact.url")
        if any(char.isspace() for char in self.url):
            raise InvalidArgument.field("contact.url", "must not contain white space")
        self.address = _optional(contact.address, "contact.address")
        self.note = _optional(contact.note, "contact.note", multiline=True)


def _encode_contact(contact: qr_code_pb2.ContactContent) -> str:
    fmt = int(contact.format)
    if fmt not in (
        qr_code_pb2.CONTACT_FORMAT_UNSPECIFIED,
        qr_code_pb2.CONTACT_FORMAT_VCARD,
        qr_code_pb2.CONTACT_FORMAT_MECARD,
    ):
        raise InvalidArgument.field("contact.format", f"unknown contact format {fmt}")
    card = _Contact(contact)
    if fmt == qr_code_pb2.CONTACT_FORMAT_MECARD:
        return _mecard(card)
    return _vcard(card)


def _vcard_text(value: str) -> str:
    """Escape a vCard 3.0 text value (RFC 2426 section 4)."""
    return _NEWLINE.sub("\\\\n", value.translate(_VCARD_ESCAPE))


def _vcard(card: _Contact) -> str:
    """Build a vCard 3.0 with CRLF line ends, the last line included.

    segno's ``make_vcard_data`` is not used: it escapes neither ``\\`` nor
    line breaks and writes the ``N`` value unescaped.
    """
    name = _vcard_text(card.name)
    lines = ["BEGIN:VCARD", "VERSION:3.0", f"N:{name};;;;", f"FN:{name}"]
    if card.organization:
        lines.append(f"ORG:{_vcard_text(card.organization)}")
    if card.title:
        lines.append(f"TITLE:{_vcard_text(card.title)}")
    lines.extend(f"TEL:{phone}" for phone in card.phones)
    lines.extend(f"EMAIL:{email}" for email in card.emails)
    if card.url:
        lines.append(f"URL:{card.url}")
    if card.address:
        lines.append(f"ADR:;;{_vcard_text(card.address)};;;;")
    if card.note:
        lines.append(f"NOTE:{_vcard_text(card.note)}")
    lines.append("END:VCARD")
    return "".join(line + "\r\n" for line in lines)


def _mecard(card: _Contact) -> str:
    """Build ``MECARD:N:...;TEL:...;EMAIL:...;;`` (NTT DoCoMo MeCard).

    segno's ``make_mecard_data`` is not used: it writes the note as ``MEMO``
    where the MeCard specification and ZXing read ``NOTE``, does not escape
    ``,`` and has no organisation field.
    """
    if card.title:
        raise InvalidArgument.field(
            "contact.title", "MeCard has no job title field; use the VCARD format"
        )

    def field(key: str, value: str) -> str:
        return f"{key}:{value.translate(_MECARD_ESCAPE)};"

    parts = ["MECARD:", field("N", card.name)]
    parts.extend(field("TEL", phone) for phone in card.phones)
    parts.extend(field("EMAIL", email) for email in card.emails)
    if card.organization:
        parts.append(field("ORG", card.organization))
    if card.url:
        parts.append(field("URL", card.url))
    if card.address:
        parts.append(field("ADR", card.address))
    if card.note:
        parts.append(field("NOTE", card.note))
    parts.append(";")
    return "".join(parts)


# -- email and sms ---------------------------------------------------------


def _encode_email(email: qr_code_pb2.EmailContent) -> str:
    """Build an RFC 6068 ``mailto:`` URI.

    segno's ``make_make_email_data`` is not used: given a body without a
    subject it writes ``mailto:a@b.c&body=...`` (no ``?``), and it leaves
    ``/`` unencoded in header values.
    """
    address = _email_address(email.address, "email.address")
    subject = _optional(email.subject, "email.subject")
    body = _optional(email.body, "email.body", multiline=True)
    query = []
    if subject:
        query.append("subject=" + quote(subject, safe=""))
    if body:
        # RFC 6068 section 5: line breaks in a body are written as %0D%0A.
        query.append("body=" + quote(_NEWLINE.sub("\r\n", body), safe=""))
    uri = "mailto:" + quote(address, safe="@!$'*+=")
    if query:
        uri += "?" + "&".join(query)
    return uri


def _encode_sms(sms: qr_code_pb2.SmsContent) -> str:
    """Build ``SMSTO:<number>:<message>`` (segno has no helper for it)."""
    number = _phone(sms.number, "sms.number")
    message = _optional(sms.message, "sms.message", multiline=True)
    return f"SMSTO:{number}:{message}" if message else f"SMSTO:{number}"


# -- geo -------------------------------------------------------------------


def _coordinate(value: float, field: str, limit: int) -> float:
    if not math.isfinite(value):
        raise InvalidArgument.field(field, f"must be a finite number, got {value}")
    if not -limit <= value <= limit:
        raise InvalidArgument.field(
            field, f"must be between {-limit} and {limit} degrees, got {value}"
        )
    # segno prints 8 decimals; round first and add 0.0 so that tiny negative
    # values and -0.0 are written as "0" rather than "-0".
    return round(value, 8) + 0.0


def _encode_geo(geo: qr_code_pb2.GeoContent) -> str:
    """Build an RFC 5870 ``geo:<lat>,<lng>`` URI with segno's helper."""
    latitude = _coordinate(float(geo.latitude), "geo.latitude", 90)
    longitude = _coordinate(float(geo.longitude), "geo.longitude", 180)
    return segno.helpers.make_geo_data(latitude, longitude)


# -- epc -------------------------------------------------------------------


def _epc_amount(value: str) -> str:
    """Turn ``"12.50"`` into ``"EUR12.5"``; "" stays "" (payer fills it in)."""
    text = value.strip()
    if not text:
        return ""
    if not _AMOUNT.fullmatch(text):
        raise InvalidArgument.field(
            "epc.amount",
            f"{value[:40]!r} is not an amount in euros like 12.50 "
            "(digits, a point and at most 2 decimals)",
        )
    amount = Decimal(text)
    if not EPC_MIN_AMOUNT <= amount <= EPC_MAX_AMOUNT:
        raise InvalidArgument.field(
            "epc.amount",
            f"must be between {EPC_MIN_AMOUNT} and {EPC_MAX_AMOUNT} euros, got {text}",
        )
    return "EUR" + f"{amount:.2f}".rstrip("0").rstrip(".")


def _sepa_iban(value: str) -> str:
    """The IBAN of an account in the SEPA zone, compact and upper case.

    schwifty checks the country's length and structure and the ISO 13616
    check digits.

    Raises:
        InvalidArgument: on ``epc.iban``.
    """
    _check_chars(value, "epc.iban", multiline=False)
    if not value.strip():
        raise InvalidArgument.field("epc.iban", "is required")
    try:
        iban = IBAN(value)
    except schwifty_errors.InvalidChecksumDigits:
        raise InvalidArgument.field(
            "epc.iban", f"{value[:40]!r} has a wrong check sum (ISO 13616 mod 97)"
        ) from None
    except schwifty_errors.SchwiftyException as exc:
        raise InvalidArgument.field(
            "epc.iban", f"{value[:40]!r} is not an IBAN: {exc}"
        ) from None
    if not iban.in_sepa_zone:
        raise InvalidArgument.field(
            "epc.iban",
            f"an account in {iban.country_code} is outside the SEPA zone, which "
            "an EPC credit transfer needs",
        )
    return str(iban.compact)


def _bic(value: str) -> str:
    """An optional BIC, compact and upper case; "" when none is given.

    Raises:
        InvalidArgument: on ``epc.bic``.
    """
    _check_chars(value, "epc.bic", multiline=False)
    if not value.strip():
        return ""
    try:
        return str(BIC(value.strip()).compact)
    except schwifty_errors.SchwiftyException as exc:
        raise InvalidArgument.field(
            "epc.bic", f"{value[:20]!r} is not a BIC: {exc}"
        ) from None


def _encode_epc(epc: qr_code_pb2.EpcContent) -> str:
    """Build an EPC069-12 version 002 SEPA credit transfer in UTF-8.

    segno's ``make_epc_qr`` builder is not used: it refuses a transfer
    without remittance information, which EPC069-12 allows, does not check
    the IBAN checksum, and belongs to segno's private API.

    Raises:
        InvalidArgument: on a bad ``epc.*`` field.
        ContentTooLong: on field "" when the payload exceeds 331 bytes.
    """
    name = _required(epc.name, "epc.name")
    _max_chars(name, "epc.name", EPC_MAX_NAME_CHARS)
    iban = _sepa_iban(epc.iban)
    bic = _bic(epc.bic)
    amount = _epc_amount(epc.amount)
    text = _optional(epc.text, "epc.text")
    _max_chars(text, "epc.text", EPC_MAX_TEXT_CHARS)
    # Service tag, version, character set (1 = UTF-8), identification, BIC,
    # name, IBAN, amount, purpose, structured reference, unstructured text.
    fields = ["BCD", "002", "1", "SCT", bic, name, iban, amount, "", "", text]
    while not fields[-1]:
        fields.pop()
    payload = "\n".join(fields)
    size = len(payload.encode("utf-8"))
    if size > EPC_MAX_PAYLOAD_BYTES:
        raise ContentTooLong.field(
            "",
            f"the EPC payment is {size} bytes; the EPC standard allows at most "
            f"{EPC_MAX_PAYLOAD_BYTES} bytes",
        )
    return payload
