"""The ``qrsys`` command against the real test server.

``main`` runs in a thread (``asyncio.to_thread``): it uses the blocking
client, and the server it talks to runs in this event loop.
"""

from __future__ import annotations

import asyncio
import getpass
import io
import json
import os
import stat
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import zxingcpp
from PIL import Image

from qrsys_grpc import cli
from qrsys_grpc.server import RunningServer
from qrsys_grpc.settings import Settings
from qrsys_grpc.v1 import auth_pb2_grpc
from tests.service.conftest import PASSWORD, Account, register, unique_email
from tests.service.test_client import (
    expired_access_token,
    free_port,
    running_mtls_server,
)

URL = "https://menu.example/r/1?table=7"
URL_TEMPLATE = "https://menu.example/r/1?t={n}"


@dataclass
class Result:
    """What one run of ``qrsys`` did."""

    code: int
    out: str
    err: str


Run = Callable[..., Awaitable[Result]]


@pytest.fixture
def credentials_file(tmp_path: Path) -> Path:
    """Where the CLI keeps its credentials in a test: a directory it makes."""
    return tmp_path / "config" / "qrsys" / "credentials.json"


@pytest.fixture
def run(
    server: RunningServer,
    credentials_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Run:
    """Run ``qrsys ARGS`` against the test server, with ``stdin`` as input."""
    monkeypatch.setenv("QRSYS_CREDENTIALS_FILE", str(credentials_file))
    monkeypatch.setenv("QRSYS_SERVER", f"127.0.0.1:{server.port}")

    async def run_cli(*argv: str, stdin: str = "") -> Result:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        capsys.readouterr()
        code = await asyncio.to_thread(cli.main, list(argv))
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run_cli


async def login(run: Run, account: Account) -> Result:
    """``qrsys login`` as ``account``, the password on stdin."""
    result = await run(
        "login", "--email", account.email, "--password-stdin", stdin=PASSWORD + "\n"
    )
    assert result.code == 0, result.err
    return result


def read(path: Path) -> str:
    """A file's text."""
    return path.read_text()


def write(path: Path, text: str) -> None:
    """Replace a file's text."""
    path.write_text(text)


def exists(path: Path) -> bool:
    """Whether a file is there."""
    return path.exists()


def stored_tokens(path: Path) -> dict[str, str]:
    """The token pair in the credentials file."""
    tokens: dict[str, str] = json.loads(path.read_text())["tokens"]
    return tokens


def decoded(png: Path) -> list[str]:
    """What zxing-cpp reads in a PNG file."""
    with Image.open(png) as image:
        return [barcode.text for barcode in zxingcpp.read_barcodes(image)]


def mode(path: Path) -> int:
    """A file's permission bits."""
    return stat.S_IMODE(path.stat().st_mode)


# -- the whole flow --------------------------------------------------------


async def test_login_create_batch_list_render_export_whoami_logout(
    run: Run, account: Account, credentials_file: Path, tmp_path: Path
) -> None:
    outputs: list[Result] = []

    async def ok(*argv: str) -> Result:
        result = await run(*argv)
        assert result.code == 0, f"{argv}: {result.err}"
        outputs.append(result)
        return result

    outputs.append(await login(run, account))
    assert account.email in outputs[-1].out
    assert mode(credentials_file) == 0o600
    assert mode(credentials_file.parent) == 0o700
    assert PASSWORD not in read(credentials_file)

    whoami = await ok("whoami")
    assert account.email in whoami.out
    assert account.user_id in whoami.out

    created = await ok("create", "--title", "Table 7", "--url", URL)
    code_id = created.out.strip()
    assert uuid.UUID(code_id)

    batch = await ok(
        "batch",
        "--title-template",
        "Table {n}",
        "--url-template",
        URL_TEMPLATE,
        "--first",
        "1",
        "--count",
        "100",
    )
    rows = batch.out.splitlines()
    assert len(rows) == 100
    assert rows[0].endswith("\tTable 1")
    assert rows[-1].endswith("\tTable 100")

    listed = await ok("list")
    lines = listed.out.splitlines()
    assert len(lines) == 101
    assert f"{code_id}\turl\tTable 7\t{URL}" in lines

    as_json = json.loads((await ok("list", "--json")).out)
    assert len(as_json) == 101
    assert {entry["id"] for entry in as_json} >= {code_id}

    filtered = await ok("list", "--filter", 'title:"Table 10"', "--order-by", "title")
    assert [line.split("\t")[2] for line in filtered.out.splitlines()] == [
        "Table 10",
        "Table 100",
    ]
    limited = await ok("list", "--limit", "5")
    assert len(limited.out.splitlines()) == 5

    got = await ok("get", code_id)
    assert "Table 7" in got.out
    assert URL in got.out
    assert json.loads((await ok("get", code_id, "--json")).out)["title"] == "Table 7"

    png = tmp_path / "table7.png"
    await ok("render", code_id, "-o", str(png), "--scale", "8")
    assert decoded(png) == [URL]
    svg = tmp_path / "table7.svg"
    await ok("render", code_id, "-o", str(svg))
    assert b"<svg" in svg.read_bytes()
    eps = tmp_path / "table7.image"
    await ok("render", code_id, "-o", str(eps), "--format", "eps")
    assert eps.read_bytes().startswith(b"%!PS")

    codes = tmp_path / "codes"
    exported = await ok("export", "--format", "pdf", "-o", str(codes))
    assert "101" in exported.out
    files = sorted(codes.iterdir())
    assert len(files) == 101
    for file in files:
        assert file.suffix == ".pdf"
        assert file.read_bytes().startswith(b"%PDF")
    assert (codes / f"Table_7-{code_id}.pdf").exists()

    some = tmp_path / "some"
    first_two = [row.split("\t")[0] for row in rows[:2]]
    await ok("export", *first_two, "-o", str(some))
    assert sorted(path.name for path in some.iterdir()) == sorted(
        f"Table_{n}-{code}.png" for n, code in zip((1, 2), first_two, strict=True)
    )

    await ok("delete", code_id)
    missing = await run("get", code_id)
    assert missing.code == 1
    assert "not found" in missing.err.lower() or "no such" in missing.err.lower()
    assert len(missing.err.strip().splitlines()) == 1

    tokens = stored_tokens(credentials_file)
    for result in outputs:
        for token in tokens.values():
            if token:
                assert token not in result.out
                assert token not in result.err
        assert PASSWORD not in result.out + result.err

    await ok("logout")
    assert not exists(credentials_file)
    after = await run("whoami")
    assert after.code == 1
    assert "not signed in" in after.err


async def test_register_with_prompted_password(
    run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    prompts: list[str] = []

    def fake_getpass(prompt: str = "") -> str:
        prompts.append(prompt)
        return PASSWORD

    monkeypatch.setattr(getpass, "getpass", fake_getpass)
    email = unique_email("cli")
    result = await run("register", "--email", email, "--name", "Trattoria")
    assert result.code == 0, result.err
    assert len(prompts) == 2
    whoami = await run("whoami")
    assert whoami.out.startswith(f"{email} (Trattoria)")


async def test_register_refuses_differing_passwords(
    run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    answers = iter([PASSWORD, PASSWORD + "x"])
    monkeypatch.setattr(getpass, "getpass", lambda prompt="": next(answers))
    result = await run("register", "--email", unique_email())
    assert result.code == 2
    assert "differ" in result.err


# -- errors ----------------------------------------------------------------


async def test_bad_colour_names_the_option_and_field(
    run: Run, account: Account
) -> None:
    await login(run, account)
    result = await run(
        "create", "--title", "Bad", "--url", URL, "--dark-color", "notacolour"
    )
    assert result.code == 2
    assert result.out == ""
    lines = result.err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("qrsys: error:")
    assert "--dark-color" in lines[0]
    assert "qr_code.style.dark_color" in lines[0]
    assert "Traceback" not in result.err


async def test_create_and_batch_take_their_title_from_the_content(
    run: Run, account: Account
) -> None:
    await login(run, account)

    created = await run("create", "--url", URL)
    batch = await run("batch", "--template", URL_TEMPLATE, "--count", "3")
    text = await run("create", "--text", "Wi-Fi at the bar:\n  ask the staff")

    assert created.code == 0, created.err
    got = json.loads((await run("get", created.out.strip(), "--json")).out)
    assert got["title"] == URL
    assert batch.code == 0, batch.err
    assert [row.split("\t")[1] for row in batch.out.splitlines()] == [
        URL_TEMPLATE.replace("{n}", str(n)) for n in (1, 2, 3)
    ]
    assert text.code == 0, text.err
    got = json.loads((await run("get", text.out.strip(), "--json")).out)
    assert got["title"] == "Wi-Fi at the bar: ask the staff"


def test_a_title_from_long_content_is_shortened() -> None:
    assert cli.title_from("x" * 5000) == "x" * cli.TITLE_FROM_CONTENT_CHARS
    assert cli.title_from("\t\n") == "Untitled"


async def test_batch_errors_name_their_options(run: Run, account: Account) -> None:
    await login(run, account)
    result = await run(
        "batch",
        "--title-template",
        "T {n}",
        "--url-template",
        URL_TEMPLATE,
        "--count",
        "5000",
    )
    assert result.code == 2
    assert "--count (count)" in result.err


async def test_wrong_password_is_one_line_and_exit_1(
    run: Run, account: Account, credentials_file: Path
) -> None:
    result = await run(
        "login", "--email", account.email, "--password-stdin", stdin="wrong-pass\n"
    )
    assert result.code == 1
    assert result.err.strip() == "qrsys: error: the email or password is wrong"
    assert "wrong-pass" not in result.err
    assert not exists(credentials_file)


async def test_usage_errors_exit_2(run: Run, account: Account, tmp_path: Path) -> None:
    assert (await run()).code == 2
    assert (await run("create", "--title", "No content")).code == 2
    assert (await run("create", "--title", "T", "--url", "u", "--text", "t")).code == 2
    assert (
        await run("create", "--title", "T", "--url", URL, "--error-correction", "X")
    ).code == 2
    empty = await run("login", "--email", account.email, "--password-stdin")
    assert empty.code == 2
    assert "no password" in empty.err

    await login(run, account)
    unknown = await run("render", str(uuid.uuid4()), "-o", str(tmp_path / "x.gif"))
    assert unknown.code == 2
    assert "--format" in unknown.err
    assert (await run("--help")).code == 0


async def test_not_signed_in(run: Run) -> None:
    result = await run("list")
    assert result.code == 1
    assert result.err.strip() == (
        "qrsys: error: not signed in; run `qrsys login --email EMAIL` first"
    )


async def test_tokens_stay_with_their_server(run: Run, account: Account) -> None:
    await login(run, account)
    other = f"127.0.0.1:{free_port()}"
    result = await run("--server", other, "whoami")
    assert result.code == 1
    assert f"not signed in to {other}" in result.err


async def test_unreachable_server(
    run: Run, account: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QRSYS_SERVER", f"127.0.0.1:{free_port()}")
    result = await run(
        "login",
        "--email",
        account.email,
        "--password-stdin",
        "--timeout",
        "5",
        stdin=PASSWORD,
    )
    assert result.code == 1
    lines = result.err.strip().splitlines()
    assert len(lines) == 1
    assert "cannot reach the qrsys server" in lines[0]


async def test_a_revoked_session_says_to_sign_in_again(
    run: Run, auth: auth_pb2_grpc.AuthServiceStub, credentials_file: Path
) -> None:
    account = await register(auth)
    await login(run, account)
    assert (await run("logout")).code == 0
    # Put the ended session back, as if the file had been copied earlier.
    await login(run, account)
    saved = read(credentials_file)
    assert (await run("logout")).code == 0
    write(credentials_file, saved)
    result = await run("whoami")
    assert result.code == 1
    assert "qrsys login" in result.err
    # Logging out of an ended session still forgets it.
    assert (await run("logout")).code == 0
    assert not exists(credentials_file)


async def test_mutual_tls_options_are_kept_with_the_session(
    run: Run,
    tmp_path: Path,
    database_url: str,
    server_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pems = tmp_path / "pems"
    pems.mkdir()
    async with running_mtls_server(pems, database_url, server_settings) as running:
        monkeypatch.setenv("QRSYS_SERVER", f"127.0.0.1:{running.port}")
        email = unique_email("tls")
        tls = [
            "--ca-file",
            str(pems / "ca.pem"),
            "--cert-file",
            str(pems / "client.pem"),
            "--key-file",
            str(pems / "client.key"),
            "--server-name",
            "localhost",
        ]
        plain = await run("register", "--email", email, "--password-stdin", stdin="x")
        assert plain.code == 1
        assert "cannot reach" in plain.err
        registered = await run(
            "register", "--email", email, "--password-stdin", *tls, stdin=PASSWORD
        )
        assert registered.code == 0, registered.err
        # Later commands reach the server with the TLS files kept at login.
        whoami = await run("whoami")
        assert whoami.code == 0, whoami.err
        assert email in whoami.out


# -- credentials -----------------------------------------------------------


async def test_refreshed_tokens_are_written_back(
    run: Run, account: Account, credentials_file: Path, server_settings: Settings
) -> None:
    await login(run, account)
    data = json.loads(read(credentials_file))
    expired = expired_access_token(server_settings, data["tokens"]["access_token"])
    data["tokens"]["access_token"] = expired
    write(credentials_file, json.dumps(data))
    os.chmod(credentials_file, 0o600)
    old_refresh = data["tokens"]["refresh_token"]

    result = await run("whoami")
    assert result.code == 0, result.err
    assert account.email in result.out
    tokens = stored_tokens(credentials_file)
    assert tokens["access_token"] != expired
    assert tokens["refresh_token"] != old_refresh
    assert mode(credentials_file) == 0o600
    # The written-back pair works.
    assert (await run("list")).code == 0


async def test_default_location_is_under_xdg_config_home(
    run: Run, account: Account, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("QRSYS_CREDENTIALS_FILE")
    config_home = tmp_path / "xdg"
    config_home.mkdir()
    (config_home / "qrsys").mkdir(mode=0o755)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(config_home))
    assert cli.credentials_path() == config_home / "qrsys" / "credentials.json"
    await login(run, account)
    stored = config_home / "qrsys" / "credentials.json"
    assert mode(stored) == 0o600
    assert mode(stored.parent) == 0o700
    assert sorted(p.name for p in stored.parent.iterdir()) == ["credentials.json"]

    monkeypatch.setenv("XDG_CONFIG_HOME", "relative/dir")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cli.credentials_path() == (
        tmp_path / "home" / ".config" / "qrsys" / "credentials.json"
    )


@pytest.mark.parametrize(
    "damage",
    [
        b"{not json",
        b"\xff\xfe",
        b"[]",
        b'{"server": 5}',
        b'{"server": "127.0.0.1:1", "tokens": []}',
        b'{"server": "127.0.0.1:1", "tokens": null}',
        b'{"server": "127.0.0.1:1", "tokens": {"access_token": "a", '
        b'"refresh_token": "r"}, "tls": {"enabled": "no"}}',
        b'{"server": "127.0.0.1:1", "tokens": {"access_token": "a", '
        b'"refresh_token": "r"}, "tls": "yes"}',
    ],
    ids=[
        "not-json",
        "not-utf8",
        "a-list",
        "wrong-types",
        "tokens-a-list",
        "tokens-null",
        "tls-enabled-a-string",
        "tls-a-string",
    ],
)
async def test_a_damaged_credentials_file_is_reported(
    run: Run, account: Account, credentials_file: Path, damage: bytes
) -> None:
    credentials_file.parent.mkdir(parents=True)
    await asyncio.to_thread(credentials_file.write_bytes, damage)
    result = await run("whoami")
    assert result.code == 1
    assert "damaged" in result.err
    # Signing in again replaces it.
    await login(run, account)
    assert (await run("whoami")).code == 0


# -- file names ------------------------------------------------------------


@pytest.mark.parametrize(
    ("title", "stem"),
    [
        ("Table 7", "Table_7"),
        ("../../etc/passwd", "etc_passwd"),
        ("Menü: Café / Terrasse?", "Menü_Café_Terrasse"),
        ("...", "qr"),
        ("菜单", "菜单"),
        ('a<b>c:"d|e?f*g\\h', "a_b_c_d_e_f_g_h"),
    ],
)
def test_safe_filename(title: str, stem: str) -> None:
    code_id = str(uuid.uuid4())
    assert cli.safe_filename(title, code_id, "pdf") == f"{stem}-{code_id}.pdf"


def test_safe_filename_is_bounded() -> None:
    name = cli.safe_filename("é" * 300, "id", "png")
    stem = name.removesuffix("-id.png")
    assert len(stem.encode()) <= cli.MAX_STEM_BYTES
    assert "/" not in name


def test_format_from_extension() -> None:
    assert cli.format_for_output("a/b/table.PNG", None) == "png"
    assert cli.format_for_output("x.svg", None) == "svg"
    assert cli.format_for_output("x.pdf", "eps") == "eps"
    assert cli.format_for_output("-", None) == "png"
    with pytest.raises(cli.CliError) as caught:
        cli.format_for_output("x", None)
    assert caught.value.exit_code == 2


async def test_a_reader_that_goes_away_ends_the_command_quietly(
    run: Run, account: Account
) -> None:
    """``qrsys list --json | head -n 1``: the installed command, in a
    process of its own, with more output than a pipe holds."""
    await login(run, account)
    batch = await run("batch", "--template", URL_TEMPLATE, "--count", "400")
    assert batch.code == 0, batch.err
    command = Path(sys.executable).parent / "qrsys"

    def list_into_a_closing_pipe() -> tuple[int, bytes, bytes]:
        process = subprocess.Popen(
            [str(command), "list", "--json"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert process.stdout is not None
        assert process.stderr is not None
        first = process.stdout.readline()
        process.stdout.close()
        errors = process.stderr.read()
        return process.wait(timeout=60), first, errors

    code, first, errors = await asyncio.to_thread(list_into_a_closing_pipe)

    assert first.strip() == b"["
    assert errors == b""
    assert code == cli.EXIT_BROKEN_PIPE
