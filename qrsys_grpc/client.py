"""A typed Python client for qrsys, blocking (``QrsysClient``) or asyncio
(``AsyncQrsysClient``), with the same methods on both.

A client holds the caller's ``TokenPair`` and sends its access token as
``authorization: Bearer`` metadata. When a call fails because the access
token expired (UNAUTHENTICATED, reason ``TOKEN_EXPIRED``), the client swaps
its refresh token for a new pair once and repeats the call; ``on_tokens``
hears of every new pair, so the caller can persist it.

Every call gets a deadline (``timeout`` seconds; ``export_timeout`` for the
export stream). A failed call raises a ``QrsysError`` subclass carrying the
gRPC code, the qrsys ``reason``, the bad fields of a ``google.rpc.BadRequest``
and the delay of a ``google.rpc.RetryInfo``::

    with QrsysClient("127.0.0.1:50051") as client:
        client.login("owner@example.com", "correct-horse-battery")
        code = client.create_code("Table 7", url="https://menu.example/r/1?table=7")
        image = client.render(code.id, format="png", scale=8)
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple, Self, TypeVar

import grpc
from google.protobuf import field_mask_pb2, timestamp_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from qrsys_grpc.v1 import auth_pb2, auth_pb2_grpc, qr_code_pb2, qr_code_pb2_grpc
from qrsys_grpc.v1.auth_pb2 import User
from qrsys_grpc.v1.qr_code_pb2 import (
    ContactContent,
    EmailContent,
    EpcContent,
    GeoContent,
    QrCode,
    QrContent,
    QrStyle,
    SmsContent,
    WifiContent,
)

__all__ = [
    "DEFAULT_EXPORT_TIMEOUT",
    "DEFAULT_TARGET",
    "DEFAULT_TIMEOUT",
    "AbortedError",
    "AlreadyExistsError",
    "AsyncQrsysClient",
    "CodePage",
    "ContactContent",
    "DeadlineExceededError",
    "EmailContent",
    "EpcContent",
    "ExportedCode",
    "GeoContent",
    "InvalidArgumentError",
    "NotFoundError",
    "QrCode",
    "QrContent",
    "QrStyle",
    "QrsysClient",
    "QrsysError",
    "RenderedImage",
    "ResourceExhaustedError",
    "Session",
    "SmsContent",
    "TlsConfig",
    "TokenPair",
    "UnauthenticatedError",
    "UnavailableError",
    "User",
    "WifiContent",
    "content_type_of",
    "error_correction_value",
    "image_format_value",
]

DEFAULT_TARGET = "127.0.0.1:50051"
DEFAULT_TIMEOUT = 30.0
DEFAULT_EXPORT_TIMEOUT = 600.0
DETAILS_KEY = "grpc-status-details-bin"
REQUEST_ID_KEY = "x-request-id"
EXPORT_IDS_PER_CALL = 1000
USER_AGENT = "qrsys-client/0.1"

_Request = TypeVar("_Request")
_Response = TypeVar("_Response")
_Metadata = tuple[tuple[str, str], ...]


# Tokens ----------------------------------------------------------------------


def _time_of(stamp: timestamp_pb2.Timestamp) -> datetime:
    return stamp.ToDatetime(tzinfo=UTC)


def _time_text(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@dataclass(frozen=True)
class TokenPair:
    """An access token with the refresh token that renews it.

    The tokens are left out of ``repr`` so they do not end up in logs.
    """

    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    access_token_expire_time: datetime | None = None
    refresh_token_expire_time: datetime | None = None

    @classmethod
    def from_proto(cls, pair: auth_pb2.TokenPair) -> TokenPair:
        """The pair a qrsys response carried."""
        return cls(
            access_token=pair.access_token,
            refresh_token=pair.refresh_token,
            access_token_expire_time=(
                _time_of(pair.access_token_expire_time)
                if pair.HasField("access_token_expire_time")
                else None
            ),
            refresh_token_expire_time=(
                _time_of(pair.refresh_token_expire_time)
                if pair.HasField("refresh_token_expire_time")
                else None
            ),
        )

    def to_dict(self) -> dict[str, str | None]:
        """A JSON-ready form; ``from_dict`` reads it back."""
        return {
            "access_token": self.access_token,
            "refresh_token": self.refresh_token,
            "access_token_expire_time": _time_text(self.access_token_expire_time),
            "refresh_token_expire_time": _time_text(self.refresh_token_expire_time),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> TokenPair:
        """Read what ``to_dict`` wrote.

        Raises:
            ValueError: a token is missing or a time is malformed.
        """
        access = data.get("access_token")
        refresh = data.get("refresh_token")
        if not isinstance(access, str) or not isinstance(refresh, str):
            raise ValueError("the token pair needs access_token and refresh_token")
        return cls(
            access_token=access,
            refresh_token=refresh,
            access_token_expire_time=_parse_time(data.get("access_token_expire_time")),
            refresh_token_expire_time=_parse_time(
                data.get("refresh_token_expire_time")
            ),
        )


@dataclass(frozen=True)
class Session:
    """The result of Register or Login: the account and its new tokens."""

    user: User
    tokens: TokenPair


class CodePage(NamedTuple):
    """One page of ListQrCodes."""

    codes: list[QrCode]
    next_page_token: str
    total_size: int


class RenderedImage(NamedTuple):
    """A drawn code: the image bytes and their MIME type."""

    data: bytes
    content_type: str


class ExportedCode(NamedTuple):
    """One drawn code of an export."""

    id: str
    title: str
    content_type: str
    data: bytes


# Errors ----------------------------------------------------------------------


class QrsysError(Exception):
    """A failed qrsys call.

    Attributes:
        code: the gRPC status code.
        reason: the qrsys reason of the ``ErrorInfo`` detail (e.g.
            ``TOKEN_EXPIRED``), or the code's name when the answer had none
            (a connection failure, a client-side deadline).
        message: the status message.
        field_violations: ``(field, description)`` of each bad field.
        retry_after: seconds to wait before retrying, from ``RetryInfo``.
        precondition_violations: ``(type, subject, description)`` of a
            ``PreconditionFailure`` (a stale etag).
        metadata: the ``ErrorInfo`` metadata.
        request_id: the ``x-request-id`` the server answered with, if any.
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        reason: str | None = None,
        field_violations: Sequence[tuple[str, str]] = (),
        retry_after: float | None = None,
        precondition_violations: Sequence[tuple[str, str, str]] = (),
        metadata: Mapping[str, str] | None = None,
        request_id: str | None = None,
    ) -> None:
        self.code = code
        self.message = message
        self.reason = reason or code.name
        self.field_violations = list(field_violations)
        self.retry_after = retry_after
        self.precondition_violations = list(precondition_violations)
        self.metadata = dict(metadata or {})
        self.request_id = request_id
        super().__init__(self._describe())

    @property
    def fields(self) -> list[str]:
        """The names of the bad fields, in the order the server gave them."""
        return [name for name, _ in self.field_violations]

    def _describe(self) -> str:
        text = " ".join(self.message.split()) or self.code.name.lower()
        missing = [
            f"{name}: {description}" if description else name
            for name, description in self.field_violations
            if name and name not in text
        ]
        if missing:
            text = f"{text} ({'; '.join(missing)})"
        if self.retry_after is not None:
            text = f"{text}; retry in {self.retry_after:g}s"
        return f"{text} [{self.reason}]"

    def __str__(self) -> str:
        return self._describe()

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.code, self.message), self.__dict__)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(code={self.code.name}, reason={self.reason!r}, "
            f"message={self.message!r}, fields={self.fields!r})"
        )


class InvalidArgumentError(QrsysError):
    """INVALID_ARGUMENT: ``fields`` names the bad request fields."""


class UnauthenticatedError(QrsysError):
    """UNAUTHENTICATED: a missing, invalid or expired token, a revoked
    session, or wrong credentials (see ``reason``)."""


class NotFoundError(QrsysError):
    """NOT_FOUND: no such code, or it belongs to someone else."""


class AlreadyExistsError(QrsysError):
    """ALREADY_EXISTS: e.g. the email is registered already."""


class AbortedError(QrsysError):
    """ABORTED: the code changed since its etag was read."""


class ResourceExhaustedError(QrsysError):
    """RESOURCE_EXHAUSTED: too many attempts or calls; see ``retry_after``."""


class UnavailableError(QrsysError):
    """UNAVAILABLE: the server or its database cannot be reached."""


class DeadlineExceededError(QrsysError):
    """DEADLINE_EXCEEDED: the call ran out of time."""


_ERROR_CLASSES: dict[grpc.StatusCode, type[QrsysError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExistsError,
    grpc.StatusCode.ABORTED: AbortedError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
}


def _metadata_value(metadata: Iterable[tuple[str, Any]] | None, key: str) -> Any:
    for name, value in metadata or ():
        if name == key:
            return value
    return None


def _status_from_metadata(
    metadata: Iterable[tuple[str, Any]] | None,
) -> status_pb2.Status | None:
    raw = _metadata_value(metadata, DETAILS_KEY)
    if not isinstance(raw, bytes):
        return None
    try:
        return status_pb2.Status.FromString(raw)
    except Exception:
        return None


def _build_error(
    code: grpc.StatusCode,
    message: str,
    status: status_pb2.Status | None,
    request_id: str | None,
) -> QrsysError:
    reason: str | None = None
    info_metadata: dict[str, str] = {}
    violations: list[tuple[str, str]] = []
    preconditions: list[tuple[str, str, str]] = []
    retry_after: float | None = None
    for detail in status.details if status is not None else ():
        info = error_details_pb2.ErrorInfo()
        bad = error_details_pb2.BadRequest()
        retry = error_details_pb2.RetryInfo()
        failure = error_details_pb2.PreconditionFailure()
        if detail.Unpack(info):
            reason = info.reason or None
            info_metadata = dict(info.metadata)
        elif detail.Unpack(bad):
            violations.extend((v.field, v.description) for v in bad.field_violations)
        elif detail.Unpack(retry):
            delay = retry.retry_delay
            retry_after = delay.seconds + delay.nanos / 1e9
        elif detail.Unpack(failure):
            preconditions.extend(
                (v.type, v.subject, v.description) for v in failure.violations
            )
    cls = _ERROR_CLASSES.get(code, QrsysError)
    return cls(
        code,
        message,
        reason=reason,
        field_violations=violations,
        retry_after=retry_after,
        precondition_violations=preconditions,
        metadata=info_metadata,
        request_id=request_id,
    )


def _sync_error(exc: grpc.RpcError) -> QrsysError:
    """The ``QrsysError`` for a failed blocking call."""
    if not isinstance(exc, grpc.Call):
        return QrsysError(grpc.StatusCode.UNKNOWN, str(exc))
    code = exc.code() or grpc.StatusCode.UNKNOWN
    message = exc.details() or ""
    status: status_pb2.Status | None
    try:
        status = rpc_status.from_call(exc)
    except ValueError:
        # The status proto disagrees with the call's code or message: take
        # the details anyway, the code and message from the call.
        status = _status_from_metadata(exc.trailing_metadata())
    request_id = _metadata_value(exc.initial_metadata(), REQUEST_ID_KEY)
    return _build_error(
        code, message, status, request_id if isinstance(request_id, str) else None
    )


def _aio_error(exc: grpc.aio.AioRpcError) -> QrsysError:
    """The ``QrsysError`` for a failed asyncio call, from its trailers."""
    status = _status_from_metadata(exc.trailing_metadata())
    request_id = _metadata_value(exc.initial_metadata(), REQUEST_ID_KEY)
    return _build_error(
        exc.code(),
        exc.details() or "",
        status,
        request_id if isinstance(request_id, str) else None,
    )


def _needs_refresh(error: QrsysError, used: TokenPair | None) -> bool:
    """Whether a failure calls for one refresh and a retry."""
    return (
        error.code == grpc.StatusCode.UNAUTHENTICATED
        and error.reason == "TOKEN_EXPIRED"
        and used is not None
        and bool(used.refresh_token)
    )


def _no_refresh_token() -> UnauthenticatedError:
    return UnauthenticatedError(
        grpc.StatusCode.UNAUTHENTICATED,
        "not signed in: the client holds no refresh token",
        reason="TOKEN_MISSING",
    )


# Requests --------------------------------------------------------------------

_ERROR_CORRECTION_NAMES = {
    "l": "ERROR_CORRECTION_LOW",
    "low": "ERROR_CORRECTION_LOW",
    "m": "ERROR_CORRECTION_MEDIUM",
    "medium": "ERROR_CORRECTION_MEDIUM",
    "q": "ERROR_CORRECTION_QUARTILE",
    "quartile": "ERROR_CORRECTION_QUARTILE",
    "h": "ERROR_CORRECTION_HIGH",
    "high": "ERROR_CORRECTION_HIGH",
}

IMAGE_FORMATS = ("png", "svg", "pdf", "eps", "txt")

_CONTENT_TYPES = {
    "png": "image/png",
    "svg": "image/svg+xml",
    "pdf": "application/pdf",
    "eps": "application/postscript",
    "txt": "text/plain",
}


def error_correction_value(
    level: str | int,
) -> qr_code_pb2.ErrorCorrection.ValueType:
    """The ErrorCorrection enum value of ``L``/``M``/``Q``/``H`` (or ``low``,
    ``medium``, ``quartile``, ``high``, or the enum value itself).

    Raises:
        ValueError: an unknown level.
    """
    if isinstance(level, int):
        value = qr_code_pb2.ErrorCorrection.ValueType(level)
        return qr_code_pb2.ErrorCorrection.Value(
            qr_code_pb2.ErrorCorrection.Name(value)
        )
    name = _ERROR_CORRECTION_NAMES.get(level.strip().lower())
    if name is None:
        raise ValueError(f"unknown error correction level {level!r}: use L, M, Q or H")
    return qr_code_pb2.ErrorCorrection.Value(name)


def image_format_value(image_format: str | int) -> qr_code_pb2.ImageFormat.ValueType:
    """The ImageFormat enum value of ``png``, ``svg``, ``pdf``, ``eps`` or
    ``txt`` (or the enum value itself).

    Raises:
        ValueError: an unknown format.
    """
    if isinstance(image_format, int):
        value = qr_code_pb2.ImageFormat.ValueType(image_format)
        return qr_code_pb2.ImageFormat.Value(qr_code_pb2.ImageFormat.Name(value))
    name = image_format.strip().lower()
    if name not in IMAGE_FORMATS:
        raise ValueError(
            f"unknown image format {image_format!r}: use {', '.join(IMAGE_FORMATS)}"
        )
    return qr_code_pb2.ImageFormat.Value(f"IMAGE_FORMAT_{name.upper()}")


def content_type_of(image_format: str) -> str:
    """The MIME type qrsys answers for an image format name."""
    return _CONTENT_TYPES[image_format.strip().lower()]


def _content(
    content: QrContent | None,
    *,
    url: str | None = None,
    text: str | None = None,
    wifi: WifiContent | None = None,
    contact: ContactContent | None = None,
    email: EmailContent | None = None,
    sms: SmsContent | None = None,
    geo: GeoContent | None = None,
    epc: EpcContent | None = None,
    required: bool = True,
) -> QrContent | None:
    given = {
        name: value
        for name, value in (
            ("content", content),
            ("url", url),
            ("text", text),
            ("wifi", wifi),
            ("contact", contact),
            ("email", email),
            ("sms", sms),
            ("geo", geo),
            ("epc", epc),
        )
        if value is not None
    }
    if len(given) > 1:
        raise ValueError(f"give one content, not {', '.join(sorted(given))}")
    if not given:
        if required:
            raise ValueError(
                "give the content: content=QrContent(...), or url=, text=, wifi=, "
                "contact=, email=, sms=, geo= or epc="
            )
        return None
    if content is not None:
        return content
    if url is not None:
        return QrContent(url=url)
    if text is not None:
        return QrContent(text=text)
    result = QrContent()
    if wifi is not None:
        result.wifi.CopyFrom(wifi)
    elif contact is not None:
        result.contact.CopyFrom(contact)
    elif email is not None:
        result.email.CopyFrom(email)
    elif sms is not None:
        result.sms.CopyFrom(sms)
    elif geo is not None:
        result.geo.CopyFrom(geo)
    elif epc is not None:
        result.epc.CopyFrom(epc)
    return result


def _style(
    style: QrStyle | None,
    *,
    dark_color: str | None = None,
    light_color: str | None = None,
    error_correction: str | int | None = None,
    micro: bool | None = None,
    border: int | None = None,
) -> tuple[QrStyle, list[str]]:
    """The style to send, and the ``style.*`` paths the keywords set."""
    result = QrStyle()
    if style is not None:
        result.CopyFrom(style)
    paths: list[str] = []
    if dark_color is not None:
        result.dark_color = dark_color
        paths.append("style.dark_color")
    if light_color is not None:
        result.light_color = light_color
        paths.append("style.light_color")
    if error_correction is not None:
        result.error_correction = error_correction_value(error_correction)
        paths.append("style.error_correction")
    if micro is not None:
        result.micro = micro
        paths.append("style.micro")
    if border is not None:
        result.border = border
        paths.append("style.border")
    return result, paths


def _export_requests(
    ids: Sequence[str],
    image_format: str | int,
    scale: int,
    border: int | None,
) -> list[qr_code_pb2.ExportQrCodesRequest]:
    """One request per at most 1000 ids; one request for every code when
    ``ids`` is empty."""
    chunks = [
        list(ids[start : start + EXPORT_IDS_PER_CALL])
        for start in range(0, len(ids), EXPORT_IDS_PER_CALL)
    ] or [[]]
    requests = []
    for chunk in chunks:
        request = qr_code_pb2.ExportQrCodesRequest(
            ids=chunk, format=image_format_value(image_format), scale=scale
        )
        if border is not None:
            request.border = border
        requests.append(request)
    return requests


def _render_request(
    code_id: str, image_format: str | int, scale: int, border: int | None
) -> qr_code_pb2.RenderQrCodeRequest:
    request = qr_code_pb2.RenderQrCodeRequest(
        id=code_id, format=image_format_value(image_format), scale=scale
    )
    if border is not None:
        request.border = border
    return request


def _create_request(
    title: str,
    content: QrContent | None,
    *,
    kinds: dict[str, Any],
    style: QrStyle | None,
    dark_color: str | None,
    light_color: str | None,
    error_correction: str | int | None,
    micro: bool | None,
    border: int | None,
    request_id: str,
) -> qr_code_pb2.CreateQrCodeRequest:
    look, _ = _style(
        style,
        dark_color=dark_color,
        light_color=light_color,
        error_correction=error_correction,
        micro=micro,
        border=border,
    )
    return qr_code_pb2.CreateQrCodeRequest(
        qr_code=QrCode(title=title, content=_content(content, **kinds), style=look),
        request_id=request_id,
    )


def _batch_request(
    title_template: str,
    content: QrContent | None,
    *,
    url_template: str | None,
    text_template: str | None,
    first: int,
    count: int,
    style: QrStyle | None,
    dark_color: str | None,
    light_color: str | None,
    error_correction: str | int | None,
    micro: bool | None,
    border: int | None,
    request_id: str,
) -> qr_code_pb2.BatchCreateQrCodesRequest:
    look, _ = _style(
        style,
        dark_color=dark_color,
        light_color=light_color,
        error_correction=error_correction,
        micro=micro,
        border=border,
    )
    body = _content(content, url=url_template, text=text_template)
    return qr_code_pb2.BatchCreateQrCodesRequest(
        template=QrCode(title=title_template, content=body, style=look),
        first_number=first,
        count=count,
        request_id=request_id,
    )


def _update_request(
    code_id: str,
    *,
    title: str | None,
    content: QrContent | None,
    url: str | None,
    text: str | None,
    style: QrStyle | None,
    dark_color: str | None,
    light_color: str | None,
    error_correction: str | int | None,
    micro: bool | None,
    border: int | None,
    etag: str,
) -> qr_code_pb2.UpdateQrCodeRequest:
    """The update, its mask following from the arguments given.

    Raises:
        ValueError: nothing to change, or more than one content.
    """
    body = _content(content, url=url, text=text, required=False)
    look, style_paths = _style(
        style,
        dark_color=dark_color,
        light_color=light_color,
        error_correction=error_correction,
        micro=micro,
        border=border,
    )
    if style is not None:
        style_paths = ["style"]
    code = QrCode(id=code_id, etag=etag)
    paths: list[str] = []
    if title is not None:
        code.title = title
        paths.append("title")
    if body is not None:
        code.content.CopyFrom(body)
        paths.append("content")
    if style_paths:
        code.style.CopyFrom(look)
        paths.extend(style_paths)
    if not paths:
        raise ValueError("nothing to change: give a title, a content or a style")
    return qr_code_pb2.UpdateQrCodeRequest(
        qr_code=code, update_mask=field_mask_pb2.FieldMask(paths=paths)
    )


def _page(response: qr_code_pb2.ListQrCodesResponse) -> CodePage:
    return CodePage(
        list(response.qr_codes), response.next_page_token, response.total_size
    )


# Connection ------------------------------------------------------------------


def _read(path: str | Path | None) -> bytes | None:
    return None if path is None else Path(path).read_bytes()


@dataclass(frozen=True)
class TlsConfig:
    """TLS settings of a connection.

    With no root certificates the system's trust store is used. Give both
    ``private_key`` and ``certificate_chain`` for mutual TLS. ``server_name``
    overrides the name the server certificate must carry (the target's host
    by default).
    """

    root_certificates: bytes | None = field(default=None, repr=False)
    private_key: bytes | None = field(default=None, repr=False)
    certificate_chain: bytes | None = field(default=None, repr=False)
    server_name: str | None = None

    def __post_init__(self) -> None:
        if (self.private_key is None) != (self.certificate_chain is None):
            raise ValueError(
                "a client certificate needs both its private key and its chain"
            )

    @classmethod
    def from_files(
        cls,
        *,
        ca_file: str | Path | None = None,
        cert_file: str | Path | None = None,
        key_file: str | Path | None = None,
        server_name: str | None = None,
    ) -> TlsConfig:
        """TLS settings from PEM files.

        Raises:
            OSError: a file cannot be read.
            ValueError: only one of ``cert_file`` and ``key_file`` is given.
        """
        return cls(
            root_certificates=_read(ca_file),
            private_key=_read(key_file),
            certificate_chain=_read(cert_file),
            server_name=server_name,
        )

    def credentials(self) -> grpc.ChannelCredentials:
        """The gRPC channel credentials."""
        return grpc.ssl_channel_credentials(
            root_certificates=self.root_certificates,
            private_key=self.private_key,
            certificate_chain=self.certificate_chain,
        )


def _tls_of(tls: TlsConfig | bool | None) -> TlsConfig | None:
    if tls is True:
        return TlsConfig()
    if tls is False or tls is None:
        return None
    return tls


def _channel_options(
    tls: TlsConfig | None, options: Sequence[tuple[str, Any]]
) -> list[tuple[str, Any]]:
    result: list[tuple[str, Any]] = [("grpc.primary_user_agent", USER_AGENT)]
    if tls is not None and tls.server_name:
        result.append(("grpc.ssl_target_name_override", tls.server_name))
    result.extend(options)
    return result


class _ClientState:
    """What both clients keep: tokens, the callback, the deadlines."""

    def __init__(
        self,
        target: str,
        *,
        tokens: TokenPair | None,
        timeout: float | None,
        export_timeout: float | None,
    ) -> None:
        self.target = target
        self.timeout = timeout
        self.export_timeout = export_timeout
        self._tokens = tokens

    @property
    def tokens(self) -> TokenPair | None:
        """The token pair in use, or ``None`` when not signed in."""
        return self._tokens

    @tokens.setter
    def tokens(self, pair: TokenPair | None) -> None:
        self._tokens = pair

    @staticmethod
    def _metadata(tokens: TokenPair | None) -> _Metadata:
        if tokens is None or not tokens.access_token:
            return ()
        return (("authorization", f"Bearer {tokens.access_token}"),)


# The blocking client ---------------------------------------------------------


class QrsysClient(_ClientState):
    """A blocking qrsys client over one gRPC channel.

    Use it as a context manager, or call ``close()``. The methods are safe to
    call from several threads; a refresh happens once for all of them.
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        tokens: TokenPair | None = None,
        on_tokens: Callable[[TokenPair], object] | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        export_timeout: float | None = DEFAULT_EXPORT_TIMEOUT,
        tls: TlsConfig | bool | None = None,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        """Open a channel to ``target`` (``host:port``).

        Args:
            tokens: a pair from an earlier session, to go on with it.
            on_tokens: called with every new pair (login, register, refresh).
            timeout: the deadline of each call in seconds; ``None``: none.
            export_timeout: the deadline of each export stream.
            tls: ``True`` for TLS with the system's roots, or a ``TlsConfig``.
            options: extra gRPC channel options.
        """
        super().__init__(
            target, tokens=tokens, timeout=timeout, export_timeout=export_timeout
        )
        self._on_tokens = on_tokens
        self._lock = threading.Lock()
        config = _tls_of(tls)
        channel_options = _channel_options(config, options)
        self._channel = (
            grpc.secure_channel(target, config.credentials(), channel_options)
            if config is not None
            else grpc.insecure_channel(target, channel_options)
        )
        self._auth = auth_pb2_grpc.AuthServiceStub(self._channel)
        self._qr = qr_code_pb2_grpc.QrCodeServiceStub(self._channel)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the channel; calls in flight are cancelled."""
        self._channel.close()

    # Plumbing

    def _accept_tokens(self, pair: auth_pb2.TokenPair) -> TokenPair:
        tokens = TokenPair.from_proto(pair)
        self._tokens = tokens
        if self._on_tokens is not None:
            self._on_tokens(tokens)
        return tokens

    def _refresh_after_expiry(self, used: TokenPair) -> None:
        with self._lock:
            if self._tokens is not used:
                return  # another thread refreshed meanwhile
            self._refresh_locked(used.refresh_token)

    def _refresh_locked(self, refresh_token: str) -> TokenPair:
        try:
            response = self._auth.RefreshToken(
                auth_pb2.RefreshTokenRequest(refresh_token=refresh_token),
                timeout=self.timeout,
            )
        except grpc.RpcError as exc:
            raise _sync_error(exc) from None
        return self._accept_tokens(response.tokens)

    def _call(
        self,
        method: grpc.UnaryUnaryMultiCallable[_Request, _Response],
        request: _Request,
        *,
        authenticated: bool = True,
    ) -> _Response:
        used = self._tokens
        try:
            return method(
                request,
                timeout=self.timeout,
                metadata=self._metadata(used) if authenticated else None,
            )
        except grpc.RpcError as exc:
            error = _sync_error(exc)
        if not (authenticated and _needs_refresh(error, used)):
            raise error
        assert used is not None
        self._refresh_after_expiry(used)
        try:
            return method(
                request, timeout=self.timeout, metadata=self._metadata(self._tokens)
            )
        except grpc.RpcError as exc:
            raise _sync_error(exc) from None

    def _stream(
        self, request: qr_code_pb2.ExportQrCodesRequest
    ) -> Iterator[ExportedCode]:
        for attempt in range(2):
            used = self._tokens
            call = self._qr.ExportQrCodes(
                request, timeout=self.export_timeout, metadata=self._metadata(used)
            )
            started = False
            try:
                for message in call:
                    started = True
                    yield ExportedCode(
                        message.id, message.title, message.content_type, message.data
                    )
                return
            except grpc.RpcError as exc:
                error = _sync_error(exc)
                if attempt > 0 or started or not _needs_refresh(error, used):
                    raise error from None
                assert used is not None
                self._refresh_after_expiry(used)
            finally:
                call.cancel()

    # AuthService

    def register(self, email: str, password: str, display_name: str = "") -> Session:
        """Create an account and sign in to it."""
        response = self._call(
            self._auth.Register,
            auth_pb2.RegisterRequest(
                email=email, password=password, display_name=display_name
            ),
            authenticated=False,
        )
        return Session(response.user, self._accept_tokens(response.tokens))

    def login(self, email: str, password: str) -> Session:
        """Start a session; the client keeps its tokens."""
        response = self._call(
            self._auth.Login,
            auth_pb2.LoginRequest(email=email, password=password),
            authenticated=False,
        )
        return Session(response.user, self._accept_tokens(response.tokens))

    def refresh(self) -> TokenPair:
        """Swap the held refresh token for a new pair now."""
        with self._lock:
            if self._tokens is None or not self._tokens.refresh_token:
                raise _no_refresh_token()
            return self._refresh_locked(self._tokens.refresh_token)

    def logout(self) -> None:
        """End the session on the server and forget the tokens."""
        self._call(self._auth.Logout, auth_pb2.LogoutRequest())
        self._tokens = None

    def whoami(self) -> User:
        """The signed-in account."""
        return self._call(
            self._auth.GetCurrentUser, auth_pb2.GetCurrentUserRequest()
        ).user

    # QrCodeService

    def create_code(
        self,
        title: str,
        content: QrContent | None = None,
        *,
        url: str | None = None,
        text: str | None = None,
        wifi: WifiContent | None = None,
        contact: ContactContent | None = None,
        email: EmailContent | None = None,
        sms: SmsContent | None = None,
        geo: GeoContent | None = None,
        epc: EpcContent | None = None,
        style: QrStyle | None = None,
        dark_color: str | None = None,
        light_color: str | None = None,
        error_correction: str | int | None = None,
        micro: bool | None = None,
        border: int | None = None,
        request_id: str = "",
    ) -> QrCode:
        """Store a code. Give its content as ``content`` or as exactly one of
        ``url=``, ``text=``, ``wifi=``, ...; style keywords override
        ``style``. A repeated ``request_id`` returns the first result.

        Raises:
            ValueError: no content or more than one.
        """
        request = _create_request(
            title,
            content,
            kinds={
                "url": url,
                "text": text,
                "wifi": wifi,
                "contact": contact,
                "email": email,
                "sms": sms,
                "geo": geo,
                "epc": epc,
            },
            style=style,
            dark_color=dark_color,
            light_color=light_color,
            error_correction=error_correction,
            micro=micro,
            border=border,
            request_id=request_id,
        )
        return self._call(self._qr.CreateQrCode, request).qr_code

    def batch_create(
        self,
        title_template: str,
        content: QrContent | None = None,
        *,
        url_template: str | None = None,
        text_template: str | None = None,
        first: int = 1,
        count: int,
        style: QrStyle | None = None,
        dark_color: str | None = None,
        light_color: str | None = None,
        error_correction: str | int | None = None,
        micro: bool | None = None,
        border: int | None = None,
        request_id: str = "",
    ) -> list[QrCode]:
        """Store ``count`` codes numbered from ``first``: ``{n}`` in the
        title and in the url or text becomes each number. All or none.

        Raises:
            ValueError: no content or more than one.
        """
        request = _batch_request(
            title_template,
            content,
            url_template=url_template,
            text_template=text_template,
            first=first,
            count=count,
            style=style,
            dark_color=dark_color,
            light_color=light_color,
            error_correction=error_correction,
            micro=micro,
            border=border,
            request_id=request_id,
        )
        return list(self._call(self._qr.BatchCreateQrCodes, request).qr_codes)

    def get_code(self, code_id: str) -> QrCode:
        """One of the caller's codes."""
        request = qr_code_pb2.GetQrCodeRequest(id=code_id)
        return self._call(self._qr.GetQrCode, request).qr_code

    def list_codes(
        self,
        *,
        page_size: int = 0,
        page_token: str = "",
        filter: str = "",
        order_by: str = "",
    ) -> CodePage:
        """One page of the caller's codes."""
        request = qr_code_pb2.ListQrCodesRequest(
            page_size=page_size, page_token=page_token, filter=filter, order_by=order_by
        )
        return _page(self._call(self._qr.ListQrCodes, request))

    def iter_codes(
        self,
        *,
        filter: str = "",
        order_by: str = "",
        page_size: int = 0,
    ) -> Iterator[QrCode]:
        """Every code matching ``filter``, fetching page after page."""
        token = ""
        while True:
            page = self.list_codes(
                page_size=page_size, page_token=token, filter=filter, order_by=order_by
            )
            yield from page.codes
            token = page.next_page_token
            if not token:
                return

    def update_code(
        self,
        code_id: str,
        *,
        title: str | None = None,
        content: QrContent | None = None,
        url: str | None = None,
        text: str | None = None,
        style: QrStyle | None = None,
        dark_color: str | None = None,
        light_color: str | None = None,
        error_correction: str | int | None = None,
        micro: bool | None = None,
        border: int | None = None,
        etag: str = "",
    ) -> QrCode:
        """Change the given fields of a code (the update mask follows from
        the arguments). With ``etag``, only if the code is unchanged.

        Raises:
            ValueError: nothing to change, or more than one content.
        """
        request = _update_request(
            code_id,
            title=title,
            content=content,
            url=url,
            text=text,
            style=style,
            dark_color=dark_color,
            light_color=light_color,
            error_correction=error_correction,
            micro=micro,
            border=border,
            etag=etag,
        )
        return self._call(self._qr.UpdateQrCode, request).qr_code

    def delete_code(self, code_id: str, *, etag: str = "") -> None:
        """Remove a code; with ``etag``, only if it is unchanged."""
        request = qr_code_pb2.DeleteQrCodeRequest(id=code_id, etag=etag)
        self._call(self._qr.DeleteQrCode, request)

    def render(
        self,
        code_id: str,
        *,
        format: str | int = "png",
        scale: int = 0,
        border: int | None = None,
    ) -> RenderedImage:
        """Draw a stored code: ``format`` is png, svg, pdf, eps or txt;
        ``scale`` 0 means 10."""
        request = _render_request(code_id, format, scale, border)
        response = self._call(self._qr.RenderQrCode, request)
        return RenderedImage(response.data, response.content_type)

    def export(
        self,
        ids: Sequence[str] = (),
        *,
        format: str | int = "png",
        scale: int = 0,
        border: int | None = None,
    ) -> Iterator[ExportedCode]:
        """Draw the codes ``ids`` (every code of the caller when empty), one
        ``(id, title, content_type, data)`` at a time. Any number of ids: they
        are sent 1000 per call."""
        for request in _export_requests(ids, format, scale, border):
            yield from self._stream(request)


# The asyncio client ----------------------------------------------------------


class AsyncQrsysClient(_ClientState):
    """An asyncio qrsys client over one ``grpc.aio`` channel.

    Create it inside a running event loop; use it as an async context manager
    or ``await close()``. Concurrent calls share one refresh.
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        tokens: TokenPair | None = None,
        on_tokens: Callable[[TokenPair], Awaitable[object] | object] | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        export_timeout: float | None = DEFAULT_EXPORT_TIMEOUT,
        tls: TlsConfig | bool | None = None,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        """Open a channel to ``target``; the arguments are those of
        ``QrsysClient``, and ``on_tokens`` may also be a coroutine function."""
        super().__init__(
            target, tokens=tokens, timeout=timeout, export_timeout=export_timeout
        )
        self._on_tokens = on_tokens
        self._lock = asyncio.Lock()
        config = _tls_of(tls)
        channel_options = _channel_options(config, options)
        self._channel = (
            grpc.aio.secure_channel(target, config.credentials(), channel_options)
            if config is not None
            else grpc.aio.insecure_channel(target, channel_options)
        )
        self._auth = auth_pb2_grpc.AuthServiceStub(self._channel)
        self._qr = qr_code_pb2_grpc.QrCodeServiceStub(self._channel)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channel; calls in flight are cancelled."""
        await self._channel.close()

    # Plumbing

    async def _accept_tokens(self, pair: auth_pb2.TokenPair) -> TokenPair:
        tokens = TokenPair.from_proto(pair)
        self._tokens = tokens
        if self._on_tokens is not None:
            result = self._on_tokens(tokens)
            if inspect.isawaitable(result):
                await result
        return tokens

    async def _refresh_after_expiry(self, used: TokenPair) -> None:
        async with self._lock:
            if self._tokens is not used:
                return  # another task refreshed meanwhile
            await self._refresh_locked(used.refresh_token)

    async def _refresh_locked(self, refresh_token: str) -> TokenPair:
        try:
            response = await self._auth.RefreshToken(
                auth_pb2.RefreshTokenRequest(refresh_token=refresh_token),
                timeout=self.timeout,
            )
        except grpc.aio.AioRpcError as exc:
            raise _aio_error(exc) from None
        return await self._accept_tokens(response.tokens)

    async def _call(
        self,
        method: grpc.aio.UnaryUnaryMultiCallable[_Request, _Response],
        request: _Request,
        *,
        authenticated: bool = True,
    ) -> _Response:
        used = self._tokens
        try:
            return await method(
                request,
                timeout=self.timeout,
                metadata=self._metadata(used) if authenticated else None,
            )
        except grpc.aio.AioRpcError as exc:
            error = _aio_error(exc)
        if not (authenticated and _needs_refresh(error, used)):
            raise error
        assert used is not None
        await self._refresh_after_expiry(used)
        try:
            return await method(
                request, timeout=self.timeout, metadata=self._metadata(self._tokens)
            )
        except grpc.aio.AioRpcError as exc:
            raise _aio_error(exc) from None

    async def _stream(
        self, request: qr_code_pb2.ExportQrCodesRequest
    ) -> AsyncIterator[ExportedCode]:
        for attempt in range(2):
            used = self._tokens
            call = self._qr.ExportQrCodes(
                request, timeout=self.export_timeout, metadata=self._metadata(used)
            )
            started = False
            try:
                async for message in call:
                    started = True
                    yield ExportedCode(
                        message.id, message.title, message.content_type, message.data
                    )
                return
            except grpc.aio.AioRpcError as exc:
                error = _aio_error(exc)
                if attempt > 0 or started or not _needs_refresh(error, used):
                    raise error from None
                assert used is not None
                await self._refresh_after_expiry(used)
            finally:
                call.cancel()

    # AuthService

    async def register(
        self, email: str, password: str, display_name: str = ""
    ) -> Session:
        """Create an account and sign in to it."""
        response = await self._call(
            self._auth.Register,
            auth_pb2.RegisterRequest(
                email=email, password=password, display_name=display_name
            ),
            authenticated=False,
        )
        return Session(response.user, await self._accept_tokens(response.tokens))

    async def login(self, email: str, password: str) -> Session:
        """Start a session; the client keeps its tokens."""
        response = await self._call(
            self._auth.Login,
            auth_pb2.LoginRequest(email=email, password=password),
            authenticated=False,
        )
        return Session(response.user, await self._accept_tokens(response.tokens))

    async def refresh(self) -> TokenPair:
        """Swap the held refresh token for a new pair now."""
        async with self._lock:
            if self._tokens is None or not self._tokens.refresh_token:
                raise _no_refresh_token()
            return await self._refresh_locked(self._tokens.refresh_token)

    async def logout(self) -> None:
        """End the session on the server and forget the tokens."""
        await self._call(self._auth.Logout, auth_pb2.LogoutRequest())
        self._tokens = None

    async def whoami(self) -> User:
        """The signed-in account."""
        response = await self._call(
            self._auth.GetCurrentUser, auth_pb2.GetCurrentUserRequest()
        )
        return response.user

    # QrCodeService

    async def create_code(
        self,
        title: str,
        content: QrContent | None = None,
        *,
        url: str | None = None,
        text: str | None = None,
        wifi: WifiContent | None = None,
        contact: ContactContent | None = None,
        email: EmailContent | None = None,
        sms: SmsContent | None = None,
        geo: GeoContent | None = None,
        epc: EpcContent | None = None,
        style: QrStyle | None = None,
        dark_color: str | None = None,
        light_color: str | None = None,
        error_correction: str | int | None = None,
        micro: bool | None = None,
        border: int | None = None,
        request_id: str = "",
    ) -> QrCode:
        """Store a code; see ``QrsysClient.create_code``."""
        request = _create_request(
            title,
            content,
            kinds={
                "url": url,
                "text": text,
                "wifi": wifi,
                "contact": contact,
                "email": email,
                "sms": sms,
                "geo": geo,
                "epc": epc,
            },
            style=style,
            dark_color=dark_color,
            light_color=light_color,
            error_correction=error_correction,
            micro=micro,
            border=border,
            request_id=request_id,
        )
        return (await self._call(self._qr.CreateQrCode, request)).qr_code

    async def batch_create(
        self,
        title_template: str,
        content: QrContent | None = None,
        *,
        url_template: str | None = None,
        text_template: str | None = None,
        first: int = 1,
        count: int,
        style: QrStyle | None = None,
        dark_color: str | None = None,
        light_color: str | None = None,
        error_correction: str | int | None = None,
        micro: bool | None = None,
        border: int | None = None,
        request_id: str = "",
    ) -> list[QrCode]:
        """Store numbered codes; see ``QrsysClient.batch_create``."""
        request = _batch_request(
            title_template,
            content,
            url_template=url_template,
            text_template=text_template,
            first=first,
            count=count,
            style=style,
            dark_color=dark_color,
            light_color=light_color,
            error_correction=error_correction,
            micro=micro,
            border=border,
            request_id=request_id,
        )
        return list((await self._call(self._qr.BatchCreateQrCodes, request)).qr_codes)

    async def get_code(self, code_id: str) -> QrCode:
        """One of the caller's codes."""
        request = qr_code_pb2.GetQrCodeRequest(id=code_id)
        return (await self._call(self._qr.GetQrCode, request)).qr_code

    async def list_codes(
        self,
        *,
        page_size: int = 0,
        page_token: str = "",
        filter: str = "",
        order_by: str = "",
    ) -> CodePage:
        """One page of the caller's codes."""
        request = qr_code_pb2.ListQrCodesRequest(
            page_size=page_size, page_token=page_token, filter=filter, order_by=order_by
        )
        return _page(await self._call(self._qr.ListQrCodes, request))

    async def iter_codes(
        self,
        *,
        filter: str = "",
        order_by: str = "",
        page_size: int = 0,
    ) -> AsyncIterator[QrCode]:
        """Every code matching ``filter``, fetching page after page."""
        token = ""
        while True:
            page = await self.list_codes(
                page_size=page_size, page_token=token, filter=filter, order_by=order_by
            )
            for code in page.codes:
                yield code
            token = page.next_page_token
            if not token:
                return

    async def update_code(
        self,
        code_id: str,
        *,
        title: str | None = None,
        content: QrContent | None = None,
        url: str | None = None,
        text: str | None = None,
        style: QrStyle | None = None,
        dark_color: str | None = None,
        light_color: str | None = None,
        error_correction: str | int | None = None,
        micro: bool | None = None,
        border: int | None = None,
        etag: str = "",
    ) -> QrCode:
        """Change the given fields; see ``QrsysClient.update_code``."""
        request = _update_request(
            code_id,
            title=title,
            content=content,
            url=url,
            text=text,
            style=style,
            dark_color=dark_color,
            light_color=light_color,
            error_correction=error_correction,
            micro=micro,
            border=border,
            etag=etag,
        )
        return (await self._call(self._qr.UpdateQrCode, request)).qr_code

    async def delete_code(self, code_id: str, *, etag: str = "") -> None:
        """Remove a code; with ``etag``, only if it is unchanged."""
        request = qr_code_pb2.DeleteQrCodeRequest(id=code_id, etag=etag)
        await self._call(self._qr.DeleteQrCode, request)

    async def render(
        self,
        code_id: str,
        *,
        format: str | int = "png",
        scale: int = 0,
        border: int | None = None,
    ) -> RenderedImage:
        """Draw a stored code; see ``QrsysClient.render``."""
        request = _render_request(code_id, format, scale, border)
        response = await self._call(self._qr.RenderQrCode, request)
        return RenderedImage(response.data, response.content_type)

    async def export(
        self,
        ids: Sequence[str] = (),
        *,
        format: str | int = "png",
        scale: int = 0,
        border: int | None = None,
    ) -> AsyncIterator[ExportedCode]:
        """Draw many codes; see ``QrsysClient.export``."""
        for request in _export_requests(ids, format, scale, border):
            async for item in self._stream(request):
                yield item
