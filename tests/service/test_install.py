"""qrsys as a user installs it: a wheel built from the checkout, installed
without the source tree, migrates a database on its own."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from qrsys_grpc import migrate
from qrsys_grpc.repository.database import async_url
from tests.conftest import MIGRATIONS, create_database, drop_database
from tests.service.conftest import project_root


def run(
    *args: str | Path, env: dict[str, str] | None = None, cwd: Path | None = None
) -> str:
    """Run a command to completion; fail with its output if it fails."""
    result = subprocess.run(
        [str(arg) for arg in args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, f"{args} exited {result.returncode}:\n" + (
        result.stdout + result.stderr
    )
    return result.stdout


def install_wheel(target: Path, wheels: Path) -> Path:
    """Build qrsys's wheel and install it alone into a new environment at
    ``target``, whose other packages come from this one; return its python."""
    run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "-q",
        "-w",
        wheels,
        project_root(),
    )
    (wheel,) = wheels.glob("qrsys_grpc-*.whl")
    run(sys.executable, "-m", "venv", "--without-pip", target)
    python = target / "bin" / "python"
    run(
        sys.executable,
        "-m",
        "pip",
        "--python",
        python,
        "install",
        "--no-deps",
        "-q",
        wheel,
    )
    # The dependencies are this environment's; its own qrsys (an editable
    # install, found through a .pth file of its own) is not seen from there.
    site = Path(
        run(
            python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"
        ).strip()
    )
    (site / "qrsys-deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return python


async def test_an_installed_wheel_carries_stubs_and_migrations(
    tmp_path: Path, postgres_server_url: str
) -> None:
    python = await asyncio.to_thread(
        install_wheel, tmp_path / "env", tmp_path / "wheels"
    )
    env = {
        key: value for key, value in os.environ.items() if not key.startswith("QRSYS_")
    }
    where = await asyncio.to_thread(
        run,
        python,
        "-c",
        "import qrsys_grpc.v1.qr_code_pb2, qrsys_grpc.settings as s; "
        "print(qrsys_grpc.v1.qr_code_pb2.__file__); "
        "print(s.default_migrations_dir())",
        env=env,
        cwd=tmp_path,
    )
    stubs, migrations = (Path(line) for line in where.splitlines())
    assert stubs.is_relative_to(tmp_path / "env")
    assert migrations == tmp_path / "env" / "share" / "qrsys" / "migrations"
    revisions = sorted(p.name for p in (MIGRATIONS / "versions").glob("*.py"))
    assert sorted(p.name for p in (migrations / "versions").glob("*.py")) == revisions

    url = await create_database(postgres_server_url, prefix="qrsys_install")
    try:
        await asyncio.to_thread(
            run,
            python,
            "-m",
            "qrsys_grpc.server",
            "--migrate-only",
            env={**env, "QRSYS_DATABASE_URL": url, "QRSYS_DATA_DIR": str(tmp_path)},
            cwd=tmp_path,
        )
        engine = create_async_engine(async_url(url))
        try:
            async with engine.connect() as conn:
                current = await conn.scalar(
                    sa.text("SELECT version_num FROM alembic_version")
                )
        finally:
            await engine.dispose()
        assert current == migrate.head_revision(MIGRATIONS)
    finally:
        await drop_database(postgres_server_url, url)
