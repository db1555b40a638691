"""Tests over real sockets, real processes and real services.

Each test says what it needs. A test that needs MariaDB, Redis or RabbitMQ is
skipped with the reason when the service is unreachable, and fails instead
when ``GOCHAT_REQUIRE_SERVICES=1`` (as ``.ci/run`` sets).
"""
