"""The scenarios of ``python -m bench``: who connects, who sends to whom, and what is reported.

A scenario is planned in the parent process: it says how many users it needs
for its connections, turns the registered accounts into
:class:`~bench.load.plan.ConnectionPlan` values grouped in *units* (a unit
stays in one client worker), and may prepare server-side state first. The
workers then behave the same for every scenario: a connection with a
``send_to`` sends (flat out with a window, or at a fixed rate), every
connection reads its pushes and keeps its session alive with ``ping``.

Adding a scenario (the ``group`` fan-out, once groups exist in the protocol):

1. subclass :class:`Scenario` with ``name = "group"`` and ``sends = True``;
2. in :meth:`Scenario.prepare`, create the groups over the protocol with the
   accounts (for example one member per group opening a WebSocket and sending
   the group-creation frame), and return what :meth:`Scenario.plan` needs;
3. in :meth:`Scenario.plan`, give each sending member ``send_to`` (the
   addressing fields of a group ``send``) and ``recipients`` (members minus
   the sender, times their sessions), and the others ``send_to=None``;
   recipients may sit in other workers: the parent joins pushes to sends by
   (sender, client_msg_id) across workers, and push latency travels in the body;
4. add it to :data:`SCENARIOS`; ``--scenario group`` then works, and the
   loss check, the latency figures and the plot come for free.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

from bench.load.plan import Account, ConnectionPlan


@dataclass(frozen=True)
class ScenarioOptions:
    """The command-line settings a scenario plans with."""

    connections: int
    sessions_per_user: int
    rate: float
    window: int


@dataclass(frozen=True)
class SetupContext:
    """What :meth:`Scenario.prepare` may use: the gateway's addresses and the registered accounts."""

    http_base: str
    ws_url: str
    accounts: list[Account]


class Scenario(ABC):
    """How connections are laid out and whether they send; see the module docstring to add one."""

    name: ClassVar[str]
    description: ClassVar[str]
    #: Whether connections send messages (then the run checks loss and latency).
    sends: ClassVar[bool]
    #: Whether the idle figures (RSS per connection, heartbeat CPU) are the point of the run.
    idle_figures: ClassVar[bool] = False

    def users_needed(self, options: ScenarioOptions) -> int:
        """How many users to register for ``options.connections`` connections (one each by default)."""
        return options.connections

    async def prepare(self, context: SetupContext) -> dict[str, Any]:
        """Server-side setup after registration (groups, ...); what :meth:`plan` gets as *prepared*."""
        return {}

    @abstractmethod
    def plan(
        self, accounts: list[Account], options: ScenarioOptions, prepared: dict[str, Any]
    ) -> list[list[ConnectionPlan]]:
        """The connections, in units that must stay in one worker."""

    def rate_per_connection(self, options: ScenarioOptions, senders: int) -> float | None:
        """Messages per second per sending connection (open loop), or ``None`` for flat out."""
        return None


class OneToOne(Scenario, ABC):
    """Users in pairs, each sending to the other: every conversation has two senders contending for its seq."""

    sends = True

    def plan(
        self, accounts: list[Account], options: ScenarioOptions, prepared: dict[str, Any]
    ) -> list[list[ConnectionPlan]]:
        if len(accounts) < 2 or len(accounts) % 2:
            raise ValueError(f"{self.name} needs an even number of users, at least 2 (got {len(accounts)})")
        units: list[list[ConnectionPlan]] = []
        for a, b in zip(accounts[0::2], accounts[1::2], strict=True):
            units.append(
                [
                    ConnectionPlan(a, send_to={"to": b.username}, recipients=1),
                    ConnectionPlan(b, send_to={"to": a.username}, recipients=1),
                ]
            )
        return units


class Flat(OneToOne):
    name = "flat"
    description = "1:1 pairs, flat out: each connection keeps --window messages unacked"


class Rate(OneToOne):
    name = "rate"
    description = "1:1 pairs at a fixed total --rate (messages per second), open loop"

    def rate_per_connection(self, options: ScenarioOptions, senders: int) -> float | None:
        return options.rate / senders


class Idle(Scenario):
    name = "idle"
    description = "connections that only authenticate and ping: gateway RSS per connection and heartbeat CPU"
    sends = False
    idle_figures = True

    def users_needed(self, options: ScenarioOptions) -> int:
        return max(1, math.ceil(options.connections / options.sessions_per_user))

    def plan(
        self, accounts: list[Account], options: ScenarioOptions, prepared: dict[str, Any]
    ) -> list[list[ConnectionPlan]]:
        if not accounts:
            raise ValueError("idle needs at least one user")
        return [[ConnectionPlan(accounts[i % len(accounts)])] for i in range(options.connections)]


#: Every scenario ``--scenario`` accepts, by name.
SCENARIOS: dict[str, type[Scenario]] = {scenario.name: scenario for scenario in (Flat, Rate, Idle)}


def split_units(units: list[list[ConnectionPlan]], workers: int) -> list[list[ConnectionPlan]]:
    """Deal *units* round-robin over *workers* lists of connections (a unit is never split)."""
    if workers < 1:
        raise ValueError("workers must be at least 1")
    parts: list[list[ConnectionPlan]] = [[] for _ in range(workers)]
    for i, unit in enumerate(units):
        parts[i % workers].extend(unit)
    return parts
