"""QrCodeService handlers: protobuf in, protobuf out, logic in ``codes``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from qrsys_grpc.auth.accounts import Accounts
from qrsys_grpc.auth.caller import require_caller
from qrsys_grpc.auth.handlers import timestamp
from qrsys_grpc.qr import codes
from qrsys_grpc.qr.codes import QrCodes
from qrsys_grpc.repository.qr_codes import QrCodeRecord
from qrsys_grpc.v1 import qr_code_pb2, qr_code_pb2_grpc

Context = grpc.aio.ServicerContext[Any, Any]


def _optional(message: object, field: str) -> int | None:
    has_field = getattr(message, "HasField")  # noqa: B009
    return getattr(message, field) if has_field(field) else None


def code_message(record: QrCodeRecord) -> qr_code_pb2.QrCode:
    """The wire form of a stored code."""
    return qr_code_pb2.QrCode(
        id=str(record.id),
        title=record.title,
        content=codes.stored_content(record),
        style=codes.stored_style(record),
        encoded_text=record.encoded_text,
        symbol_version=record.symbol_version,
        create_time=timestamp(record.create_time),
        update_time=timestamp(record.update_time),
        etag=codes.etag(record),
    )


PAGE_OVERHEAD_BYTES = 4096
"""What a ListQrCodes response needs beside its codes (token, total)."""

ENTRY_OVERHEAD_BYTES = 8
"""The tag and length in front of each code in a response."""


class QrCodeServicer(qr_code_pb2_grpc.QrCodeServiceServicer):
    """Serves qrsys.v1.QrCodeService."""

    def __init__(
        self,
        qr_codes: QrCodes,
        accounts: Accounts,
        max_response_bytes: int,
    ) -> None:
        self._codes = qr_codes
        self._accounts = accounts
        # Room for the page's other fields and each entry's tag and length.
        self._page_budget = max_response_bytes - PAGE_OVERHEAD_BYTES

    async def CreateQrCode(
        self,
        request: qr_code_pb2.CreateQrCodeRequest,
        context: Context,
    ) -> qr_code_pb2.CreateQrCodeResponse:
        record = await self._codes.create(
            require_caller().user_id, request.qr_code, request.request_id
        )
        return qr_code_pb2.CreateQrCodeResponse(qr_code=code_message(record))

    async def BatchCreateQrCodes(
        self,
        request: qr_code_pb2.BatchCreateQrCodesRequest,
        context: Context,
    ) -> qr_code_pb2.BatchCreateQrCodesResponse:
        records = await self._codes.batch_create(
            require_caller().user_id,
            request.template,
            request.first_number,
            request.count,
            request.request_id,
        )
        return qr_code_pb2.BatchCreateQrCodesResponse(
            qr_codes=[code_message(record) for record in records]
        )

    async def GetQrCode(
        self, request: qr_code_pb2.GetQrCodeRequest, context: Context
    ) -> qr_code_pb2.GetQrCodeResponse:
        record = await self._codes.get(require_caller().user_id, request.id)
        return qr_code_pb2.GetQrCodeResponse(qr_code=code_message(record))

    async def ListQrCodes(
        self,
        request: qr_code_pb2.ListQrCodesRequest,
        context: Context,
    ) -> qr_code_pb2.ListQrCodesResponse:
        page = await self._codes.list(
            require_caller().user_id,
            size=request.page_size,
            page_token=request.page_token,
            filter_text=request.filter,
            order_by=request.order_by,
        )
        messages: list[qr_code_pb2.QrCode] = []
        next_page_token = page.next_page_token
        used = 0
        for record in page.codes:
            message = code_message(record)
            used += message.ByteSize() + ENTRY_OVERHEAD_BYTES
            if used > self._page_budget and messages:
                # Fewer than asked for, as AIP-158 allows: the rest would not
                # fit in one response; the token continues after the last.
                next_page_token = page.token_after(page.codes[len(messages) - 1])
                break
            messages.append(message)
        return qr_code_pb2.ListQrCodesResponse(
            qr_codes=messages,
            next_page_token=next_page_token,
            total_size=page.total_size,
        )

    async def UpdateQrCode(
        self,
        request: qr_code_pb2.UpdateQrCodeRequest,
        context: Context,
    ) -> qr_code_pb2.UpdateQrCodeResponse:
        record = await self._codes.update(
            require_caller().user_id, request.qr_code, list(request.update_mask.paths)
        )
        return qr_code_pb2.UpdateQrCodeResponse(qr_code=code_message(record))

    async def DeleteQrCode(
        self,
        request: qr_code_pb2.DeleteQrCodeRequest,
        context: Context,
    ) -> qr_code_pb2.DeleteQrCodeResponse:
        await self._codes.delete(require_caller().user_id, request.id, request.etag)
        return qr_code_pb2.DeleteQrCodeResponse()

    async def RenderQrCode(
        self,
        request: qr_code_pb2.RenderQrCodeRequest,
        context: Context,
    ) -> qr_code_pb2.RenderQrCodeResponse:
        options = codes.render_options(
            request.format, request.scale, _optional(request, "border")
        )
        rendered = await self._codes.render(
            require_caller().user_id, request.id, options
        )
        return qr_code_pb2.RenderQrCodeResponse(
            content_type=rendered.content_type, data=rendered.data
        )

    async def PreviewQrCode(
        self,
        request: qr_code_pb2.PreviewQrCodeRequest,
        context: Context,
    ) -> qr_code_pb2.PreviewQrCodeResponse:
        require_caller()
        options = codes.render_options(
            request.format, request.scale, _optional(request, "border")
        )
        rendered = await self._codes.preview(request.content, request.style, options)
        return qr_code_pb2.PreviewQrCodeResponse(
            content_type=rendered.content_type,
            data=rendered.data,
            encoded_text=rendered.encoded_text,
        )

    async def ExportQrCodes(
        self,
        request: qr_code_pb2.ExportQrCodesRequest,
        context: Context,
    ) -> AsyncIterator[qr_code_pb2.ExportQrCodesResponse]:
        options = codes.render_options(
            request.format, request.scale, _optional(request, "border")
        )
        caller = require_caller()
        async for record, rendered in self._codes.export(
            caller.user_id, list(request.ids), options
        ):
            # A long export stops as soon as its session ends.
            await self._accounts.ensure_live(caller)
            yield qr_code_pb2.ExportQrCodesResponse(
                id=str(record.id),
                title=record.title,
                content_type=rendered.content_type,
                data=rendered.data,
            )
