"""``twistd gochat-gateway``: options in, a frozen config, then :func:`gochat.gateway.service.build`.

With ``--logic embedded`` (the default) the gateway runs the logic role in
the same process on SQLite: the whole chat with no other service.
"""

from __future__ import annotations

import pathlib

from twisted.application.service import IService
from twisted.python import usage

from gochat.gateway.service import EMBEDDED, GatewayConfig, build, default_gateway_id
from gochat.gateway.session import SessionLimits
from gochat.gateway.websocket import parse_origin
from gochat.logic.service import LogicConfig


class Options(usage.Options):
    """Command-line options of the gateway role."""

    optParameters = [
        [
            "listen",
            None,
            "tcp:8080",
            "Twisted endpoint to serve HTTP and WebSocket on (e.g. tcp:8080, "
            "ssl:8443:privateKey=key.pem:certKey=cert.pem, unix:/run/gochat.sock).",
        ],
        ["public-url", None, "ws://localhost:8080/ws", "The WebSocket URL clients use (for the handshake)."],
        [
            "logic",
            None,
            EMBEDDED,
            "'embedded' to run logic in this process on SQLite, or host:port of a gochat-logic gRPC server.",
        ],
        ["gateway-id", None, None, "Unique id of this gateway (default: hostname-pid)."],
        [
            "broker",
            None,
            "none",
            "amqp://user:password@host:port/vhost to take deliveries from this gateway's own queue "
            "(needed when logic runs with a broker), or 'none' to take them from logic.",
        ],
        ["data-dir", None, "gochat-data", "Embedded logic only: directory for the database and token secret."],
        ["auth-timeout", None, 10.0, "Seconds a connection may take to authenticate.", float],
        ["idle-timeout", None, 60.0, "Seconds without a frame before a session is closed.", float],
        ["max-frame-bytes", None, 65536, "Largest WebSocket message accepted.", int],
        ["max-body-chars", None, 8192, "Largest message body accepted.", int],
        [
            "max-backlog-bytes",
            None,
            1 << 20,
            "Bytes queued for a client that is not reading before it is closed as a slow consumer.",
            int,
        ],
        [
            "max-sends-in-flight",
            None,
            2000,
            "Messages waiting for logic at which the connections sending more stop being read until half are answered.",
            int,
        ],
        ["frames-per-second", None, 50.0, "Sustained frames per second per connection.", float],
        ["frame-burst", None, 100, "Burst of frames per connection above the sustained rate.", int],
        ["wheel-tick", None, 0.5, "Seconds per tick of the timing wheel.", float],
        [
            "route-refresh",
            None,
            30.0,
            "Seconds between reports of this gateway's live sessions to logic (keep under a third of the route TTL).",
            float,
        ],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["allowed-origin"] = []

    def opt_allowed_origin(self, origin: str) -> None:
        """Also let pages of ORIGIN (scheme://host[:port], or *) open the WebSocket; repeatable. Own page: always."""
        if origin != "*":
            try:
                parse_origin(origin)
            except ValueError as e:
                raise usage.UsageError(f"--allowed-origin: {e}") from None
        self["allowed-origin"].append(origin)


def config_from_options(options: Options) -> GatewayConfig:
    """The frozen config the options describe."""
    limits = SessionLimits(
        auth_timeout=options["auth-timeout"],
        idle_timeout=options["idle-timeout"],
        max_body_length=options["max-body-chars"],
        frames_per_second=options["frames-per-second"],
        frame_burst=options["frame-burst"],
    )
    return GatewayConfig(
        listen=options["listen"],
        public_url=options["public-url"],
        logic=options["logic"],
        gateway_id=options["gateway-id"] or default_gateway_id(),
        broker=None if options["broker"] in ("", "none") else options["broker"],
        limits=limits,
        max_frame_bytes=options["max-frame-bytes"],
        max_backlog_bytes=options["max-backlog-bytes"],
        max_sends_in_flight=options["max-sends-in-flight"],
        wheel_tick=options["wheel-tick"],
        route_refresh=options["route-refresh"],
        allowed_origins=tuple(options["allowed-origin"]),
        embedded_logic=LogicConfig(data_dir=pathlib.Path(options["data-dir"]), grpc_listen=None),
    )


def makeService(options: Options) -> IService:
    """Build the gateway role on the global reactor."""
    from twisted.internet import reactor

    return build(config_from_options(options), reactor)
