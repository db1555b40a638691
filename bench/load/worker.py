"""A client worker process of the load generator: ``python -m bench.load.worker``, driven by the parent.

It reads a :class:`~bench.load.plan.WorkerPlan` on stdin, opens its
connections (paced, a bounded number of handshakes at a time), reports
``progress`` then ``ready`` on stdout, waits for ``go`` (the run's start and
end as ``time.monotonic()`` values), sends until the end, drains (waits for
the acks and pushes still on their way, bounded), writes its ``result`` and
exits once told ``close`` (or when stdin closes). Several workers share the
load when one Python process cannot keep up, and keep each process under the
open-files limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import random
import resource
import sys
from collections import Counter
from typing import Any

from bench.load.client import Client, Outgoing
from bench.load.plan import WorkerPlan, WorkerResult
from bench.load.stats import ReceivedRecord

#: How often the connect phase reports progress (seconds).
PROGRESS_EVERY = 0.5
#: Slices of the clients served in turn by the ticker (see :meth:`WorkerRun._ticker`).
TICK_SLICES = 10


def raise_open_files_limit() -> int:
    """Raise this process's soft open-files limit to the hard one; the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def emit(message: dict[str, Any]) -> None:
    """One JSON line to the parent."""
    sys.stdout.write(json.dumps(message, separators=(",", ":")) + "\n")
    sys.stdout.flush()


class WorkerRun:
    """The connections of one worker and what they saw."""

    def __init__(self, plan: WorkerPlan) -> None:
        self.plan = plan
        self.url = plan.url
        self.counters: Counter[str] = Counter()
        self.start = 0.0
        self.ack_timeout = plan.ack_timeout
        self.connect_timeout = plan.connect_timeout
        self.body_size = plan.body_size
        self.received: list[ReceivedRecord] = []
        self.send_lag_ms: list[float] = []
        self.expected_deliveries = 0
        self.clients: list[Client] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.window_cpu = 0.0
        rng = random.Random(plan.seed)
        slots = plan.window if plan.rate_per_connection is None else plan.max_in_flight
        for i, connection in enumerate(plan.connections):
            tag = f"{plan.run_tag}.{plan.worker}.{i}"
            self.clients.append(Client(self, connection, tag, slots, random.Random(rng.random())))

    def message_final(self, client: Client, message: Outgoing) -> None:
        client.slots.release()
        if message.msg_id is not None:
            self.expected_deliveries += message.recipients

    # Connect phase.

    async def open_connections(self) -> int:
        """Start every client, paced at ``connect_rate``; the number authenticated once all have an outcome."""
        loop = asyncio.get_running_loop()
        limit = asyncio.Semaphore(self.plan.connect_concurrency)
        interval = 1.0 / self.plan.connect_rate
        next_at = loop.time()
        reporter = asyncio.create_task(self._report_progress())
        try:
            for client in self.clients:
                await limit.acquire()
                delay = next_at - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                next_at = max(next_at + interval, loop.time() - 1.0)
                client.first_outcome.add_done_callback(lambda _: limit.release())
                self.tasks.append(asyncio.create_task(client.run_forever()))
            await asyncio.gather(*(client.first_outcome for client in self.clients))
        finally:
            reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reporter
        return self.connected()

    def connected(self) -> int:
        return sum(1 for c in self.clients if c.first_outcome.done() and c.first_outcome.result())

    def failed(self) -> int:
        return sum(1 for c in self.clients if c.first_outcome.done() and not c.first_outcome.result())

    async def _report_progress(self) -> None:
        while True:
            emit({"type": "progress", "connected": self.connected(), "failed": self.failed()})
            await asyncio.sleep(PROGRESS_EVERY)

    # Traffic.

    async def traffic(self, start: float, deadline: float) -> None:
        """Send from ``start`` to ``deadline`` (idle connections just ping), then drain."""
        loop = asyncio.get_running_loop()
        self.start = start
        ticker = asyncio.create_task(self._ticker())
        # The records pile up through the run, and a full collection over them stalled this process for up
        # to 80 ms, which showed up as server latency. They hold no cycles: collect now, keep what exists out
        # of later collections, and collect nothing until the books are written.
        gc.collect()
        gc.freeze()
        gc.disable()
        try:
            delay = start - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            cpu_start = cpu_seconds()
            senders = [
                asyncio.create_task(self._send(client, start, deadline))
                for client in self.clients
                if client.plan.send_to is not None and client.first_outcome.result()
            ]
            await asyncio.sleep(max(0.0, deadline - loop.time()))
            self.window_cpu = cpu_seconds() - cpu_start
            await asyncio.gather(*senders)
            if not await self._drain(loop.time() + self.plan.drain_timeout):
                await self._final_sync()
        finally:
            gc.enable()
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker

    async def _send(self, client: Client, start: float, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        rate = self.plan.rate_per_connection
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(deadline):
                if rate is None:
                    while True:
                        await client.slots.acquire()
                        await client.ready.wait()
                        await client.transmit(client.new_message(loop.time()))
                interval = 1.0 / rate
                next_at = start + client.rng.uniform(0.0, interval)
                while True:
                    delay = next_at - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    await client.slots.acquire()
                    await client.ready.wait()
                    now = loop.time()
                    self.send_lag_ms.append((now - next_at) * 1000.0)
                    await client.transmit(client.new_message(now))
                    next_at += interval

    async def _ticker(self) -> None:
        """Pings, recv_acks and the resend of overdue messages, for every client once per period.

        The clients are dealt into :data:`TICK_SLICES` slices served one after
        the other through the period, so that their recv_acks and pings are
        spread over time as those of independent clients would be, rather than
        arriving at the server in one burst per period.
        """
        loop = asyncio.get_running_loop()
        interval = self.plan.recv_ack_interval
        period = interval if 0 < interval < 1.0 else 1.0
        tick = 0
        while True:
            await asyncio.sleep(period / TICK_SLICES)
            now = loop.time()
            for client in self.clients[tick % TICK_SLICES :: TICK_SLICES]:
                client.tick(now, interval > 0, self.plan.ping)
                for message in client.overdue(now):
                    self.counters["ack_timeouts"] += 1
                    client.retry_later(message, 0.0)
            tick += 1

    async def _drain(self, until: float) -> bool:
        """Wait for every message to be acked (or refused) and every expected push; False if *until* came first."""
        loop = asyncio.get_running_loop()
        while loop.time() < until:
            unacked = sum(len(c.unacked) for c in self.clients)
            if unacked == 0 and len(self.received) >= self.expected_deliveries:
                return True
            await asyncio.sleep(0.05)
        self.counters["drain_timeouts"] += 1
        return False

    async def _final_sync(self) -> None:
        """Every client syncs what it was not pushed: late deliveries are told apart from lost ones."""
        self.counters["final_syncs"] += 1
        for client in self.clients:
            client.books_closed = True
        limit = asyncio.Semaphore(50)

        async def one(client: Client) -> None:
            async with limit:
                try:
                    await client.final_sync()
                except (ConnectionError, TimeoutError):
                    self.counters["final_sync_failures"] += 1

        await asyncio.gather(*(one(client) for client in self.clients))

    def result(self) -> WorkerResult:
        sent = [record.to_wire() for client in self.clients for record in client.sent_records()]
        return WorkerResult(
            worker=self.plan.worker,
            sent=sent,
            received=[record.to_wire() for record in self.received],
            counters=dict(self.counters),
            send_lag_ms=[round(lag, 3) for lag in self.send_lag_ms],
            connected=self.connected(),
            cpu_seconds=round(cpu_seconds(), 3),
            window_cpu_seconds=round(self.window_cpu, 3),
            max_rss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            seq_gaps=sum(client.seq_gaps() for client in self.clients),
            out_of_order=sum(client.out_of_order for client in self.clients),
        )

    async def close(self) -> None:
        for client in self.clients:
            client.stop()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(c.close() for c in self.clients), return_exceptions=True), 10)
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def read_command(reader: asyncio.StreamReader) -> dict[str, Any]:
    """The next JSON line from the parent; ``{"type": "close"}`` when stdin ends."""
    line = await reader.readline()
    if not line:
        return {"type": "close"}
    command: dict[str, Any] = json.loads(line)
    return command


async def amain() -> int:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=2**30)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    plan = WorkerPlan.from_dict(await read_command(reader))
    open_files = raise_open_files_limit()
    if len(plan.connections) + 64 > open_files:
        emit({"type": "error", "message": f"{len(plan.connections)} connections exceed {open_files} open files"})
        return 1
    run = WorkerRun(plan)
    try:
        connected = await run.open_connections()
        emit({"type": "ready", "connected": connected, "failed": run.failed(), "counters": dict(run.counters)})
        command = await read_command(reader)
        if command.get("type") == "go":
            await run.traffic(float(command["start"]), float(command["deadline"]))
            sys.stdout.write(run.result().to_json() + "\n")
            sys.stdout.flush()
            command = await read_command(reader)
    finally:
        await run.close()
    return 0


def main() -> int:
    return asyncio.run(amain())


if __name__ == "__main__":
    sys.exit(main())
