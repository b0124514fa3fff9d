"""TLS and mutual TLS for the gRPC port, from PEM files that may be replaced.

The files are read again whenever one of them changes, at the next new
connection: renewing a certificate needs no restart. Connections already
open keep the certificate they started with.
"""

from __future__ import annotations

import logging
from pathlib import Path

import grpc

logger = logging.getLogger(__name__)


class ReloadingCredentials:
    """Server credentials that follow changes to their PEM files."""

    def __init__(self, cert: Path, key: Path, client_ca: Path | None) -> None:
        self._cert = cert
        self._key = key
        self._client_ca = client_ca
        self._stamp = self._file_stamp()

    def _files(self) -> list[Path]:
        return [p for p in (self._cert, self._key, self._client_ca) if p is not None]

    def _file_stamp(self) -> tuple[tuple[int, int], ...]:
        return tuple((f.stat().st_mtime_ns, f.stat().st_size) for f in self._files())

    def _configuration(self) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration(
            [(self._key.read_bytes(), self._cert.read_bytes())],
            root_certificates=(
                self._client_ca.read_bytes() if self._client_ca is not None else None
            ),
        )

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """Called by gRPC before each handshake: a new configuration or None."""
        try:
            stamp = self._file_stamp()
            if stamp == self._stamp:
                return None
            configuration = self._configuration()
        except OSError:
            logger.exception("cannot read the TLS files; keeping the old ones")
            return None
        self._stamp = stamp
        logger.info("reloaded the TLS certificate from %s", self._cert)
        return configuration

    def server_credentials(self) -> grpc.ServerCredentials:
        """Credentials for ``add_secure_port``.

        Raises:
            OSError: a file cannot be read.
        """
        # gRPC's fetcher contract allows None for "unchanged"; the type
        # stubs say otherwise.
        return grpc.dynamic_ssl_server_credentials(
            self._configuration(),
            self._fetch,  # type: ignore[arg-type]
            require_client_authentication=self._client_ca is not None,
        )
