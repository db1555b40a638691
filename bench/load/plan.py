"""What the parent tells a client worker process, and what a worker says back.

Parent and workers talk in JSON lines: the parent writes a :class:`WorkerPlan`
then ``go`` on the worker's stdin; the worker writes ``progress``, ``ready``
and finally ``result`` on its stdout (its stderr is the parent's, for
tracebacks). Times on the wire are ``time.monotonic()`` values, which are the
same clock in every process of the machine (``CLOCK_MONOTONIC``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Account:
    """A registered, logged-in user: its token opens any number of sessions."""

    user_id: int
    username: str
    token: str


@dataclass(frozen=True)
class ConnectionPlan:
    """One WebSocket: whose it is, and (if it sends) the ``send`` fields that address its messages.

    *send_to* is the addressing part of a ``send`` body (``{"to": "bob"}`` for
    1:1); ``None`` for a connection that only listens. *recipients* is how many
    pushes one of its messages should cause.
    """

    account: Account
    send_to: dict[str, Any] | None = None
    recipients: int = 0


@dataclass(frozen=True)
class WorkerPlan:
    """Everything a worker needs: where to connect, its connections, and how to behave.

    *rate_per_connection* set means open-loop sending at that rate (messages
    per second per sending connection); ``None`` with *window* means flat out
    with at most *window* unacked messages per connection. *ping* is how a
    quiet connection keeps its session: ``json`` (a ``ping`` frame, as a
    browser must), ``websocket`` (a WebSocket ping control frame, as a native
    client may) or ``none``.
    """

    worker: int
    url: str
    scenario: str
    run_tag: str
    connections: list[ConnectionPlan]
    window: int = 1
    rate_per_connection: float | None = None
    max_in_flight: int = 256
    body_size: int = 100
    connect_rate: float = 200.0
    connect_concurrency: int = 100
    connect_timeout: float = 60.0
    ack_timeout: float = 10.0
    drain_timeout: float = 30.0
    recv_ack_interval: float = 1.0
    ping: str = "json"
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({"type": "plan", **asdict(self)})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WorkerPlan:
        fields = {key: value for key, value in data.items() if key != "type"}
        fields["connections"] = [
            ConnectionPlan(Account(**c["account"]), c.get("send_to"), int(c.get("recipients", 0)))
            for c in fields["connections"]
        ]
        return cls(**fields)


@dataclass
class WorkerResult:
    """What one worker saw, in wire form (lists for the records: see :mod:`bench.load.stats`)."""

    worker: int
    sent: list[list[Any]]
    received: list[list[Any]]
    counters: dict[str, int]
    send_lag_ms: list[float]
    connected: int
    cpu_seconds: float
    window_cpu_seconds: float
    max_rss_bytes: int
    seq_gaps: int
    out_of_order: int

    def to_json(self) -> str:
        return json.dumps({"type": "result", **asdict(self)}, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WorkerResult:
        return cls(**{key: value for key, value in data.items() if key != "type"})
