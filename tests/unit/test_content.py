"""Unit tests of qrsys_grpc.qr.content: validation and the text in the symbol."""

from __future__ import annotations

from typing import Any

import pytest
import segno.helpers

from qrsys_grpc.errors import ContentTooLong, InvalidArgument
from qrsys_grpc.qr.content import (
    EPC_ERROR_CORRECTION,
    content_kind,
    encode_content,
)
from qrsys_grpc.v1 import qr_code_pb2 as pb


def encode(**kind: Any) -> str:
    """Encode a QrContent built from one keyword, e.g. ``encode(url="...")``."""
    return encode_content(pb.QrContent(**kind))


def violation(error: InvalidArgument) -> tuple[str, str]:
    assert len(error.violations) == 1
    return error.violations[0].field, error.violations[0].description


def fails(field: str, **kind: Any) -> str:
    """Assert that encoding fails on exactly ``field``; return the message."""
    with pytest.raises(InvalidArgument) as caught:
        encode(**kind)
    path, description = violation(caught.value)
    assert path == field
    return description


class TestContentKind:
    @pytest.mark.parametrize(
        ("content", "kind"),
        [
            (pb.QrContent(text="hi"), "text"),
            (pb.QrContent(url="https://example.com"), "url"),
            (pb.QrContent(wifi=pb.WifiContent(ssid="x")), "wifi"),
            (pb.QrContent(contact=pb.ContactContent(name="x")), "contact"),
            (pb.QrContent(email=pb.EmailContent()), "email"),
            (pb.QrContent(sms=pb.SmsContent()), "sms"),
            (pb.QrContent(geo=pb.GeoContent()), "geo"),
            (pb.QrContent(epc=pb.EpcContent()), "epc"),
        ],
        ids=["text", "url", "wifi", "contact", "email", "sms", "geo", "epc"],
    )
    def test_returns_the_set_kind(self, content: pb.QrContent, kind: str) -> None:
        assert content_kind(content) == kind

    def test_empty_submessage_still_counts_as_set(self) -> None:
        content = pb.QrContent()
        content.geo.SetInParent()
        assert content_kind(content) == "geo"

    def test_raises_on_the_whole_content_when_nothing_is_set(self) -> None:
        with pytest.raises(InvalidArgument) as caught:
            content_kind(pb.QrContent())
        field, description = violation(caught.value)
        assert field == ""
        assert "text, url, wifi, contact, email, sms, geo, epc" in description

    def test_encode_raises_the_same_when_nothing_is_set(self) -> None:
        with pytest.raises(InvalidArgument) as caught:
            encode_content(pb.QrContent())
        assert violation(caught.value)[0] == ""


class TestText:
    @pytest.mark.parametrize(
        "text",
        [
            "hello",
            "café",
            "Привет, мир",
            "Pizza 🍕 — 12,50 €",
            "日本語のテキスト",
            "tab\there\nnew line\r\nand CRLF",
            " leading and trailing spaces ",
        ],
        ids=[
            "ascii",
            "latin1",
            "cyrillic",
            "emoji",
            "japanese",
            "whitespace",
            "spaces",
        ],
    )
    def test_returns_the_text_unchanged(self, text: str) -> None:
        assert encode(text=text) == text

    def test_accepts_4096_characters(self) -> None:
        assert encode(text="é" * 4096) == "é" * 4096

    def test_rejects_4097_characters(self) -> None:
        assert "at most 4096" in fails("text", text="a" * 4097)

    @pytest.mark.parametrize(
        ("text", "words"),
        [
            ("", "is required"),
            ("   ", "holds only spaces or line breaks"),
            ("\n", "holds only spaces or line breaks"),
        ],
        ids=["empty", "spaces", "newline"],
    )
    def test_rejects_blank_text(self, text: str, words: str) -> None:
        assert fails("text", text=text) == words

    @pytest.mark.parametrize(
        ("text", "code"),
        [("a\x00b", "U+0000"), ("\x1b[31m", "U+001B"), ("x\x7f", "U+007F")],
        ids=["nul", "escape", "delete"],
    )
    def test_rejects_control_characters(self, text: str, code: str) -> None:
        message = fails("text", text=text)
        assert "control characters" in message
        assert code in message


class TestUrl:
    @pytest.mark.parametrize(
        "url",
        [
            "https://example.com",
            "http://example.com/a?b=c#d",
            "https://bücher.example/straße",
            "mailto:someone@example.com",
            "tel:+15551234",
            "myapp://open/item/7",
        ],
        ids=["https", "query", "unicode", "mailto", "tel", "custom-scheme"],
    )
    def test_returns_the_url_unchanged(self, url: str) -> None:
        assert encode(url=url) == url

    def test_accepts_4096_characters(self) -> None:
        url = "https://example.com/" + "a" * (4096 - 20)
        assert encode(url=url) == url

    def test_rejects_4097_characters(self) -> None:
        url = "https://example.com/" + "a" * (4097 - 20)
        assert "at most 4096" in fails("url", url=url)

    def test_rejects_an_empty_url(self) -> None:
        assert fails("url", url="") == "is required"

    @pytest.mark.parametrize(
        "url",
        ["example.com", "www.example.com/page", "//example.com", "1http://x", "https:"],
        ids=["bare-host", "path", "scheme-relative", "digit-first", "scheme-only"],
    )
    def test_rejects_a_url_without_scheme(self, url: str) -> None:
        assert "has no scheme" in fails("url", url=url)

    @pytest.mark.parametrize(
        "url",
        ["https://a\x00b", "https://a\nb", "https://a\tb"],
        ids=["nul", "newline", "tab"],
    )
    def test_rejects_control_characters(self, url: str) -> None:
        assert "control characters" in fails("url", url=url)

    def test_rejects_surrounding_white_space(self) -> None:
        assert "white space" in fails("url", url=" https://example.com")

    @pytest.mark.parametrize(
        "url",
        ["https://", "https:///path", "https://exa mple.com", "http://:80/menu"],
        ids=["nothing", "empty-host", "space-in-host", "port-only"],
    )
    def test_rejects_a_web_url_without_a_host(self, url: str) -> None:
        assert "names no host" in fails("url", url=url)

    def test_rejects_a_url_python_cannot_split(self) -> None:
        assert "is not a URL" in fails("url", url="https://[::1/menu")

    def test_a_space_in_a_path_is_left_to_the_reader(self) -> None:
        url = "https://menu.example/pizza margherita"
        assert encode(url=url) == url


def wifi(**fields: Any) -> str:
    return encode(wifi=pb.WifiContent(**fields))


class TestWifi:
    @pytest.mark.parametrize(
        ("fields", "expected"),
        [
            (
                {"ssid": "mynetwork", "password": "mypass123"},
                "WIFI:T:WPA;S:mynetwork;P:mypass123;;",
            ),
            (
                {"ssid": "mynetwork", "password": "mypass123", "security": 1},
                "WIFI:T:WPA;S:mynetwork;P:mypass123;;",
            ),
            (
                {"ssid": "home", "password": "mypass123", "hidden": True},
                "WIFI:T:WPA;S:home;P:mypass123;H:true;;",
            ),
            ({"ssid": "Cafe Free"}, "WIFI:T:nopass;S:Cafe Free;;"),
            ({"ssid": "Cafe", "security": 3}, "WIFI:T:nopass;S:Cafe;;"),
            (
                {"ssid": "Cafe", "security": 3, "hidden": True},
                "WIFI:T:nopass;S:Cafe;H:true;;",
            ),
            (
                {"ssid": "old", "password": "12345", "security": 2},
                "WIFI:T:WEP;S:old;P:12345;;",
            ),
            (
                {"ssid": 'a\\b;c,d:e"f', "password": 'p;a,s:s"w\\d'},
                'WIFI:T:WPA;S:a\\\\b\\;c\\,d\\:e\\"f;P:p\\;a\\,s\\:s\\"w\\\\d;;',
            ),
            (
                {"ssid": "Café 📶", "password": "пароль123"},
                "WIFI:T:WPA;S:Café 📶;P:пароль123;;",
            ),
        ],
        ids=[
            "wpa-by-default",
            "wpa",
            "hidden",
            "open-by-default",
            "open",
            "open-hidden",
            "wep",
            "escaping",
            "unicode",
        ],
    )
    def test_builds_the_wifi_syntax(
        self, fields: dict[str, Any], expected: str
    ) -> None:
        assert wifi(**fields) == expected

    def test_accepts_an_ssid_of_32_utf8_bytes(self) -> None:
        ssid = "€" * 10 + "ab"  # 30 + 2 bytes
        assert wifi(ssid=ssid).startswith(f"WIFI:T:nopass;S:{ssid};")

    def test_rejects_an_ssid_of_33_utf8_bytes(self) -> None:
        message = fails("wifi.ssid", wifi=pb.WifiContent(ssid="€" * 11))
        assert "at most 32 bytes" in message
        assert "33" in message

    @pytest.mark.parametrize(
        ("fields", "field", "words"),
        [
            ({}, "wifi.ssid", "is required"),
            ({"ssid": "a\nb"}, "wifi.ssid", "control characters"),
            (
                {"ssid": "x", "password": "secret12", "security": 3},
                "wifi.password",
                "no password",
            ),
            ({"ssid": "x", "password": "1234567"}, "wifi.password", "8 to 63"),
            ({"ssid": "x", "password": "a" * 64}, "wifi.password", "8 to 63"),
            ({"ssid": "x", "security": 1}, "wifi.password", "8 to 63"),
            ({"ssid": "x", "security": 2}, "wifi.password", "needs a password"),
            ({"ssid": "x", "security": 99}, "wifi.security", "unknown"),
        ],
        ids=[
            "no-ssid",
            "ssid-control",
            "open-with-password",
            "wpa-7-chars",
            "wpa-64-chars",
            "wpa-no-password",
            "wep-no-password",
            "unknown-security",
        ],
    )
    def test_rejects_bad_fields(
        self, fields: dict[str, Any], field: str, words: str
    ) -> None:
        assert words in fails(field, wifi=pb.WifiContent(**fields))

    @pytest.mark.parametrize(
        ("password", "size"),
        [("é" * 32, 64), ("😀" * 16, 64), ("é" * 3 + "a", 7)],
        ids=["64-bytes-of-accents", "64-bytes-of-emoji", "7-bytes"],
    )
    def test_wpa_bounds_count_bytes(self, password: str, size: int) -> None:
        assert f"got {size}" in fails(
            "wifi.password", wifi=pb.WifiContent(ssid="x", password=password)
        )

    def test_accepts_a_wpa_password_of_63_bytes_in_fewer_characters(self) -> None:
        password = "é" * 31 + "a"
        assert wifi(ssid="x", password=password) == f"WIFI:T:WPA;S:x;P:{password};;"

    @pytest.mark.parametrize("length", [8, 63], ids=["8", "63"])
    def test_accepts_wpa_passwords_at_the_bounds(self, length: int) -> None:
        assert (
            wifi(ssid="x", password="p" * length)
            == f"WIFI:T:WPA;S:x;P:{'p' * length};;"
        )

    @pytest.mark.parametrize(
        "key",
        ["12345", "a" * 13, "b" * 16, "c" * 29, "0a1B2c3D4e", "f" * 26, "0" * 58],
        ids=["40-bit", "104-bit", "128-bit", "232-bit", "hex-10", "hex-26", "hex-58"],
    )
    def test_accepts_wep_keys_of_every_size(self, key: str) -> None:
        assert wifi(ssid="old", password=key, security=pb.WIFI_SECURITY_WEP) == (
            f"WIFI:T:WEP;S:old;P:{key};;"
        )

    @pytest.mark.parametrize(
        "key",
        ["abc", "123456", "g" * 10, "z" * 26, "1" * 63, "ééééé", "😀" * 5],
        ids=["3", "6", "10-not-hex", "26-not-hex", "63", "accents", "emoji"],
    )
    def test_rejects_a_wep_key_no_network_can_have(self, key: str) -> None:
        words = fails(
            "wifi.password",
            wifi=pb.WifiContent(
                ssid="old", password=key, security=pb.WIFI_SECURITY_WEP
            ),
        )
        assert "a WEP key has" in words

    def test_segno_helper_is_not_used_because_it_misses_comma_and_final_semicolon(
        self,
    ) -> None:
        helper = segno.helpers.make_wifi_data("a,b", "secret12", "WPA", True)
        assert helper == "WIFI:T:WPA;S:a,b;P:secret12;H:true;"  # "," raw, one ";"
        ours = wifi(ssid="a,b", password="secret12", hidden=True)
        assert ours == "WIFI:T:WPA;S:a\\,b;P:secret12;H:true;;"


def contact(**fields: Any) -> str:
    return encode(contact=pb.ContactContent(**fields))


FULL_CONTACT: dict[str, Any] = {
    "name": "Doe, John; Jr.",
    "phones": ["+1 (555) 123-4567", "030 1234.56"],
    "emails": ["john@example.com", "j.doe+qr@example.org"],
    "organization": "ACME, Inc.",
    "title": "Head of R&D",
    "url": "https://example.com/~john",
    "address": "Main St 1; Springfield",
    "note": "Back\\slash\nnext line\r\nlast line",
}


class TestVcard:
    def test_builds_a_full_vcard_3_with_crlf_and_escaping(self) -> None:
        assert contact(**FULL_CONTACT) == (
            "BEGIN:VCARD\r\n"
            "VERSION:3.0\r\n"
            "N:Doe\\, John\\; Jr.;;;;\r\n"
            "FN:Doe\\, John\\; Jr.\r\n"
            "ORG:ACME\\, Inc.\r\n"
            "TITLE:Head of R&D\r\n"
            "TEL:+1 (555) 123-4567\r\n"
            "TEL:030 1234.56\r\n"
            "EMAIL:john@example.com\r\n"
            "EMAIL:j.doe+qr@example.org\r\n"
            "URL:https://example.com/~john\r\n"
            "ADR:;;Main St 1\\; Springfield;;;;\r\n"
            "NOTE:Back\\\\slash\\nnext line\\nlast line\r\n"
            "END:VCARD\r\n"
        )

    @pytest.mark.parametrize("fmt", [0, 1], ids=["unspecified", "vcard"])
    def test_builds_a_minimal_vcard(self, fmt: int) -> None:
        assert contact(name="Jane", format=fmt) == (
            "BEGIN:VCARD\r\nVERSION:3.0\r\nN:Jane;;;;\r\nFN:Jane\r\nEND:VCARD\r\n"
        )

    def test_keeps_unicode(self) -> None:
        assert "FN:Jürgen Müller 🙂\r\n" in contact(name="Jürgen Müller 🙂")

    def test_strips_spaces_around_phones_and_emails(self) -> None:
        text = contact(name="J", phones=[" +1 555 "], emails=[" j@example.com "])
        assert "TEL:+1 555\r\n" in text
        assert "EMAIL:j@example.com\r\n" in text

    @pytest.mark.parametrize(
        ("fields", "field", "words"),
        [
            ({}, "contact.name", "is required"),
            ({"name": "  "}, "contact.name", "holds only spaces"),
            ({"name": "a\nb"}, "contact.name", "control characters"),
            (
                {"name": "J", "phones": ["+1 555", "call me"]},
                "contact.phones[1]",
                "telephone",
            ),
            ({"name": "J", "phones": ["555+1"]}, "contact.phones[0]", "telephone"),
            ({"name": "J", "phones": ["--"]}, "contact.phones[0]", "telephone"),
            ({"name": "J", "phones": [""]}, "contact.phones[0]", "is required"),
            ({"name": "J", "phones": ["1" * 33]}, "contact.phones[0]", "at most 32"),
            ({"name": "J", "emails": ["john"]}, "contact.emails[0]", "email address"),
            ({"name": "J", "emails": ["a@b"]}, "contact.emails[0]", "email address"),
            (
                {"name": "J", "emails": ["a b@c.de"]},
                "contact.emails[0]",
                "email address",
            ),
            (
                {"name": "J", "emails": ["a@b.de", "x;y@b.de"]},
                "contact.emails[1]",
                "email",
            ),
            ({"name": "J", "emails": ["a\x00b@c.de"]}, "contact.emails[0]", "control"),
            ({"name": "J", "url": "https://a b"}, "contact.url", "white space"),
            ({"name": "J", "address": "a\nb"}, "contact.address", "control characters"),
            ({"name": "J", "note": "a\x00"}, "contact.note", "control characters"),
            ({"name": "J", "format": 7}, "contact.format", "unknown"),
        ],
        ids=[
            "no-name",
            "blank-name",
            "newline-in-name",
            "words-as-phone",
            "plus-not-first",
            "phone-without-digits",
            "empty-phone",
            "long-phone",
            "email-without-at",
            "email-without-dot",
            "email-with-space",
            "email-with-semicolon",
            "email-with-nul",
            "url-with-space",
            "newline-in-address",
            "nul-in-note",
            "unknown-format",
        ],
    )
    def test_rejects_bad_fields(
        self, fields: dict[str, Any], field: str, words: str
    ) -> None:
        assert words in fails(field, contact=pb.ContactContent(**fields))

    def test_segno_helper_is_not_used_because_it_escapes_too_little(self) -> None:
        helper = segno.helpers.make_vcard_data("Doe;John", "A\\B", memo="l1\nl2")
        # Backslash and newline stay raw: the NOTE line break ends the line.
        assert "FN:A\\B\r\n" in helper
        assert "NOTE:l1\nl2\r\n" in helper
        ours = contact(name="A\\B", note="l1\nl2")
        assert "FN:A\\\\B\r\n" in ours
        assert "NOTE:l1\\nl2\r\n" in ours


class TestMecard:
    def test_builds_a_full_mecard_with_escaping(self) -> None:
        fields = dict(FULL_CONTACT, title="", format=pb.CONTACT_FORMAT_MECARD)
        assert contact(**fields) == (
            "MECARD:N:Doe\\, John\\; Jr.;"
            "TEL:+1 (555) 123-4567;TEL:030 1234.56;"
            "EMAIL:john@example.com;EMAIL:j.doe+qr@example.org;"
            "ORG:ACME\\, Inc.;"
            "URL:https\\://example.com/~john;"
            "ADR:Main St 1\\; Springfield;"
            "NOTE:Back\\\\slash\nnext line\r\nlast line;;"
        )

    def test_builds_a_minimal_mecard(self) -> None:
        assert contact(name="Jane", format=2) == "MECARD:N:Jane;;"

    def test_builds_the_docomo_example(self) -> None:
        text = contact(
            name="Sean Owen",
            phones=["+12125551212"],
            emails=["srowen@example.com"],
            format=2,
        )
        assert text == "MECARD:N:Sean Owen;TEL:+12125551212;EMAIL:srowen@example.com;;"

    def test_rejects_a_title_mecard_cannot_hold(self) -> None:
        content = pb.ContactContent(name="J", title="CEO", format=2)
        assert "use the VCARD format" in fails("contact.title", contact=content)

    def test_segno_helper_is_not_used_because_of_memo_and_commas(self) -> None:
        helper = segno.helpers.make_mecard_data("Doe, John", memo="hi")
        # MeCard and ZXing read NOTE, not MEMO; the comma splits the name.
        assert helper == "MECARD:N:Doe, John;MEMO:hi;;"
        assert contact(name="Doe, John", note="hi", format=2) == (
            "MECARD:N:Doe\\, John;NOTE:hi;;"
        )


def email(**fields: Any) -> str:
    return encode(email=pb.EmailContent(**fields))


class TestEmail:
    @pytest.mark.parametrize(
        ("fields", "expected"),
        [
            ({"address": "chris@example.com"}, "mailto:chris@example.com"),
            (
                {"address": "infobot@example.com", "subject": "current-issue"},
                "mailto:infobot@example.com?subject=current-issue",
            ),
            (
                {"address": "infobot@example.com", "body": "send current-issue"},
                "mailto:infobot@example.com?body=send%20current-issue",
            ),
            (
                {"address": "list@example.org", "subject": "a/b?c&d=e", "body": "x"},
                "mailto:list@example.org?subject=a%2Fb%3Fc%26d%3De&body=x",
            ),
            (
                {"address": "a@example.com", "body": "line 1\nline 2\r\nline 3"},
                "mailto:a@example.com?body=line%201%0D%0Aline%202%0D%0Aline%203",
            ),
            (
                {"address": "a@example.com", "subject": "Grüße €"},
                "mailto:a@example.com?subject=Gr%C3%BC%C3%9Fe%20%E2%82%AC",
            ),
            ({"address": "john+tag@example.com"}, "mailto:john+tag@example.com"),
            ({"address": " a@example.com "}, "mailto:a@example.com"),
        ],
        ids=[
            "address",
            "subject",
            "body",
            "reserved",
            "newlines-crlf",
            "utf8",
            "plus",
            "outer-spaces",
        ],
    )
    def test_builds_a_mailto_uri(self, fields: dict[str, Any], expected: str) -> None:
        assert email(**fields) == expected

    @pytest.mark.parametrize(
        ("fields", "field", "words"),
        [
            ({}, "email.address", "is required"),
            ({"address": "not-an-address"}, "email.address", "email address"),
            ({"address": "a@b.c", "subject": "x"}, "email.address", "email address"),
            ({"address": "a@b.de", "subject": "a\nb"}, "email.subject", "control"),
            ({"address": "a@b.de", "body": "a\x00"}, "email.body", "control"),
        ],
        ids=["missing", "malformed", "one-letter-tld", "newline-subject", "nul-body"],
    )
    def test_rejects_bad_fields(
        self, fields: dict[str, Any], field: str, words: str
    ) -> None:
        assert words in fails(field, email=pb.EmailContent(**fields))

    def test_segno_helper_is_not_used_because_body_alone_loses_the_question_mark(
        self,
    ) -> None:
        helper = segno.helpers.make_make_email_data("a@example.com", body="hi")
        assert helper == "mailto:a@example.com&body=hi"
        assert (
            email(address="a@example.com", body="hi") == "mailto:a@example.com?body=hi"
        )


def sms(**fields: Any) -> str:
    return encode(sms=pb.SmsContent(**fields))


class TestSms:
    @pytest.mark.parametrize(
        ("fields", "expected"),
        [
            ({"number": "+15551234567", "message": "Hi"}, "SMSTO:+15551234567:Hi"),
            ({"number": "+1 (555) 123-4567"}, "SMSTO:+1 (555) 123-4567"),
            ({"number": "12345", "message": "a: b\nc"}, "SMSTO:12345:a: b\nc"),
            ({"number": " 112 ", "message": "Привет 👋"}, "SMSTO:112:Привет 👋"),
        ],
        ids=["number-and-message", "number-only", "colon-and-newline", "unicode"],
    )
    def test_builds_smsto(self, fields: dict[str, Any], expected: str) -> None:
        assert sms(**fields) == expected

    @pytest.mark.parametrize(
        ("fields", "field", "words"),
        [
            ({}, "sms.number", "is required"),
            ({"number": "call me"}, "sms.number", "telephone"),
            ({"number": "+1 555", "message": "a\x07"}, "sms.message", "control"),
        ],
        ids=["missing", "not-a-number", "bell-in-message"],
    )
    def test_rejects_bad_fields(
        self, fields: dict[str, Any], field: str, words: str
    ) -> None:
        assert words in fails(field, sms=pb.SmsContent(**fields))


def geo(latitude: float, longitude: float) -> str:
    return encode(geo=pb.GeoContent(latitude=latitude, longitude=longitude))


class TestGeo:
    @pytest.mark.parametrize(
        ("latitude", "longitude", "expected"),
        [
            (52.52, 13.405, "geo:52.52,13.405"),
            (-33.8688, 151.2093, "geo:-33.8688,151.2093"),
            (48.2010, 16.3695, "geo:48.201,16.3695"),
            (0.0, 0.0, "geo:0,0"),
            (90.0, 180.0, "geo:90,180"),
            (-90.0, -180.0, "geo:-90,-180"),
            (10.0, -20.5, "geo:10,-20.5"),
            (1e-5, 1.23456789012, "geo:0.00001,1.23456789"),
            (-0.0, -1e-9, "geo:0,0"),
        ],
        ids=[
            "berlin",
            "sydney",
            "rfc5870-style",
            "origin",
            "max",
            "min",
            "integral",
            "no-exponent",
            "no-negative-zero",
        ],
    )
    def test_builds_a_geo_uri(
        self, latitude: float, longitude: float, expected: str
    ) -> None:
        assert geo(latitude, longitude) == expected

    @pytest.mark.parametrize(
        ("latitude", "longitude", "field"),
        [
            (90.000001, 0.0, "geo.latitude"),
            (-91.0, 0.0, "geo.latitude"),
            (0.0, 180.5, "geo.longitude"),
            (0.0, -181.0, "geo.longitude"),
            (float("nan"), 0.0, "geo.latitude"),
            (0.0, float("inf"), "geo.longitude"),
            (float("-inf"), 0.0, "geo.latitude"),
        ],
        ids=["lat-high", "lat-low", "lng-high", "lng-low", "nan", "inf", "minus-inf"],
    )
    def test_rejects_out_of_range_or_non_finite(
        self, latitude: float, longitude: float, field: str
    ) -> None:
        content = pb.GeoContent(latitude=latitude, longitude=longitude)
        fails(field, geo=content)

    def test_segno_helper_is_used_after_removing_negative_zero(self) -> None:
        assert segno.helpers.make_geo_data(-0.0, -1e-9) == "geo:-0,-0"
        assert geo(-0.0, -1e-9) == "geo:0,0"


def epc(**fields: Any) -> str:
    return encode(epc=pb.EpcContent(**fields))


RED_CROSS: dict[str, Any] = {
    "name": "Red Cross of Belgium",
    "iban": "BE72000000001616",
    "bic": "BPOTBEB1",
    "amount": "1",
    "text": "Urgency fund",
}


class TestEpc:
    def test_builds_the_epc069_12_guideline_example(self) -> None:
        # The guideline's sample (version 002, UTF-8, no purpose code).
        assert epc(**RED_CROSS) == (
            "BCD\n002\n1\nSCT\nBPOTBEB1\nRed Cross of Belgium\n"
            "BE72000000001616\nEUR1\n\n\nUrgency fund"
        )

    def test_builds_a_transfer_without_bic_and_remittance(self) -> None:
        text = epc(name="Max Mustermann", iban="DE89370400440532013000", amount="12.50")
        assert (
            text
            == "BCD\n002\n1\nSCT\n\nMax Mustermann\nDE89370400440532013000\nEUR12.5"
        )

    def test_normalises_iban_and_bic(self) -> None:
        text = epc(name="M", iban="de89 3704 0044 0532 0130 00", bic=" cobadeffxxx ")
        assert text == "BCD\n002\n1\nSCT\nCOBADEFFXXX\nM\nDE89370400440532013000"

    def test_leaves_the_amount_line_empty_when_no_amount_is_given(self) -> None:
        text = epc(name="M", iban="DE89370400440532013000", text="Invoice 7")
        assert text == "BCD\n002\n1\nSCT\n\nM\nDE89370400440532013000\n\n\n\nInvoice 7"

    def test_writes_utf8_text(self) -> None:
        text = epc(name="Jürgen Groß", iban="DE89370400440532013000", text="Danke €")
        assert text.split("\n")[2] == "1"
        assert "Jürgen Groß" in text
        assert text.endswith("Danke €")

    @pytest.mark.parametrize(
        ("amount", "expected"),
        [
            ("12.50", "EUR12.5"),
            ("12.5", "EUR12.5"),
            ("12", "EUR12"),
            ("100.00", "EUR100"),
            ("0.01", "EUR0.01"),
            ("999999999.99", "EUR999999999.99"),
            ("007.10", "EUR7.1"),
            (" 3.05 ", "EUR3.05"),
        ],
        ids=[
            "two-decimals",
            "one-decimal",
            "integer",
            "trailing-zeros",
            "min",
            "max",
            "leading-zeros",
            "spaces",
        ],
    )
    def test_formats_the_amount(self, amount: str, expected: str) -> None:
        text = epc(name="M", iban="DE89370400440532013000", amount=amount)
        assert text.split("\n")[7] == expected

    @pytest.mark.parametrize(
        "amount",
        [
            "0",
            "0.00",
            "0.001",
            "1000000000",
            "12,50",
            "-1",
            "+1",
            "1e3",
            "abc",
            ".5",
            "1.",
        ],
        ids=[
            "zero",
            "zero-cents",
            "three-decimals",
            "too-big",
            "comma",
            "negative",
            "plus",
            "exponent",
            "words",
            "no-integer-part",
            "dangling-point",
        ],
    )
    def test_rejects_bad_amounts(self, amount: str) -> None:
        fails(
            "epc.amount",
            epc=pb.EpcContent(name="M", iban="DE89370400440532013000", amount=amount),
        )

    @pytest.mark.parametrize(
        ("iban", "words"),
        [
            ("DE89370400440532013001", "check sum"),
            ("GB29NWBK60161331926818", "check sum"),
            ("DE8937040044", "not an IBAN"),
            ("12DE370400440532013000", "not an IBAN"),
            ("DE89-3704-0044-0532-0130-00", "not an IBAN"),
            ("", "is required"),
        ],
        ids=[
            "de-wrong-checksum",
            "gb-wrong-checksum",
            "too-short",
            "digits-first",
            "dashes",
            "missing",
        ],
    )
    def test_rejects_bad_ibans(self, iban: str, words: str) -> None:
        content = pb.EpcContent(name="M", iban=iban)
        assert words in fails("epc.iban", epc=content)

    @pytest.mark.parametrize(
        "bic",
        ["BPOTBE", "BPOTBEB1X", "BPOT1EB1", "BPOTBEB1XXXX"],
        ids=["6", "9", "digit-in-country", "12"],
    )
    def test_rejects_bad_bics(self, bic: str) -> None:
        content = pb.EpcContent(name="M", iban="DE89370400440532013000", bic=bic)
        fails("epc.bic", epc=content)

    def test_accepts_a_name_of_70_and_text_of_140_characters(self) -> None:
        text = epc(name="n" * 70, iban="DE89370400440532013000", text="t" * 140)
        assert text.endswith("\n" + "t" * 140)

    @pytest.mark.parametrize(
        ("fields", "field"),
        [
            ({"iban": "DE89370400440532013000"}, "epc.name"),
            ({"name": "n" * 71, "iban": "DE89370400440532013000"}, "epc.name"),
            ({"name": "a\nb", "iban": "DE89370400440532013000"}, "epc.name"),
            (
                {"name": "M", "iban": "DE89370400440532013000", "text": "t" * 141},
                "epc.text",
            ),
            (
                {"name": "M", "iban": "DE89370400440532013000", "text": "a\nb"},
                "epc.text",
            ),
        ],
        ids=["no-name", "name-71", "newline-in-name", "text-141", "newline-in-text"],
    )
    def test_rejects_bad_name_and_text(
        self, fields: dict[str, Any], field: str
    ) -> None:
        fails(field, epc=pb.EpcContent(**fields))

    def test_rejects_a_payload_over_331_bytes_as_too_long(self) -> None:
        content = pb.EpcContent(
            name="€" * 70, iban="DE89370400440532013000", text="€" * 140
        )
        with pytest.raises(ContentTooLong) as caught:
            encode(epc=content)
        field, description = violation(caught.value)
        assert field == ""
        assert "at most 331 bytes" in description

    def test_matches_segno_builder_where_that_one_works(self) -> None:
        ours = epc(**RED_CROSS)
        theirs = segno.helpers._make_epc_qr_data(
            "Red Cross of Belgium",
            "BE72000000001616",
            1,
            text="Urgency fund",
            bic="BPOTBEB1",
            encoding=1,
        )
        assert ours.encode("utf-8") == theirs

    def test_segno_builder_is_not_used_because_it_needs_remittance_and_skips_checksum(
        self,
    ) -> None:
        with pytest.raises(ValueError, match="text or a creditor reference"):
            segno.helpers._make_epc_qr_data(
                "M", "DE89370400440532013000", 1, encoding=1
            )
        bad = segno.helpers._make_epc_qr_data(
            "M", "DE89370400440532013001", 1, text="x", encoding=1
        )
        assert b"DE89370400440532013001" in bad  # accepted despite the checksum
        assert epc(name="M", iban="DE89370400440532013000", amount="1").endswith("EUR1")

    def test_error_correction_is_m(self) -> None:
        assert EPC_ERROR_CORRECTION == "M"


class TestIbanIsValid:
    @pytest.mark.parametrize(
        "iban",
        [
            "DE89370400440532013000",
            "BE72000000001616",
            "GB29NWBK60161331926819",
            "AT611904300234573201",
            "FR1420041010050500013M02606",
            "CH9300762011623852957",
            "de89 3704 0044 0532 0130 00",
        ],
        ids=["de", "be", "gb", "at", "fr-with-letter", "ch", "lower-case-spaced"],
    )
    def test_accepts_sepa_ibans(self, iban: str) -> None:
        text = epc(name="M", iban=iban)
        assert iban.replace(" ", "").upper() in text.split("\n")

    @pytest.mark.parametrize(
        "iban",
        ["US64SVBKUS6S3300958879", "BR1800360305000010009795493C1"],
        ids=["us", "br"],
    )
    def test_rejects_accounts_outside_the_sepa_zone(self, iban: str) -> None:
        content = pb.EpcContent(name="M", iban=iban)
        message = fails("epc.iban", epc=content)
        assert "SEPA" in message or "not an IBAN" in message
