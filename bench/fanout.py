"""Group fan-out: the time from one send to the last of N online members' push.

Starts the servers on free 127.0.0.1 ports (``--mode embedded``: one
``twistd gochat-gateway`` on SQLite; ``--mode production``: ``twistd
gochat-logic`` on MariaDB, RabbitMQ and Redis behind ``twistd gochat-gateway``,
with a database, queues and keys of their own, removed afterwards), registers an owner and *members* users
over the HTTP API, connects them all with the ``websockets`` library (an
implementation independent of the server's Autobahn), creates one group and
sends *messages* messages into it one after another. For each message it
records when the owner sent it, when its ack came back, and when each member's
push arrived; the figure is the time to the last member, the time the whole
group waits. (That the payload is framed once per gateway whatever the group
size is shown by tests/test_gateway_groups.py, which counts the encodings.)

Clients and server share the two cores, so the time to the last member
includes the clients' own reading of N frames: it is an upper bound on the
server's fan-out time.

    python -m bench.fanout --members 1000 --messages 30 --json > bench/results/fanout.json
    python -m bench.fanout --members 1000 --messages 30 --mode production --json > bench/results/fanout-production.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import websockets

from bench.chaos import account, machine
from bench.load.servers import Deployment

HOST = "127.0.0.1"
#: Registrations and logins at once: scrypt runs on the server's thread pool, two cores.
ACCOUNT_CONCURRENCY = 8
#: Seconds any one step may take before the run gives up.
STEP_TIMEOUT = 120.0


def log(message: str) -> None:
    print(f"[fanout {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def percentile(values: Sequence[float], fraction: float) -> float:
    """The *fraction* quantile by nearest rank (values need not be sorted)."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * len(ordered) + 0.5) - 1))
    return ordered[index]


class Member:
    """One connected user: reads every frame and notes when each group seq arrived."""

    def __init__(self, name: str, connection: Any) -> None:
        self.name = name
        self.connection = connection
        self.arrivals: dict[int, float] = {}
        self.acks: dict[str, tuple[int, float]] = {}
        self.replies: dict[str, dict[str, Any]] = {}
        self.arrived = asyncio.Event()
        self.duplicates = 0

    async def read(self) -> None:
        async for raw in self.connection:
            now = time.perf_counter()
            frame = json.loads(raw)
            kind, body = frame["type"], frame["body"]
            if kind == "push" and body["conv"].startswith("g:"):
                if body["seq"] in self.arrivals:
                    self.duplicates += 1
                self.arrivals.setdefault(body["seq"], now)
                self.arrived.set()
            elif kind == "ack":
                self.acks[frame["id"]] = (body["seq"], now)
                self.arrived.set()
            elif "id" in frame:
                self.replies[frame["id"]] = frame
                self.arrived.set()

    async def send(self, frame_type: str, body: dict[str, Any], request_id: str) -> None:
        await self.connection.send(json.dumps({"v": 1, "type": frame_type, "id": request_id, "body": body}))

    async def reply(self, request_id: str) -> dict[str, Any]:
        while request_id not in self.replies:
            self.arrived.clear()
            await asyncio.wait_for(self.arrived.wait(), STEP_TIMEOUT)
        return self.replies.pop(request_id)


async def connect(port: int, name: str, token: str) -> Member:
    connection = await websockets.connect(f"ws://{HOST}:{port}/ws", max_size=2**20, ping_interval=None)
    member = Member(name, connection)
    await member.send("auth", {"token": token}, "auth")
    asyncio.get_running_loop().create_task(member.read())
    reply = await member.reply("auth")
    if reply["type"] != "auth_ok":
        raise RuntimeError(f"{name} could not authenticate: {reply}")
    return member


async def wait_all(members: Sequence[Member], seq: int) -> None:
    deadline = time.monotonic() + STEP_TIMEOUT
    for member in members:
        while seq not in member.arrivals:
            if time.monotonic() > deadline:
                missing = sum(1 for m in members if seq not in m.arrivals)
                raise TimeoutError(f"{missing} members never got seq {seq}")
            member.arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(member.arrived.wait(), 1.0)


async def run(options: argparse.Namespace) -> dict[str, Any]:
    deployment = Deployment(
        mode=options.mode,
        run_id=uuid.uuid4().hex[:8],
        workdir=Path(tempfile.mkdtemp(prefix="gochat-fanout-")),
        env=dict(os.environ),
        frames_per_second=1000,
        frame_burst=2000,
    )
    try:
        await deployment.start()
        return await measure(options, deployment.http_port)
    finally:
        await deployment.stop()
        await deployment.clean_up()


async def measure(options: argparse.Namespace, port: int) -> dict[str, Any]:
    base = f"http://{HOST}:{port}"
    names = ["owner"] + [f"member{i:05d}" for i in range(options.members)]
    log(f"registering {len(names)} users")
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(ACCOUNT_CONCURRENCY) as pool:
        accounts = await asyncio.gather(*(loop.run_in_executor(pool, account, base, name) for name in names))
    log("connecting")
    clients: list[Member] = []
    for start in range(0, len(names), 100):
        batch = zip(names[start : start + 100], accounts[start : start + 100], strict=True)
        clients += await asyncio.gather(*(connect(port, name, token) for name, (_, token) in batch))
    owner, members = clients[0], clients[1:]
    await owner.send("group_create", {"name": "fan-out", "members": names[1:]}, "create")
    created = await owner.reply("create")
    if created["type"] != "group_create_ok":
        raise RuntimeError(f"group_create failed: {created}")
    conv = created["body"]["conv"]
    await wait_all(members, 1)
    log(f"group {conv} of {len(clients)} members; sending {options.messages} messages one at a time")
    samples = []
    for i in range(options.messages):
        request_id = f"m{i}"
        sent = time.perf_counter()
        await owner.send("send", {"client_msg_id": request_id, "conv": conv, "body": f"fan-out {i}"}, request_id)
        while request_id not in owner.acks:
            owner.arrived.clear()
            await asyncio.wait_for(owner.arrived.wait(), STEP_TIMEOUT)
        seq, acked = owner.acks[request_id]
        await wait_all(members, seq)
        arrivals = sorted(m.arrivals[seq] - sent for m in members)
        samples.append(
            {
                "seq": seq,
                "ack_ms": (acked - sent) * 1000,
                "first_member_ms": arrivals[0] * 1000,
                "median_member_ms": statistics.median(arrivals) * 1000,
                "last_member_ms": arrivals[-1] * 1000,
            }
        )
    for client in clients:
        await client.connection.close()
    last = [s["last_member_ms"] for s in samples]
    return {
        "benchmark": f"group fan-out, {options.mode}",
        "command": "python -m bench.fanout " + " ".join(sys.argv[1:]),
        "members_online": len(members),
        "messages": len(samples),
        "duplicates": sum(m.duplicates for m in members),
        "time_to_last_member_ms": {
            "p50": statistics.median(last),
            "p90": percentile(last, 0.9),
            "max": max(last),
            "min": min(last),
        },
        "time_to_first_member_ms_p50": statistics.median(s["first_member_ms"] for s in samples),
        "ack_ms_p50": statistics.median(s["ack_ms"] for s in samples),
        "per_member_us_p50": statistics.median(last) * 1000 / len(members),
        "samples": samples,
        "machine": await asyncio.to_thread(machine),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=1000, help="online members besides the sender (<= 5000)")
    parser.add_argument("--messages", type=int, default=30, help="messages sent one after another (<= 1000)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    parser.add_argument(
        "--mode",
        choices=("embedded", "production"),
        default="embedded",
        help="embedded: one gateway process on SQLite; production: gateway and logic on MariaDB, RabbitMQ, Redis",
    )
    options = parser.parse_args(argv)
    if not 1 <= options.members <= 5000 or not 1 <= options.messages <= 1000:
        parser.error("--members must be 1..5000 and --messages 1..1000")
    result = asyncio.run(run(options))
    if options.json:
        print(json.dumps(result, indent=2))
    else:
        print(json.dumps({k: v for k, v in result.items() if k not in ("samples", "machine")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
