"""The Node.js client of clients/node runs its whole flow against the server.

The client loads the .proto files of protos/ at run time with
@grpc/proto-loader, so this also checks that the contract works for a client
that is not generated from it. Node.js and npm are required: without them the
test fails rather than skips. The server runs in this test's event loop, so
node and npm run as asyncio subprocesses, never as blocking ones.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path

import pytest

from qrsys_grpc.server import RunningServer
from qrsys_grpc.settings import Settings
from tests.service.conftest import project_root

CLIENT = project_root() / "clients" / "node"
NPM_TIMEOUT = 300.0
FLOW_TIMEOUT = 180.0
BATCH_SIZE = 25
PAGE_SIZE = 10


def missing_tool(name: str) -> str | None:
    """Why ``name`` cannot be run, or ``None`` when it is on PATH."""
    if shutil.which(name) is None:
        return (
            f"{name} is not on PATH: the Node.js client test needs Node.js 18 or "
            "newer with npm (https://nodejs.org/)"
        )
    return None


async def run(
    *args: str, cwd: Path, env: dict[str, str], time_limit: float
) -> tuple[int, str, str]:
    """Run a program without blocking the event loop the server runs in."""
    process = await asyncio.create_subprocess_exec(
        *args,
        cwd=cwd,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), time_limit)
    except TimeoutError:
        process.kill()
        await process.wait()
        pytest.fail(f"{' '.join(args)} did not finish in {time_limit:.0f}s")
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


@pytest.fixture(scope="session")
async def npm_ci() -> str | None:
    """Install clients/node's locked dependencies once per session.

    Returns why that failed, or ``None``; the test fails with the reason, so
    a machine without Node.js fails the run instead of skipping the test.
    """
    for tool in ("node", "npm"):
        if problem := missing_tool(tool):
            return problem
    code, stdout, stderr = await run(
        "npm",
        "ci",
        "--no-audit",
        "--no-fund",
        cwd=CLIENT,
        env=dict(os.environ),
        time_limit=NPM_TIMEOUT,
    )
    if code != 0:
        return f"npm ci failed in {CLIENT} ({code}):\n{stdout}\n{stderr}"
    return None


async def test_node_client_flow(
    npm_ci: str | None, server: RunningServer, server_settings: Settings
) -> None:
    if npm_ci is not None:
        pytest.fail(npm_ci, pytrace=False)
    env = {
        **os.environ,
        "QRSYS_ADDRESS": f"127.0.0.1:{server.port}",
        "QRSYS_REFRESH_REUSE_GRACE_SECONDS": str(
            server_settings.refresh_reuse_grace_seconds
        ),
    }
    code, stdout, stderr = await run(
        "node",
        "flow.js",
        cwd=CLIENT,
        env=env,
        time_limit=FLOW_TIMEOUT,
    )
    assert code == 0, f"node flow.js exited {code}:\n{stdout}\n{stderr}"

    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["address"] == env["QRSYS_ADDRESS"]
    assert summary["created"] == BATCH_SIZE
    assert summary["listed"] == BATCH_SIZE
    assert summary["totalSize"] == BATCH_SIZE
    assert summary["pages"] == -(-BATCH_SIZE // PAGE_SIZE)
    assert summary["png"]["contentType"] == "image/png"
    assert summary["png"]["bytes"] > 0
    assert summary["refresh"] == {
        "newAccessTokenWorks": True,
        "oldRefreshToken": "UNAUTHENTICATED",
    }
    assert summary["logout"] == {"accessToken": "UNAUTHENTICATED"}
