"""OpenTelemetry tracing of every RPC, switched on by configuration.

``QRSYS_TRACING=otlp`` exports spans over OTLP/gRPC to the collector the
standard ``OTEL_EXPORTER_OTLP_*`` variables name (``localhost:4317`` by
default); ``console`` prints them; ``off`` (the default) adds nothing.
"""

from __future__ import annotations

from typing import Any, Literal

import grpc
from opentelemetry.instrumentation.grpc import aio_server_interceptor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
)

TracingMode = Literal["off", "otlp", "console"]


def tracing_interceptors(
    mode: TracingMode, exporter: SpanExporter | None = None
) -> tuple[list[grpc.aio.ServerInterceptor], TracerProvider | None]:
    """Server interceptors that trace each RPC, and the provider to shut down.

    ``exporter`` replaces the one ``mode`` would choose (tests pass an
    in-memory one).
    """
    if mode == "off" and exporter is None:
        return [], None
    if exporter is None:
        if mode == "otlp":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
                OTLPSpanExporter,
            )

            exporter = OTLPSpanExporter()
        else:
            exporter = ConsoleSpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "qrsys"}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    interceptor: Any = aio_server_interceptor(  # type: ignore[no-untyped-call]
        tracer_provider=provider
    )
    return [interceptor], provider
