"""Which real services an integration test needs, checked from ``setUp``.

A test that needs MariaDB, Redis or RabbitMQ calls :func:`require_service`
first. When the service does not answer, the test is skipped with the reason,
unless ``GOCHAT_REQUIRE_SERVICES=1`` (as ``.ci/run`` sets), in which case it
fails with the same message: CI must not go green by skipping.
"""

from __future__ import annotations

import os
import socket
import unittest

#: How long a service gets to accept a TCP connection.
CONNECT_TIMEOUT = 1.0


def services_required() -> bool:
    """Whether a missing service fails the tests instead of skipping them (``GOCHAT_REQUIRE_SERVICES=1``)."""
    return os.environ.get("GOCHAT_REQUIRE_SERVICES") == "1"


def require_service(name: str, host: str, port: int) -> None:
    """Skip the calling test unless *name* accepts a TCP connection at *host*:*port* within a second.

    Raises :class:`unittest.SkipTest` (which trial and pytest both honour), or
    :class:`AssertionError` when ``GOCHAT_REQUIRE_SERVICES=1``. A blocking
    connect: meant for ``setUp``, before the test starts the reactor's work.
    """
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT):
            return
    except OSError as e:
        reason = f"{name} not reachable at {host}:{port}"
        if services_required():
            raise AssertionError(f"{reason} ({e}; GOCHAT_REQUIRE_SERVICES=1 requires it)") from e
        raise unittest.SkipTest(reason) from e
