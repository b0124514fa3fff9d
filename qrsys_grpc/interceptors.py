"""Per-call concerns of every qrsys RPC, in one server interceptor.

For each call: take or make a request id and send it back, bind the logging
fields, note the deadline for the database, check the access token unless
the method is public, turn domain errors into rich statuses (and anything
unexpected into a bare INTERNAL), and log and count the outcome once.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import Message

from qrsys_grpc import errors, logs, status
from qrsys_grpc.auth.accounts import Accounts
from qrsys_grpc.auth.caller import current_caller
from qrsys_grpc.metrics import Metrics
from qrsys_grpc.repository.database import call_deadline

logger = logging.getLogger("qrsys_grpc.access")

QRSYS_PREFIX = "/qrsys.v1."

PUBLIC_METHODS = frozenset(
    {
        "/qrsys.v1.AuthService/Register",
        "/qrsys.v1.AuthService/Login",
        "/qrsys.v1.AuthService/RefreshToken",
    }
)

AUTHENTICATED_METHODS = frozenset(
    {
        "/qrsys.v1.AuthService/Logout",
        "/qrsys.v1.AuthService/LogoutAll",
        "/qrsys.v1.AuthService/GetCurrentUser",
        "/qrsys.v1.AuthService/ChangePassword",
        "/qrsys.v1.AuthService/DeleteAccount",
        "/qrsys.v1.AuthService/IntrospectToken",
        "/qrsys.v1.QrCodeService/CreateQrCode",
        "/qrsys.v1.QrCodeService/BatchCreateQrCodes",
        "/qrsys.v1.QrCodeService/GetQrCode",
        "/qrsys.v1.QrCodeService/ListQrCodes",
        "/qrsys.v1.QrCodeService/UpdateQrCode",
        "/qrsys.v1.QrCodeService/DeleteQrCode",
        "/qrsys.v1.QrCodeService/RenderQrCode",
        "/qrsys.v1.QrCodeService/PreviewQrCode",
        "/qrsys.v1.QrCodeService/ExportQrCodes",
    }
)

Context = grpc.aio.ServicerContext[Any, Any]

REQUEST_ID_KEY = "x-request-id"
MAX_REQUEST_ID_LENGTH = 128
_SAFE_REQUEST_ID = re.compile(rf"[A-Za-z0-9\-_.:/+=@~]{{1,{MAX_REQUEST_ID_LENGTH}}}")


class _Unparseable:
    """Stands in for a request whose bytes are not the expected message."""


UNPARSEABLE = _Unparseable()


def _lenient(
    deserializer: Callable[[bytes], Message] | None,
) -> Callable[[bytes], Message | _Unparseable] | None:
    if deserializer is None:
        return None

    def parse(data: bytes) -> Message | _Unparseable:
        try:
            return deserializer(data)
        except Exception:  # any decode failure is the client's
            return UNPARSEABLE

    return parse


def bearer_token(metadata: tuple[tuple[str, str | bytes], ...]) -> str:
    """The token of ``authorization: Bearer <token>`` metadata.

    Raises:
        errors.Unauthenticated: missing, repeated, or not of the Bearer scheme.
    """
    values = [value for key, value in metadata if key == "authorization"]
    if not values:
        raise errors.Unauthenticated(
            "this call needs `authorization: Bearer <access token>` metadata",
            reason="TOKEN_MISSING",
        )
    if len(values) > 1:
        # Which one a proxy or a retry meant is anyone's guess: refuse both.
        raise errors.Unauthenticated(
            "send one `authorization` metadata entry, not several",
            reason="TOKEN_INVALID",
        )
    value = values[0]
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise errors.Unauthenticated(
            "the authorization metadata must be `Bearer <access token>`",
            reason="TOKEN_INVALID",
        )
    return token.strip()


def _request_id(metadata: tuple[tuple[str, str | bytes], ...]) -> str:
    """The client's ``x-request-id`` if it is a safe token, else a new one.

    A safe id is 1 to 128 characters of ASCII letters, digits and
    ``-_.:/+=@~``: it goes back in metadata and into every log line, so
    nothing that could break either gets through.
    """
    for key, value in metadata:
        if key == REQUEST_ID_KEY and isinstance(value, str):
            if _SAFE_REQUEST_ID.fullmatch(value):
                return value
            break
    return uuid.uuid4().hex


class _Call:
    """One RPC in progress: when it started, and the one place it ends."""

    def __init__(self, method: str, metrics: Metrics, kind: str) -> None:
        self.method = method
        self.started = time.perf_counter()
        _, service, name = method.split("/")
        self._labels = (kind, service, name)
        self._metrics = metrics
        self._finished = False
        metrics.started.labels(*self._labels).inc()
        metrics.in_flight.labels(*self._labels).inc()

    def finish(self, code: grpc.StatusCode, reason: str = "") -> None:
        """Log the outcome and record it in the metrics, once."""
        if self._finished:
            return
        self._finished = True
        elapsed = time.perf_counter() - self.started
        self._metrics.handled.labels(*self._labels, code.name).inc()
        self._metrics.latency.labels(*self._labels).observe(elapsed)
        self._metrics.in_flight.labels(*self._labels).dec()
        fields = logs.call_fields.get() or {}
        logger.info(
            "%s %s %.1fms user=%s peer=%s%s",
            self.method,
            code.name,
            elapsed * 1000,
            fields.get("user_id", "-"),
            fields.get("peer", "-"),
            f" reason={reason}" if reason else "",
        )


class CallInterceptor(grpc.aio.ServerInterceptor):
    """Authentication, request ids, deadlines, error mapping, logs, metrics."""

    def __init__(self, accounts: Accounts, metrics: Metrics) -> None:
        self._accounts = accounts
        self._metrics = metrics

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or not method.startswith(QRSYS_PREFIX):
            return handler
        public = method in PUBLIC_METHODS
        deserializer = _lenient(handler.request_deserializer)

        if handler.unary_unary is not None:
            inner_unary: Any = handler.unary_unary

            async def unary(request: Any, context: Context) -> Any:
                call = _Call(method, self._metrics, "unary")
                try:
                    await self._begin(call, public, request, context)
                    response = await inner_unary(request, context)
                except BaseException as exc:
                    await self._fail(exc, call, context)
                    raise
                call.finish(grpc.StatusCode.OK)
                return response

            return grpc.unary_unary_rpc_method_handler(
                unary,
                request_deserializer=deserializer,
                response_serializer=handler.response_serializer,
            )

        if handler.unary_stream is not None:
            inner_stream: Any = handler.unary_stream

            async def stream(request: Any, context: Context) -> AsyncIterator[Any]:
                call = _Call(method, self._metrics, "server_stream")
                try:
                    await self._begin(call, public, request, context)
                    async for response in inner_stream(request, context):
                        yield response
                except BaseException as exc:
                    await self._fail(exc, call, context)
                    raise
                call.finish(grpc.StatusCode.OK)

            return grpc.unary_stream_rpc_method_handler(
                stream,
                request_deserializer=deserializer,
                response_serializer=handler.response_serializer,
            )

        return handler

    async def _begin(
        self, call: _Call, public: bool, request: Any, context: Context
    ) -> None:
        metadata = tuple(context.invocation_metadata() or ())
        request_id = _request_id(metadata)
        logs.call_fields.set(
            {
                "request_id": request_id,
                "method": call.method,
                "peer": context.peer() or "-",
                "user_id": "-",
            }
        )
        current_caller.set(None)
        remaining = context.time_remaining()
        call_deadline.set(
            None if remaining is None else time.monotonic() + max(remaining, 0.0)
        )
        await context.send_initial_metadata(((REQUEST_ID_KEY, request_id),))

        if isinstance(request, _Unparseable):
            raise errors.InvalidArgument.field(
                "", "the request is not a valid message for this method"
            )
        if not public:
            caller = await self._accounts.authenticate(bearer_token(metadata))
            current_caller.set(caller)
            logs.bind(user_id=str(caller.user_id))

    async def _fail(self, exc: BaseException, call: _Call, context: Context) -> None:
        """Answer ``exc`` with the right status (by aborting the call)."""
        if isinstance(exc, grpc.aio.AbortError):
            call.finish(context.code() or grpc.StatusCode.UNKNOWN)
            return
        if isinstance(exc, errors.QrsysError):
            if isinstance(exc, errors.TooManyAttempts):
                self._metrics.logins_throttled.inc()
            result = status.to_status(exc)
            call.finish(result.code, exc.reason)
        elif isinstance(exc, Exception):
            logger.error("unexpected error in %s", call.method, exc_info=exc)
            result = status.internal_status()
            call.finish(result.code, "INTERNAL")
        else:
            call.finish(grpc.StatusCode.CANCELLED)
            return
        await context.abort(result.code, result.details, result.trailing_metadata)
