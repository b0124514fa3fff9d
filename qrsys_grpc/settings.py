"""Every QRSYS_* environment variable, typed and validated once at start-up."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Literal

import sqlalchemy as sa
from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MIN_SECRET_BYTES = 32

MAX_WORKERS = 64
MAX_PORT = 65535

MIN_MESSAGE_BYTES = 2 * 1024 * 1024
"""Room for qrsys's largest single answer: a batch of 256 KiB of content
(sent twice, as content and encoded_text) with its titles, or a render."""


def default_migrations_dir() -> Path:
    """The alembic revisions: ``migrations/`` of a source checkout, else the
    copy an installed package keeps under ``<prefix>/share/qrsys``."""
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "pyproject.toml").is_file() and (
        checkout / "migrations" / "env.py"
    ).is_file():
        return checkout / "migrations"
    return Path(sys.prefix) / "share" / "qrsys" / "migrations"


class Settings(BaseSettings):
    """The server's configuration, read from ``QRSYS_*`` variables."""

    model_config = SettingsConfigDict(env_prefix="QRSYS_", extra="ignore")

    listen_address: str = "127.0.0.1:50051"
    database_url: str | None = None
    data_dir: Path = Path(".qrsys")
    migrations_dir: Path = Field(default_factory=default_migrations_dir)

    jwt_secret: SecretStr | None = None
    jwt_secret_file: Path | None = None
    jwt_keys_dir: Path | None = None
    jwt_signing_kid: str | None = None
    jwt_issuer: str = "qrsys"
    jwt_audience: str = "qrsys"
    access_token_ttl_seconds: int = Field(default=900, ge=30, le=86_400)
    refresh_token_ttl_seconds: int = Field(default=30 * 86_400, ge=60)

    refresh_reuse_grace_seconds: float = Field(default=10.0, ge=0, le=300)
    login_free_failures_per_account: int = Field(default=5, ge=1)
    login_free_failures_per_address: int = Field(default=50, ge=1)
    login_max_delay_seconds: int = Field(default=900, ge=1)

    db_pool_size: int = Field(default=10, ge=1, le=200)
    db_statement_timeout_seconds: float = Field(default=10.0, gt=0)
    blocking_threads: int = Field(default=4, ge=1, le=64)
    render_processes: int = Field(
        default_factory=lambda: min(4, os.cpu_count() or 1), ge=0, le=64
    )
    render_cache_bytes: int = Field(default=64 * 1024 * 1024, ge=1024 * 1024)
    session_cache_entries: int = Field(default=50_000, ge=0)
    grace_period_seconds: float = Field(default=10.0, ge=0)
    # At least the largest single answer (a full batch, a render) needs.
    max_message_bytes: int = Field(
        default=8 * 1024 * 1024, ge=MIN_MESSAGE_BYTES, le=1024 * 1024 * 1024
    )

    max_concurrent_rpcs: int = Field(default=0, ge=0)
    keepalive_time_seconds: float = Field(default=60.0, gt=0)
    keepalive_timeout_seconds: float = Field(default=20.0, gt=0)
    keepalive_min_client_interval_seconds: float = Field(default=10.0, gt=0)
    health_check_interval_seconds: float = Field(default=2.0, gt=0)
    db_connect_timeout_seconds: float = Field(default=3.0, gt=0)

    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_client_ca_file: Path | None = None

    workers: int = Field(default=1, ge=1, le=MAX_WORKERS)
    metrics_address: str = ""
    tracing: Literal["off", "otlp", "console"] = "off"
    log_format: Literal["text", "json"] = "text"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("jwt_secret")
    @classmethod
    def _secret_long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().encode()) < (
            MIN_SECRET_BYTES
        ):
            raise ValueError(f"must be at least {MIN_SECRET_BYTES} bytes")
        return value

    @model_validator(mode="after")
    def _tls_files_come_in_pairs(self) -> Settings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("set both QRSYS_TLS_CERT_FILE and QRSYS_TLS_KEY_FILE")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("QRSYS_TLS_CLIENT_CA_FILE needs QRSYS_TLS_CERT_FILE")
        return self

    @field_validator("migrations_dir")
    @classmethod
    def _migrations_exist(cls, value: Path) -> Path:
        if not (value / "env.py").is_file():
            raise ValueError(f"{value} holds no alembic revisions (no env.py)")
        return value

    @field_validator("database_url")
    @classmethod
    def _empty_url_is_unset(cls, value: str | None) -> str | None:
        if not value:
            return None
        try:
            url = sa.make_url(value)
        except sa.exc.ArgumentError as exc:
            raise ValueError("is not a database URL") from exc
        if url.get_backend_name() not in ("postgresql", "postgres"):
            raise ValueError(
                f"must be a postgresql:// URL, not {url.get_backend_name()}://"
            )
        return value

    @field_validator("listen_address", "metrics_address")
    @classmethod
    def _host_and_port(cls, value: str, info: ValidationInfo) -> str:
        if not value and info.field_name == "metrics_address":
            return value  # off
        host, colon, port = value.rpartition(":")
        digits = port.isascii() and port.isdigit()
        if not colon or not host or not digits or int(port) > MAX_PORT:
            raise ValueError(f"must be host:port with a port of 0 to {MAX_PORT}")
        return value
