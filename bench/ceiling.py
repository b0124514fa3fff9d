"""The ceiling: a bare ``grpc.aio`` server answering the standard health check.

It does nothing but what every gRPC server does (HTTP/2, framing, one tiny
protobuf each way), so its requests per second on this machine, driven by
the same load generator as qrsys, is the most any unary RPC could reach
here. Run as its own process: ``python -m bench.ceiling --port N``; it
serves until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer


async def serve(address: str) -> None:
    """Serve the health service on ``address`` until SIGTERM or SIGINT."""
    server = grpc.aio.server()
    health = HealthServicer()
    await health.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    if server.add_insecure_port(address) == 0:
        raise SystemExit(f"cannot listen on {address}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await server.stop(0)


def main() -> None:
    """Parse ``--address`` and serve."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", default="127.0.0.1:50099")
    args = parser.parse_args()
    asyncio.run(serve(args.address))


if __name__ == "__main__":
    main()
