"""``qrsys``: the command line for a qrsys server, built on ``QrsysClient``.

``qrsys login`` keeps the server address and the session's token pair in a
file only the user may read (``$XDG_CONFIG_HOME/qrsys/credentials.json``, or
``QRSYS_CREDENTIALS_FILE``); every later command uses them, and a refreshed
pair is written back. Errors print one line on stderr: exit status 2 for bad
usage or input the server refused as invalid, 1 for anything else.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import io
import json
import os
import re
import stat
import sys
import tempfile
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TextIO

import grpc
from google.protobuf import json_format
from tqdm import tqdm

from qrsys_grpc.client import (
    DEFAULT_TARGET,
    DEFAULT_TIMEOUT,
    IMAGE_FORMATS,
    DeadlineExceededError,
    InvalidArgumentError,
    QrCode,
    QrsysClient,
    QrsysError,
    ResourceExhaustedError,
    Session,
    TlsConfig,
    TokenPair,
    UnauthenticatedError,
    UnavailableError,
)
from qrsys_grpc.v1 import qr_code_pb2

PROG = "qrsys"
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141
"""128 + SIGPIPE, as a shell tool whose reader went away (``| head``)."""

SERVER_ENV = "QRSYS_SERVER"
CREDENTIALS_ENV = "QRSYS_CREDENTIALS_FILE"
CREDENTIALS_NAME = "credentials.json"
FILE_MODE = 0o600
DIRECTORY_MODE = 0o700
CREDENTIALS_VERSION = 1

MAX_STEM_BYTES = 100
EXTENSIONS = {
    ".png": "png",
    ".svg": "svg",
    ".pdf": "pdf",
    ".eps": "eps",
    ".ps": "eps",
    ".txt": "txt",
}
ERROR_CORRECTION_LEVELS = ("L", "M", "Q", "H")
SESSION_REASONS = frozenset(
    {"TOKEN_MISSING", "TOKEN_INVALID", "TOKEN_EXPIRED", "SESSION_REVOKED"}
)

# The request fields each option sets, to name the option in an error.
OPTION_OF_FIELD = {
    "email": "--email",
    "password": "the password",
    "display_name": "--name",
    "qr_code.title": "--title",
    "qr_code.content.url": "--url",
    "qr_code.content.text": "--text",
    "qr_code.content": "--url/--text",
    "template.title": "--title-template",
    "template.content.url": "--url-template",
    "template.content.text": "--text-template",
    "template.content": "--url-template/--text-template",
    "first_number": "--first",
    "count": "--count",
    "request_id": "--request-id",
    "page_size": "--page-size",
    "filter": "--filter",
    "order_by": "--order-by",
    "scale": "--scale",
    "border": "--border",
    "format": "--format",
    "etag": "--etag",
    "id": "ID",
    "ids": "IDS",
}
STYLE_OPTIONS = {
    "dark_color": "--dark-color",
    "light_color": "--light-color",
    "error_correction": "--error-correction",
    "micro": "--micro",
    "border": "--border",
}


class CliError(Exception):
    """A failure to report on one line, with the exit status to use."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


# Credentials -----------------------------------------------------------------


@dataclass(frozen=True)
class TlsFiles:
    """The TLS settings of a connection, as file paths."""

    enabled: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    server_name: str | None = None

    def config(self) -> TlsConfig | None:
        """The client's TLS settings, reading the files."""
        if not self.enabled:
            return None
        try:
            return TlsConfig.from_files(
                ca_file=self.ca_file,
                cert_file=self.cert_file,
                key_file=self.key_file,
                server_name=self.server_name,
            )
        except OSError as exc:
            raise CliError(f"cannot read {exc.filename}: {exc.strerror}") from None
        except ValueError as exc:
            raise CliError(str(exc), EXIT_USAGE) from None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form."""
        return {
            "enabled": self.enabled,
            "ca_file": self.ca_file,
            "cert_file": self.cert_file,
            "key_file": self.key_file,
            "server_name": self.server_name,
        }

    @classmethod
    def from_dict(cls, data: Any) -> TlsFiles:
        """Read what ``to_dict`` wrote; nothing at all is no TLS.

        Raises:
            ValueError: something else is there.
        """
        if data is None:
            return cls()
        if not isinstance(data, dict) or not isinstance(
            data.get("enabled", False), bool
        ):
            raise ValueError("the TLS settings are not what qrsys wrote")

        def text(name: str) -> str | None:
            value = data.get(name)
            return value if isinstance(value, str) and value else None

        return cls(
            enabled=bool(data.get("enabled")),
            ca_file=text("ca_file"),
            cert_file=text("cert_file"),
            key_file=text("key_file"),
            server_name=text("server_name"),
        )


@dataclass(frozen=True)
class Credentials:
    """What ``qrsys login`` keeps: the server, how to reach it, the tokens."""

    server: str
    tokens: TokenPair
    tls: TlsFiles = TlsFiles()


def credentials_path() -> Path:
    """``$QRSYS_CREDENTIALS_FILE``, else ``$XDG_CONFIG_HOME/qrsys/credentials.json``
    (``~/.config`` when XDG_CONFIG_HOME is unset or relative)."""
    override = os.environ.get(CREDENTIALS_ENV)
    if override:
        return Path(override).expanduser()
    config_home = os.environ.get("XDG_CONFIG_HOME", "")
    base = Path(config_home) if os.path.isabs(config_home) else None
    return (base or Path.home() / ".config") / PROG / CREDENTIALS_NAME


class CredentialStore:
    """The credentials file: written atomically with mode 0600, in a
    directory created with mode 0700."""

    def __init__(self, path: Path, *, own_directory: bool) -> None:
        self.path = path
        self._own_directory = own_directory

    @classmethod
    def default(cls) -> CredentialStore:
        """The store at ``credentials_path()``. Its directory is qrsys's own
        (and kept at mode 0700) unless QRSYS_CREDENTIALS_FILE names it."""
        return cls(
            credentials_path(), own_directory=not os.environ.get(CREDENTIALS_ENV)
        )

    def load(self) -> Credentials | None:
        """The stored credentials, or ``None`` when there are none."""
        try:
            raw = self.path.read_bytes()
            mode = self.path.stat().st_mode
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise CliError(f"cannot read {self.path}: {exc.strerror}") from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            warn(f"{self.path} can be read by other users; run: chmod 600 {self.path}")
        try:
            data = json.loads(raw.decode("utf-8"))
            if not isinstance(data, dict) or not isinstance(data.get("tokens"), dict):
                raise ValueError("not what qrsys wrote")
            server = data["server"]
            if not isinstance(server, str) or not server:
                raise ValueError("no server")
            tokens = TokenPair.from_dict(data["tokens"])
            tls = TlsFiles.from_dict(data.get("tls"))
        except (ValueError, KeyError, TypeError):
            raise CliError(
                f"the credentials file {self.path} is damaged; run `qrsys login` again"
            ) from None
        return Credentials(server, tokens, tls)

    def save(self, credentials: Credentials) -> None:
        """Write ``credentials``, replacing the file in one step."""
        data = {
            "version": CREDENTIALS_VERSION,
            "server": credentials.server,
            "tls": credentials.tls.to_dict(),
            "tokens": credentials.tokens.to_dict(),
        }
        directory = self.path.parent
        try:
            if not directory.exists():
                directory.mkdir(mode=DIRECTORY_MODE, parents=True)
                directory.chmod(DIRECTORY_MODE)
            elif self._own_directory:
                directory.chmod(DIRECTORY_MODE)
            handle, temporary = tempfile.mkstemp(
                dir=directory, prefix=".credentials-", suffix=".tmp"
            )
            try:
                os.fchmod(handle, FILE_MODE)
                with os.fdopen(handle, "w", encoding="utf-8") as out:
                    json.dump(data, out, indent=2)
                    out.write("\n")
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(temporary, self.path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(temporary)
                raise
        except OSError as exc:
            raise CliError(
                f"cannot write {exc.filename or self.path}: {exc.strerror}"
            ) from None

    def delete(self) -> bool:
        """Remove the file; whether there was one."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise CliError(f"cannot remove {self.path}: {exc.strerror}") from None
        return True


# Output ----------------------------------------------------------------------


def warn(message: str) -> None:
    """One warning line on stderr."""
    print(f"{PROG}: warning: {message}", file=sys.stderr)


def one_line(text: str) -> str:
    """``text`` with every run of whitespace (newlines too) as one space."""
    return " ".join(text.split())


def field_label(field: str) -> str:
    """How an error names a request field: the option that sets it too."""
    option = OPTION_OF_FIELD.get(field)
    if option is None:
        for prefix in ("qr_code.style.", "template.style.", "style."):
            if field.startswith(prefix):
                option = STYLE_OPTIONS.get(field.removeprefix(prefix))
        if option is None and field.startswith("ids["):
            option = "IDS"
    return f"{option} ({field})" if option else field


def describe_error(error: QrsysError, server: str) -> str:
    """The one line that reports a failed call."""
    if isinstance(error, InvalidArgumentError) and error.field_violations:
        parts = [
            f"{field_label(field)}: {one_line(description)}"
            for field, description in error.field_violations
        ]
        return "invalid input: " + "; ".join(parts)
    message = one_line(error.message) or error.code.name.lower()
    if isinstance(error, UnauthenticatedError):
        if error.reason == "INVALID_CREDENTIALS":
            return "the email or password is wrong"
        if error.reason in SESSION_REASONS:
            return f"{message}; sign in again with `qrsys login`"
        return message
    if isinstance(error, ResourceExhaustedError) and error.retry_after is not None:
        return f"{message}; try again in {error.retry_after:.0f}s"
    if isinstance(error, UnavailableError) and error.reason == "UNAVAILABLE":
        return f"cannot reach the qrsys server at {server}: {message}"
    if isinstance(error, DeadlineExceededError):
        return f"the server at {server} did not answer in time (see --timeout)"
    if error.code == grpc.StatusCode.UNIMPLEMENTED:
        return f"{server} does not serve qrsys: {message}"
    return f"{message} [{error.reason}]"


def exit_code_of(error: QrsysError) -> int:
    """2 for input the server refused as invalid, 1 otherwise."""
    return EXIT_USAGE if isinstance(error, InvalidArgumentError) else EXIT_FAILURE


def code_json(code: QrCode) -> dict[str, Any]:
    """A code in the protobuf JSON mapping, as grpcurl shows it."""
    return json_format.MessageToDict(code)


def print_json(value: Any, out: TextIO) -> None:
    """``value`` as indented JSON."""
    json.dump(value, out, indent=2, ensure_ascii=False)
    out.write("\n")


def content_kind(code: QrCode) -> str:
    """The kind of a code's content: url, text, wifi, ..."""
    return code.content.WhichOneof("kind") or "-"


def shown(text: str, limit: int = 80) -> str:
    """``text`` on one line, escaped, cut to ``limit`` characters."""
    escaped = (
        text.encode("unicode_escape").decode("ascii")
        if not text.isprintable()
        else text
    )
    return escaped if len(escaped) <= limit else escaped[: limit - 1] + "…"


def code_row(code: QrCode) -> str:
    """One line of ``qrsys list``."""
    return "\t".join(
        (code.id, content_kind(code), code.title, shown(code.encoded_text))
    )


def code_details(code: QrCode) -> list[str]:
    """The lines of ``qrsys get``."""
    style = code.style
    level = (
        qr_code_pb2.ErrorCorrection.Name(style.error_correction)
        .removeprefix("ERROR_CORRECTION_")
        .lower()
    )
    if style.error_correction == qr_code_pb2.ERROR_CORRECTION_UNSPECIFIED:
        level = "default (medium)"
    rows = [
        ("id", code.id),
        ("title", code.title),
        ("kind", content_kind(code)),
        ("text", shown(code.encoded_text, 200)),
        ("symbol", code.symbol_version),
        (
            "colours",
            f"{style.dark_color or '#000000'} on {style.light_color or '#ffffff'}",
        ),
        ("error correction", level),
        ("micro", "yes" if style.micro else "no"),
        ("border", str(style.border) if style.HasField("border") else "default"),
        ("created", code.create_time.ToJsonString()),
        ("updated", code.update_time.ToJsonString()),
        ("etag", code.etag),
    ]
    return [f"{name + ':':<18}{value}" for name, value in rows]


def safe_filename(title: str, code_id: str, extension: str) -> str:
    """A file name for an exported code: its title with anything but
    letters, digits, ``.``, ``_`` and ``-`` replaced by ``_``, at most 100
    bytes, then ``-<id>.<extension>``."""
    text = unicodedata.normalize("NFKC", title)
    text = re.sub(r"[^\w.-]+", "_", text)
    text = re.sub(r"_{2,}", "_", text).strip("._-")
    stem = text.encode("utf-8")[:MAX_STEM_BYTES].decode("utf-8", "ignore")
    stem = stem.rstrip("._-") or "qr"
    safe_id = re.sub(r"[^\w-]+", "_", code_id)
    return f"{stem}-{safe_id}.{extension}"


def format_for_output(path: str, given: str | None) -> str:
    """The image format: ``--format``, else the output file's extension."""
    if given:
        return given
    if path == "-":
        return "png"
    image_format = EXTENSIONS.get(Path(path).suffix.lower())
    if image_format is None:
        raise CliError(
            f"cannot tell the image format from {path!r}; "
            f"give --format ({', '.join(IMAGE_FORMATS)})",
            EXIT_USAGE,
        )
    return image_format


# Commands --------------------------------------------------------------------


class Context:
    """What every command needs: options, the store, the resolved server."""

    def __init__(self, args: argparse.Namespace, store: CredentialStore) -> None:
        self.args = args
        self.store = store
        self._stored: Credentials | None = None
        self._loaded = False
        explicit = getattr(args, "server", None) or os.environ.get(SERVER_ENV)
        stored = self._peek()
        self.server = explicit or (stored.server if stored else DEFAULT_TARGET)

    def _peek(self) -> Credentials | None:
        try:
            return self.credentials()
        except CliError:
            return None

    def credentials(self) -> Credentials | None:
        """The stored credentials, read once."""
        if not self._loaded:
            self._stored = self.store.load()
            self._loaded = True
        return self._stored

    def tls_files(self) -> TlsFiles:
        """TLS options from the command line, else those stored with the
        session for this server."""
        args = self.args
        ca_file = getattr(args, "ca_file", None)
        cert_file = getattr(args, "cert_file", None)
        key_file = getattr(args, "key_file", None)
        server_name = getattr(args, "server_name", None)
        given = any((getattr(args, "tls", False), ca_file, cert_file, key_file))
        if given:
            return TlsFiles(
                enabled=True,
                ca_file=_absolute(ca_file),
                cert_file=_absolute(cert_file),
                key_file=_absolute(key_file),
                server_name=server_name,
            )
        stored = self._peek()
        if stored is not None and stored.server == self.server:
            return stored.tls
        return TlsFiles()

    @property
    def timeout(self) -> float:
        """The deadline of each call."""
        value: float = getattr(self.args, "timeout", None) or DEFAULT_TIMEOUT
        return value

    def anonymous_client(self) -> QrsysClient:
        """A client with no tokens, for login and register."""
        return QrsysClient(
            self.server, timeout=self.timeout, tls=self.tls_files().config()
        )

    def signed_in(self) -> QrsysClient:
        """A client with the stored session for this server; refreshed tokens
        are written back.

        Raises:
            CliError: not signed in to this server.
        """
        stored = self.credentials()
        if stored is None:
            raise CliError("not signed in; run `qrsys login --email EMAIL` first")
        if stored.server != self.server:
            raise CliError(
                f"not signed in to {self.server} (the saved session is for "
                f"{stored.server}); run `qrsys login --server {self.server}`"
            )
        current = [stored]

        def keep(tokens: TokenPair) -> None:
            current[0] = replace(current[0], tokens=tokens)
            self.store.save(current[0])

        return QrsysClient(
            self.server,
            tokens=stored.tokens,
            on_tokens=keep,
            timeout=self.timeout,
            tls=self.tls_files().config(),
        )


def _absolute(path: str | None) -> str | None:
    return None if path is None else str(Path(path).expanduser().resolve())


def read_password(args: argparse.Namespace, *, confirm: bool) -> str:
    """The password from stdin (``--password-stdin``) or a prompt."""
    if args.password_stdin:
        line = sys.stdin.readline()
        password = line.rstrip("\r\n")
        if not password:
            raise CliError("no password on standard input", EXIT_USAGE)
        return password
    try:
        password = getpass.getpass("Password: ")
        if confirm and getpass.getpass("Repeat the password: ") != password:
            raise CliError("the passwords differ", EXIT_USAGE)
    except EOFError:
        raise CliError("no password given", EXIT_USAGE) from None
    if not password:
        raise CliError("no password given", EXIT_USAGE)
    return password


def _start_session(
    ctx: Context, sign_in: Callable[[QrsysClient], Session], out: TextIO, verb: str
) -> int:
    with ctx.anonymous_client() as client:
        session = sign_in(client)
    ctx.store.save(Credentials(ctx.server, session.tokens, ctx.tls_files()))
    user = session.user
    print(f"{verb} {user.email} on {ctx.server}", file=out)
    return EXIT_OK


def cmd_login(ctx: Context, out: TextIO) -> int:
    """qrsys login --email E"""
    args = ctx.args
    password = read_password(args, confirm=False)
    return _start_session(
        ctx, lambda client: client.login(args.email, password), out, "signed in as"
    )


def cmd_register(ctx: Context, out: TextIO) -> int:
    """qrsys register --email E [--name N]"""
    args = ctx.args
    password = read_password(args, confirm=True)
    return _start_session(
        ctx,
        lambda client: client.register(args.email, password, args.name or ""),
        out,
        "registered and signed in as",
    )


def cmd_logout(ctx: Context, out: TextIO) -> int:
    """qrsys logout: end the session on the server and forget it here."""
    stored = ctx.credentials()
    if stored is None:
        print("not signed in", file=out)
        return EXIT_OK
    client = ctx.signed_in()
    try:
        with client:
            client.logout()
    except UnauthenticatedError:
        pass  # the session had ended already
    except QrsysError as error:
        ctx.store.delete()
        raise CliError(
            "signed out here, but the server could not end the session: "
            + describe_error(error, ctx.server)
        ) from None
    ctx.store.delete()
    print(f"signed out of {stored.server}", file=out)
    return EXIT_OK


def cmd_whoami(ctx: Context, out: TextIO) -> int:
    """qrsys whoami"""
    client = ctx.signed_in()
    with client:
        user = client.whoami()
    name = f" ({user.display_name})" if user.display_name else ""
    print(f"{user.email}{name}, user {user.id}, on {ctx.server}", file=out)
    return EXIT_OK


def _style_options(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "dark_color": args.dark_color,
        "light_color": args.light_color,
        "error_correction": args.error_correction,
        "micro": True if args.micro else None,
        "border": args.border,
    }


TITLE_FROM_CONTENT_CHARS = 180
"""How much of a code's content makes its title when none is given: short
enough that a batch's ``{n}``, replaced, stays within the title's bound."""


def title_from(content: str) -> str:
    """A title for a code made without one: its content on one line, shortened."""
    printable = "".join(ch if ch.isprintable() else " " for ch in content)
    return " ".join(printable.split())[:TITLE_FROM_CONTENT_CHARS] or "Untitled"


def cmd_create(ctx: Context, out: TextIO) -> int:
    """qrsys create [--title T] (--url U | --text X) [style]"""
    args = ctx.args
    client = ctx.signed_in()
    with client:
        code = client.create_code(
            args.title or title_from(args.url or args.text),
            url=args.url,
            text=args.text,
            request_id=args.request_id or "",
            **_style_options(args),
        )
    if args.json:
        print_json(code_json(code), out)
    else:
        print(code.id, file=out)
    return EXIT_OK


def cmd_batch(ctx: Context, out: TextIO) -> int:
    """qrsys batch [--title-template T] (--template U | --url-template U |
    --text-template X) --first N --count C"""
    args = ctx.args
    client = ctx.signed_in()
    with client:
        codes = client.batch_create(
            args.title_template or title_from(args.url_template or args.text_template),
            url_template=args.url_template,
            text_template=args.text_template,
            first=args.first,
            count=args.count,
            request_id=args.request_id or "",
            **_style_options(args),
        )
    if args.json:
        print_json([code_json(code) for code in codes], out)
    else:
        for code in codes:
            print(f"{code.id}\t{code.title}", file=out)
    return EXIT_OK


def cmd_list(ctx: Context, out: TextIO) -> int:
    """qrsys list [--filter F] [--order-by O] [--limit N] [--json]"""
    args = ctx.args
    client = ctx.signed_in()
    with client:
        codes: Iterator[QrCode] = client.iter_codes(
            filter=args.filter or "",
            order_by=args.order_by or "",
            page_size=args.page_size,
        )
        listed: list[QrCode] = []
        for code in codes:
            if args.limit is not None and len(listed) >= args.limit:
                break
            listed.append(code)
    if args.json:
        print_json([code_json(code) for code in listed], out)
    else:
        for code in listed:
            print(code_row(code), file=out)
    return EXIT_OK


def cmd_get(ctx: Context, out: TextIO) -> int:
    """qrsys get ID [--json]"""
    client = ctx.signed_in()
    with client:
        code = client.get_code(ctx.args.id)
    if ctx.args.json:
        print_json(code_json(code), out)
    else:
        print("\n".join(code_details(code)), file=out)
    return EXIT_OK


def cmd_delete(ctx: Context, out: TextIO) -> int:
    """qrsys delete ID [--etag E]"""
    client = ctx.signed_in()
    with client:
        client.delete_code(ctx.args.id, etag=ctx.args.etag or "")
    print(f"deleted {ctx.args.id}", file=out)
    return EXIT_OK


def _write(path: Path, data: bytes) -> None:
    try:
        path.write_bytes(data)
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror}") from None


def cmd_render(ctx: Context, out: TextIO) -> int:
    """qrsys render ID -o FILE [--format F] [--scale N] [--border N]"""
    args = ctx.args
    image_format = format_for_output(args.output, args.format)
    client = ctx.signed_in()
    with client:
        image = client.render(
            args.id, format=image_format, scale=args.scale, border=args.border
        )
    if args.output == "-":
        sys.stdout.flush()
        sys.stdout.buffer.write(image.data)
        sys.stdout.buffer.flush()
        return EXIT_OK
    _write(Path(args.output), image.data)
    print(
        f"wrote {args.output} ({image.content_type}, {len(image.data)} bytes)", file=out
    )
    return EXIT_OK


def cmd_export(ctx: Context, out: TextIO) -> int:
    """qrsys export [IDS...] --format F -o DIR"""
    args = ctx.args
    directory = Path(args.output)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise CliError(
            f"{directory} exists and is not a directory", EXIT_USAGE
        ) from None
    except OSError as exc:
        raise CliError(f"cannot create {directory}: {exc.strerror}") from None
    extension = args.format
    client = ctx.signed_in()
    written = 0
    with client:
        total = len(args.ids) if args.ids else client.list_codes(page_size=1).total_size
        with tqdm(
            total=total,
            unit="code",
            desc="exporting",
            file=sys.stderr,
            disable=True if args.quiet else None,
            leave=False,
        ) as bar:
            for item in client.export(
                args.ids, format=args.format, scale=args.scale, border=args.border
            ):
                _write(
                    directory / safe_filename(item.title, item.id, extension), item.data
                )
                written += 1
                bar.update(1)
    print(f"exported {written} codes to {directory}", file=out)
    return EXIT_OK


# Arguments -------------------------------------------------------------------


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


def _connection_options() -> argparse.ArgumentParser:
    """Options accepted before and after the command name."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("connection")
    suppress = argparse.SUPPRESS
    group.add_argument(
        "--server",
        metavar="HOST:PORT",
        default=suppress,
        help=f"the qrsys server (default: ${SERVER_ENV}, the signed-in server, "
        f"or {DEFAULT_TARGET})",
    )
    group.add_argument(
        "--timeout",
        type=_positive_float,
        metavar="SECONDS",
        default=suppress,
        help=f"deadline of each call (default {DEFAULT_TIMEOUT:g})",
    )
    group.add_argument(
        "--tls", action="store_true", default=suppress, help="connect with TLS"
    )
    group.add_argument(
        "--ca-file", metavar="PEM", default=suppress, help="CA certificates (TLS)"
    )
    group.add_argument(
        "--cert-file",
        metavar="PEM",
        default=suppress,
        help="client certificate chain (mutual TLS)",
    )
    group.add_argument(
        "--key-file", metavar="PEM", default=suppress, help="client key (mutual TLS)"
    )
    group.add_argument(
        "--server-name",
        metavar="NAME",
        default=suppress,
        help="the name the server certificate must carry",
    )
    return parent


def _add_style(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("style")
    group.add_argument(
        "--dark-color", metavar="COLOUR", help="#rgb, #rrggbb or #rrggbbaa"
    )
    group.add_argument(
        "--light-color", metavar="COLOUR", help="#rgb, #rrggbb or #rrggbbaa"
    )
    group.add_argument(
        "--error-correction",
        type=str.upper,
        choices=ERROR_CORRECTION_LEVELS,
        help="L, M, Q or H (default M; raised where it fits)",
    )
    group.add_argument(
        "--micro", action="store_true", help="a Micro QR symbol if it fits"
    )
    group.add_argument("--border", type=_count, metavar="MODULES", help="quiet zone")


def build_parser() -> argparse.ArgumentParser:
    """The ``qrsys`` argument parser."""
    common = _connection_options()
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Store and draw QR codes on a qrsys server.",
        parents=[common],
        epilog=f"Credentials are kept in {credentials_path()} "
        f"(${CREDENTIALS_ENV} overrides).",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(
        name: str, run: Callable[[Context, TextIO], int], help_text: str
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name, parents=[common], help=help_text, description=help_text
        )
        sub.set_defaults(run=run)
        return sub

    sub = command("login", cmd_login, "sign in and keep the session")
    sub.add_argument("--email", required=True)
    sub.add_argument(
        "--password-stdin", action="store_true", help="read the password from stdin"
    )

    sub = command("register", cmd_register, "create an account and sign in")
    sub.add_argument("--email", required=True)
    sub.add_argument("--name", help="the name to show")
    sub.add_argument(
        "--password-stdin", action="store_true", help="read the password from stdin"
    )

    command("logout", cmd_logout, "end the session and forget its tokens")
    command("whoami", cmd_whoami, "show the signed-in account")

    sub = command("create", cmd_create, "store a QR code; prints its id")
    sub.add_argument("--title", help="defaults to the url or text, shortened")
    content = sub.add_mutually_exclusive_group(required=True)
    content.add_argument("--url")
    content.add_argument("--text")
    sub.add_argument("--request-id", help="a key that makes a retry safe")
    sub.add_argument("--json", action="store_true", help="print the code as JSON")
    _add_style(sub)

    sub = command("batch", cmd_batch, "store numbered codes from a template")
    sub.add_argument(
        "--title-template",
        help="e.g. 'Table {n}'; defaults to the url or text template, shortened",
    )
    content = sub.add_mutually_exclusive_group(required=True)
    content.add_argument(
        "--url-template",
        "--template",
        dest="url_template",
        help="e.g. 'https://menu.example/?t={n}'",
    )
    content.add_argument("--text-template")
    sub.add_argument("--first", type=int, default=1, help="the first number (1)")
    sub.add_argument("--count", type=int, required=True, help="how many, 1 to 1000")
    sub.add_argument("--request-id", help="a key that makes a retry safe")
    sub.add_argument("--json", action="store_true", help="print the codes as JSON")
    _add_style(sub)

    sub = command("list", cmd_list, "list your codes: id, kind, title, text")
    sub.add_argument("--filter", help='e.g. \'title:"table" AND kind = "url"\'')
    sub.add_argument("--order-by", help="create_time, update_time or title [desc]")
    sub.add_argument("--limit", type=_count, help="show at most this many")
    sub.add_argument("--page-size", type=_count, default=0, help=argparse.SUPPRESS)
    sub.add_argument("--json", action="store_true", help="print the codes as JSON")

    sub = command("get", cmd_get, "show one code")
    sub.add_argument("id", metavar="ID")
    sub.add_argument("--json", action="store_true", help="print the code as JSON")

    sub = command("delete", cmd_delete, "delete one code")
    sub.add_argument("id", metavar="ID")
    sub.add_argument("--etag", help="only if the code still has this etag")

    sub = command("render", cmd_render, "draw a code into a file")
    sub.add_argument("id", metavar="ID")
    sub.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="FILE",
        help="the file, or - for stdout",
    )
    sub.add_argument(
        "--format",
        type=str.lower,
        choices=IMAGE_FORMATS,
        help="default: from the file's extension",
    )
    sub.add_argument("--scale", type=_count, default=0, help="pixels per module (10)")
    sub.add_argument("--border", type=_count, metavar="MODULES", help="quiet zone")

    sub = command("export", cmd_export, "draw codes into a directory, one file each")
    sub.add_argument("ids", nargs="*", metavar="ID", help="default: every code")
    sub.add_argument(
        "--format", type=str.lower, choices=IMAGE_FORMATS, default="png", help="(png)"
    )
    sub.add_argument(
        "-o", "--output", required=True, metavar="DIR", help="created if missing"
    )
    sub.add_argument("--scale", type=_count, default=0, help="pixels per module (10)")
    sub.add_argument("--border", type=_count, metavar="MODULES", help="quiet zone")
    sub.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``qrsys`` with ``argv`` (default ``sys.argv[1:]``); return the exit
    status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    ctx: Context | None = None
    try:
        ctx = Context(args, CredentialStore.default())
        result: int = args.run(ctx, sys.stdout)
    except CliError as error:
        print(f"{PROG}: error: {error.message}", file=sys.stderr)
        return error.exit_code
    except QrsysError as error:
        server = ctx.server if ctx is not None else "the server"
        print(f"{PROG}: error: {describe_error(error, server)}", file=sys.stderr)
        return exit_code_of(error)
    except ValueError as error:
        print(f"{PROG}: error: {one_line(str(error))}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    return result


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that flushing it at exit, after its
    reader went away, raises nothing more."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, io.UnsupportedOperation):
        pass  # not a real file (a test's capture): nothing is left to flush


if __name__ == "__main__":
    sys.exit(main())
