"""Compose the gateway role's services from a frozen config.

:func:`build` only composes ``IService`` objects: the HTTP+WebSocket
endpoint, the one ``TimerService`` that drives the hub's timing wheel, the
hub's delivery subscription, and (embedded default) the logic role itself.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from typing import Any

from twisted.application.internet import StreamServerEndpointService, TimerService
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import serverFromString
from twisted.web.resource import Resource
from twisted.web.server import Site

from gochat.gateway.http_api import api_resource
from gochat.gateway.hub import GatewayHub
from gochat.gateway.logic_client import ILogicClient, LocalLogicClient
from gochat.gateway.session import SessionLimits
from gochat.gateway.web import web_client_root
from gochat.gateway.websocket import GatewayFactory, GatewayWebSocketResource
from gochat.lifecycle import StopInReverse
from gochat.logic import service as logic_service

EMBEDDED = "embedded"


def default_gateway_id() -> str:
    """Unique per process: host name and pid."""
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True)
class GatewayConfig:
    """Everything the gateway role is configured with."""

    listen: str = "tcp:8080"
    public_url: str = "ws://localhost:8080/ws"
    logic: str = EMBEDDED
    gateway_id: str = field(default_factory=default_gateway_id)
    limits: SessionLimits = field(default_factory=SessionLimits)
    max_frame_bytes: int = 64 * 1024
    max_backlog_bytes: int = 1 << 20
    #: Sends waiting for logic at which senders stop being read (see :mod:`gochat.gateway.admission`).
    max_sends_in_flight: int = 2000
    route_refresh: float = 30.0
    wheel_tick: float = 0.5
    wheel_slots: int = 512
    broker: str | None = None
    #: Web origins (``scheme://host[:port]``, or ``*``) whose pages may open the WebSocket besides the gateway's own.
    allowed_origins: tuple[str, ...] = ()
    embedded_logic: logic_service.LogicConfig = field(
        default_factory=lambda: logic_service.LogicConfig(grpc_listen=None)
    )


class HubService(Service):
    """Subscribes the hub to its deliveries at start; at stop, closes every session and waits for them."""

    def __init__(self, hub: GatewayHub, reactor: Any, drain_timeout: float) -> None:
        self._hub = hub
        self._reactor = reactor
        self._drain_timeout = drain_timeout

    def startService(self) -> None:
        super().startService()
        self._hub.start()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        self._hub.stop()
        if not self._hub.live_sessions:
            return succeed(None)
        drained = self._hub.when_drained()

        def give_up() -> None:
            if not drained.called:
                drained.callback(None)

        timeout = self._reactor.callLater(self._drain_timeout, give_up)
        drained.addBoth(lambda _: timeout.cancel() if timeout.active() else None)
        return drained


class _ClientCloser(Service):
    """Closes a remote logic client's channel when the gateway stops."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def stopService(self) -> None:
        super().stopService()
        self._client.close()


def _site(logic: ILogicClient, factory: GatewayFactory, reactor: Any) -> Site:
    """The gateway's HTTP site: the web client at ``/``, the JSON API at ``/api``, the WebSocket at ``/ws``."""
    root: Resource = web_client_root()
    root.putChild(b"api", api_resource(logic))
    root.putChild(b"ws", GatewayWebSocketResource(factory))
    return Site(root, reactor=reactor)


def build(config: GatewayConfig, reactor: Any, logic: ILogicClient | None = None) -> MultiService:
    """Compose the gateway; *logic* overrides the client the config names (tests)."""
    top = StopInReverse()
    if logic is None:
        if config.logic == EMBEDDED:
            embedded = logic_service.build(config.embedded_logic, reactor)
            embedded.setServiceParent(top)
            logic = LocalLogicClient(embedded.chat)
        else:
            from gochat.grpc_bridge import GrpcLogicClient

            client = GrpcLogicClient(config.logic, reactor)
            _ClientCloser(client).setServiceParent(top)
            logic = client
    deliveries: Any = None
    if config.broker is not None:
        from gochat.logic.amqp import AmqpBus
        from gochat.logic.amqp_delivery import AmqpDeliveryBus, gateway_queue_spec

        bus = AmqpBus(reactor, logic_service.amqp_settings(config.broker), [gateway_queue_spec(config.gateway_id)])
        bus.setServiceParent(top)
        deliveries = AmqpDeliveryBus(bus)
    factory = GatewayFactory(
        reactor, config.public_url, config.max_frame_bytes, config.max_backlog_bytes, config.allowed_origins
    )
    hub = GatewayHub(
        config.gateway_id,
        logic,
        reactor,
        config.limits,
        prepare=factory.prepare,
        wheel_tick=config.wheel_tick,
        wheel_slots=config.wheel_slots,
        deliveries=deliveries,
        route_refresh=config.route_refresh,
        max_sends_in_flight=config.max_sends_in_flight,
    )
    factory.hub = hub
    heartbeat = TimerService(config.wheel_tick, hub.tick)
    heartbeat.clock = reactor
    heartbeat.setServiceParent(top)
    HubService(hub, reactor, config.limits.close_timeout + 1.0).setServiceParent(top)
    endpoint = serverFromString(reactor, config.listen)
    listener = StreamServerEndpointService(endpoint, _site(logic, factory, reactor))
    # Fail start-up when the address cannot be bound, as strports.service does.
    listener._raiseSynchronously = True
    listener.setServiceParent(top)
    top.hub = hub  # type: ignore[attr-defined]
    return top
