"""``python -m bench``: the load generator's command line and the run from start to verdict.

Run from the repository root (see ``bench/results/load.md`` for the recorded runs)::

    python -m bench -c 500 -d 30s --mode production             # 1:1 flat out, zero loss required
    python -m bench -c 200 -d 30s --scenario rate --rate 1000    # 1,000 msg/s offered, latency
    python -m bench -c 19000 -d 60s --scenario idle --mode production
    python -m bench -c 10 -d 3s --json                           # quick check, embedded mode
    python -m bench --url ws://127.0.0.1:8080/ws --database sqlite:gochat-data/gochat.sqlite -c 100 -d 10s

A run: starts the servers (``--mode embedded``: one gateway with logic inside
on SQLite; ``--mode production``: logic on MariaDB, RabbitMQ and Redis plus a
gateway on its own delivery queue, each a ``twistd`` process on a free port of
127.0.0.1), or uses the gateway at ``--url``; registers the users over HTTP;
starts the client worker processes, which open the connections (paced, with
progress on stderr) and pair them; sends for the duration; drains; stops the
servers; reads the database and checks that every acked message is stored
exactly once and that every message reached its recipient; prints the figures
(or JSON with ``--json``) and writes ``PREFIX.json`` and ``PREFIX.png`` with
``--output PREFIX``. The exit status is 0 only when nothing was lost or
duplicated and every connection opened.

Throughput counts acks (and deliveries) in the measurement window; latency
runs from a message's first send to its ack at the sender and to its push at
the recipient. The machine's two cores are shared by the servers, the backing
services and the clients: the result says how much CPU each took.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench.load import machine, plot, profile, report
from bench.load.plan import Account, WorkerPlan, WorkerResult
from bench.load.scenarios import SCENARIOS, ScenarioOptions, SetupContext, split_units
from bench.load.servers import (
    HOST,
    MYSQL_PORT,
    SERVICE_COMMANDS,
    Deployment,
    find_pids,
    log,
    open_files,
    open_files_limit,
    process_cpu_seconds,
    process_rss_bytes,
    raise_open_files_limit,
)
from bench.load.stats import (
    Aggregate,
    LatencySummary,
    ReceivedRecord,
    SentRecord,
    aggregate,
    check_storage,
    cpu_percent,
    merge_counters,
)
from bench.load.verify import read_rows

REPO = Path(__file__).resolve().parents[2]
#: The options every result records.
RECORDED_OPTIONS = (
    *("connections", "duration", "scenario", "mode", "rate", "window", "workers", "body_size", "sessions_per_user"),
    *("connect_rate", "ack_timeout", "drain_timeout", "recv_ack_interval", "frames_per_second", "frame_burst"),
    *("ping", "idle_timeout", "server_ref", "url", "profile"),
)
PASSWORD = "bench-password-1"
#: Connections per client worker when ``--workers`` is not given (each worker stays far below 20,000 fds).
CONNECTIONS_PER_WORKER = 5000
#: Seconds the gateway gets after the last connection opened before its RSS is read.
SETTLE_SECONDS = 3.0


def parse_duration(text: str) -> float:
    """``30s``, ``2m``, ``1h``, ``500ms`` or plain seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*", text)
    if match is None:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 30s, 2m)")
    value = float(match.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}[match.group(2)]
    if value <= 0:
        raise argparse.ArgumentTypeError("a duration must be positive")
    return value


# Progress on stderr.


class Progress:
    """One status line on stderr: rewritten in place on a terminal, printed every few seconds otherwise."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self._last = 0.0
        self._text = ""

    def update(self, text: str, force: bool = False) -> None:
        self._text = text
        now = time.monotonic()
        if self.tty:
            sys.stderr.write(f"\r\x1b[K{text}")
            sys.stderr.flush()
        elif force or now - self._last >= 3.0:
            self._last = now
            log(text)

    def done(self) -> None:
        if self.tty and self._text:
            sys.stderr.write("\n")
            sys.stderr.flush()
        self._text = ""


# Accounts.


def post_json(url: str, body: dict[str, Any]) -> tuple[int, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode("utf-8"), headers={"content-type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def account(base: str, username: str) -> Account:
    """Register *username* (or find it registered) and log in; retries while the server is busy."""
    status, body = 0, None
    for attempt in range(20):
        status, body = post_json(f"{base}/api/register", {"username": username, "password": PASSWORD})
        if status in (201, 409):
            break
        time.sleep(0.25 * (attempt + 1))
    else:
        raise RuntimeError(f"cannot register {username}: {status} {body}")
    for attempt in range(20):
        status, body = post_json(f"{base}/api/login", {"username": username, "password": PASSWORD})
        if status == 200:
            return Account(int(body["user_id"]), username, str(body["token"]))
        time.sleep(0.25 * (attempt + 1))
    raise RuntimeError(f"cannot log {username} in: {status} {body}")


async def register_accounts(base: str, prefix: str, count: int, concurrency: int, progress: Progress) -> list[Account]:
    """*count* users ``<prefix><n>``, registered and logged in over HTTP, *concurrency* at a time."""
    loop = asyncio.get_running_loop()
    done = 0
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        futures = [loop.run_in_executor(pool, account, base, f"{prefix}{i}") for i in range(count)]
        for future in asyncio.as_completed(futures):
            await future
            done += 1
            progress.update(f"registering users: {done}/{count}", force=done == count)
        accounts = [f.result() for f in futures]
    progress.done()
    return accounts


# Client workers.


class WorkerProcess:
    """One ``python -m bench.load.worker`` child: its plan in, its progress and result out."""

    def __init__(self, plan: WorkerPlan, env: dict[str, str]) -> None:
        self.plan = plan
        self.env = env
        self.process: asyncio.subprocess.Process | None = None
        self.connected = 0
        self.failed = 0
        self.ready: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.result: asyncio.Future[WorkerResult] = asyncio.get_running_loop().create_future()
        for future in (self.ready, self.result):
            # A run that stops early never awaits them: their failure is reported by the run, not by asyncio.
            future.add_done_callback(lambda f: None if f.cancelled() else f.exception())
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.load.worker",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=str(REPO),
            env=self.env,
            limit=2**31 - 1,
        )
        self._reader = asyncio.create_task(self._read())
        await self.send(self.plan.to_json())

    async def send(self, line: str) -> None:
        assert self.process is not None and self.process.stdin is not None
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.process.stdin.write(line.encode("utf-8") + b"\n")
            await self.process.stdin.drain()

    async def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        while line := await self.process.stdout.readline():
            message = json.loads(line)
            kind = message.get("type")
            if kind == "progress":
                self.connected, self.failed = int(message["connected"]), int(message["failed"])
            elif kind == "ready":
                self.connected, self.failed = int(message["connected"]), int(message["failed"])
                if not self.ready.done():
                    self.ready.set_result(message)
            elif kind == "result":
                if not self.result.done():
                    self.result.set_result(WorkerResult.from_dict(message))
            elif kind == "error":
                error = RuntimeError(f"worker {self.plan.worker}: {message.get('message')}")
                for future in (self.ready, self.result):
                    if not future.done():
                        future.set_exception(error)
        status = await self.process.wait()
        error = RuntimeError(f"worker {self.plan.worker} exited with {status}")
        for future in (self.ready, self.result):
            if not future.done():
                future.set_exception(error)

    async def finish(self, timeout: float = 30.0) -> None:
        """Tell it to close its connections and exit; kill it if it does not."""
        if self.process is None:
            return
        if self.process.returncode is None:
            await self.send(json.dumps({"type": "close"}))
            if self.process.stdin is not None:
                self.process.stdin.close()
            try:
                await asyncio.wait_for(self.process.wait(), timeout)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
                await self.process.wait()
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await self._reader


# Measuring the servers.


def machine_busy_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from ``/proc/stat``."""
    with open("/proc/stat", encoding="ascii") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    ticks = os.sysconf("SC_CLK_TCK")
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    total = sum(values[:8])
    return (total - idle) / ticks, total / ticks


def cpu_snapshot(pids: dict[str, list[int]]) -> dict[str, float]:
    """CPU seconds so far of each named group of pids, and of the whole machine (``machine``)."""
    snapshot = {}
    for name, group in pids.items():
        snapshot[name] = sum(process_cpu_seconds(pid) or 0.0 for pid in group)
    busy, _ = machine_busy_seconds()
    snapshot["machine"] = busy
    return snapshot


class RssMonitor:
    """Samples the connections open (from the workers) and the gateway's RSS every half second."""

    def __init__(self, gateway_pid: int | None, workers: list[WorkerProcess]) -> None:
        self.gateway_pid = gateway_pid
        self.workers = workers
        self.samples: list[tuple[float, int, int]] = []
        self._t0 = time.monotonic()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            rss = process_rss_bytes(self.gateway_pid) if self.gateway_pid is not None else None
            connected = sum(w.connected for w in self.workers)
            self.samples.append((round(time.monotonic() - self._t0, 2), connected, rss or 0))
            await asyncio.sleep(0.5)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


# The run.


def export_source(ref: str, destination: Path) -> None:
    """Write the files of git *ref* (``git archive``) under *destination*: the servers run that code."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", ref], capture_output=True, check=True, timeout=120)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(destination, filter="data")


def default_workers(options: argparse.Namespace) -> int:
    if options.workers:
        workers: int = options.workers
        return workers
    if options.scenario == "idle":
        connections: int = options.connections
        return max(1, math.ceil(connections / CONNECTIONS_PER_WORKER))
    return 1


async def execute(options: argparse.Namespace, started: Callable[[asyncio.Task[Any]], None]) -> dict[str, Any]:
    """The whole run; always stops and removes what it started. The result (``ok`` says whether it passed)."""
    loop = asyncio.get_running_loop()
    run_id = uuid.uuid4().hex[:8]
    soft, hard = raise_open_files_limit()
    workdir = Path(tempfile.mkdtemp(prefix=f"gochat-bench-{run_id}-"))
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if options.server_ref:
        source = workdir / "source"
        await asyncio.to_thread(export_source, options.server_ref, source)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(source), env.get("PYTHONPATH", "")) if p)
    state = RunState(options, run_id, workdir, env)
    result: dict[str, Any] = {
        "benchmark": "load",
        "command": " ".join([os.path.relpath(sys.executable), "-m", "bench", *sys.argv[1:]]),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "run_id": run_id,
        "scenario": options.scenario,
        "mode": state.mode,
        "options": {key: getattr(options, key) for key in RECORDED_OPTIONS},
        "open_files_limit": {"soft": soft, "hard": hard},
    }
    result["options"]["workers"] = default_workers(options)
    failures: list[str] = []
    work = asyncio.create_task(run(state, result))
    started(work)
    await asyncio.wait([work])
    if work.cancelled():
        failures.append("run interrupted")
    elif (error := work.exception()) is not None:
        failures.append(f"run aborted: {type(error).__name__}: {error}")
        log(f"run aborted: {type(error).__name__}: {error}")
    for worker in state.workers:
        await worker.finish(timeout=5.0)
    deployment = state.deployment
    if deployment is not None:
        await deployment.stop()
        result["servers"] = {
            name: {"exit": deployment.exits.get(name), "tracebacks": process.tracebacks}
            for name, process in deployment.processes().items()
        }
    await verify(state, result, failures)
    if deployment is not None:
        await deployment.clean_up()
    elif not options.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    judge(state, result, failures)
    result["failures"] = failures
    result["ok"] = not failures
    result["wall_seconds"] = round(loop.time() - state.t0, 1) if state.t0 else None
    return result


class RunState:
    """What :func:`run` made and measured, for the cleanup and the verdict whatever happened."""

    def __init__(self, options: argparse.Namespace, run_id: str, workdir: Path, env: dict[str, str]) -> None:
        self.options = options
        self.run_id = run_id
        self.workdir = workdir
        self.env = env
        self.mode: str = "url" if options.url else options.mode
        self.progress = Progress()
        self.t0 = 0.0
        self.deployment: Deployment | None = None
        self.ws_url = ""
        self.http_base = ""
        self.gateway_pid: int | None = options.gateway_pid
        self.logic_pid: int | None = None
        self.workers: list[WorkerProcess] = []
        self.accounts: list[Account] = []
        self.results: list[WorkerResult] = []
        self.sent: list[SentRecord] = []
        self.received: list[ReceivedRecord] = []
        self.planned = 0
        self.connected = 0
        self.window: tuple[float, float] | None = None
        self.monitor: RssMonitor | None = None

    def gateway_rss(self) -> int | None:
        return process_rss_bytes(self.gateway_pid) if self.gateway_pid is not None else None


async def run(state: RunState, result: dict[str, Any]) -> None:
    """Servers up, users registered, workers connected, the measurement window, the workers' results."""
    state.t0 = asyncio.get_running_loop().time()
    await start_target(state)
    result["machine"] = await machine.describe(REPO, state.options.server_ref, state.mode == "production")
    if state.gateway_pid is not None:
        result["gateway_open_files_limit"] = open_files_limit(state.gateway_pid)
    rss_start = await plan_workers(state)
    await open_connections(state, result)
    result["gateway"]["rss_before_connections_bytes"] = rss_start
    profiles = await measure_window(state, result)
    await collect(state, result, profiles)


async def start_target(state: RunState) -> None:
    """Start the servers of ``--mode``, or take the gateway of ``--url``."""
    options = state.options
    if options.url:
        state.ws_url = options.url
        parts = urlsplit(options.url)
        state.http_base = f"{'https' if parts.scheme == 'wss' else 'http'}://{parts.netloc}"
        return
    deployment = state.deployment = Deployment(
        options.mode,
        state.run_id,
        state.workdir,
        state.env,
        options.frames_per_second,
        options.frame_burst,
        idle_timeout=options.idle_timeout,
        keep=options.keep,
    )
    log(f"starting the {options.mode} servers (logs in {state.workdir})")
    await deployment.start()
    assert deployment.gateway is not None
    state.ws_url, state.http_base = deployment.ws_url, deployment.http_base
    state.gateway_pid = deployment.gateway.pid
    state.logic_pid = deployment.logic.pid if deployment.logic is not None else None
    logic = f", logic pid {state.logic_pid}" if state.logic_pid else ""
    log(f"gateway at {state.ws_url} (pid {state.gateway_pid}){logic}")


async def plan_workers(state: RunState) -> int | None:
    """Register the users, plan the scenario, make the worker processes; the gateway's RSS before connecting."""
    options = state.options
    scenario = SCENARIOS[options.scenario]()
    scenario_options = ScenarioOptions(options.connections, options.sessions_per_user, options.rate, options.window)
    users = scenario.users_needed(scenario_options)
    log(f"registering {users} users over HTTP")
    state.accounts = await register_accounts(
        state.http_base, f"b{state.run_id[:6]}u", users, options.register_concurrency, state.progress
    )
    prepared = await scenario.prepare(SetupContext(state.http_base, state.ws_url, state.accounts))
    workers = default_workers(options)
    parts = split_units(scenario.plan(state.accounts, scenario_options, prepared), workers)
    senders = sum(1 for part in parts for c in part if c.send_to is not None)
    rate_per_connection = scenario.rate_per_connection(scenario_options, senders) if senders else None
    state.planned = sum(len(part) for part in parts)
    for index, part in enumerate(parts):
        plan = WorkerPlan(
            worker=index,
            url=state.ws_url,
            scenario=scenario.name,
            run_tag=state.run_id,
            connections=part,
            window=options.window,
            rate_per_connection=rate_per_connection,
            body_size=options.body_size,
            connect_rate=options.connect_rate / workers,
            connect_concurrency=max(1, options.connect_concurrency // workers),
            ack_timeout=options.ack_timeout,
            drain_timeout=options.drain_timeout,
            recv_ack_interval=options.recv_ack_interval,
            ping=options.ping,
            seed=hash((state.run_id, index)) & 0xFFFFFFFF,
        )
        state.workers.append(WorkerProcess(plan, state.env))
    return state.gateway_rss()


async def open_connections(state: RunState, result: dict[str, Any]) -> None:
    """Start the workers and wait until each has an outcome for every connection, showing progress."""
    loop = asyncio.get_running_loop()
    state.monitor = RssMonitor(state.gateway_pid, state.workers)
    state.monitor.start()
    log(
        f"opening {state.planned} connections from {len(state.workers)} client process(es) "
        f"at {state.options.connect_rate:g}/s"
    )
    for worker in state.workers:
        await worker.start()
    started = loop.time()
    ready = asyncio.gather(*(w.ready for w in state.workers))
    while not ready.done():
        await asyncio.wait([ready], timeout=0.5)
        connected = sum(w.connected for w in state.workers)
        failed = sum(w.failed for w in state.workers)
        rss = state.gateway_rss()
        rss_text = f", gateway RSS {rss / 2**20:.0f} MiB" if rss else ""
        state.progress.update(f"connections: {connected}/{state.planned} open, {failed} failed{rss_text}")
    state.progress.done()
    state.connected = sum(int(m["connected"]) for m in ready.result())
    seconds = loop.time() - started
    log(f"{state.connected}/{state.planned} connections open in {seconds:.1f}s")
    await asyncio.sleep(SETTLE_SECONDS)
    result["connections"] = {
        "planned": state.planned,
        "connected": state.connected,
        "failed": state.planned - state.connected,
        "seconds_to_open": round(seconds, 1),
    }
    result["gateway"] = {
        "pid": state.gateway_pid,
        "rss_connected_bytes": state.gateway_rss(),
        "open_files_connected": open_files(state.gateway_pid) if state.gateway_pid is not None else None,
    }


def measured_pids(state: RunState) -> dict[str, list[int]]:
    """The processes whose CPU the window accounts for, by name."""
    pids: dict[str, list[int]] = {}
    if state.gateway_pid is not None:
        pids["gateway"] = [state.gateway_pid]
    if state.logic_pid is not None:
        pids["logic"] = [state.logic_pid]
    if state.mode == "production":
        for name, command in SERVICE_COMMANDS.items():
            pids[name] = find_pids(command)
    return pids


async def measure_window(state: RunState, result: dict[str, Any]) -> dict[str, asyncio.Task[str | None]]:
    """Tell the workers to go; CPU of every process over the window (py-spy too with ``--profile``)."""
    loop = asyncio.get_running_loop()
    options = state.options
    pids = measured_pids(state)
    start = loop.time() + 1.0
    deadline = start + options.duration
    for worker in state.workers:
        await worker.send(json.dumps({"type": "go", "start": start, "deadline": deadline}))
    await asyncio.sleep(max(0.0, start - loop.time()))
    before = cpu_snapshot(pids)
    profiles: dict[str, asyncio.Task[str | None]] = {}
    if options.profile:
        (state.workdir / "profiles").mkdir(exist_ok=True)
        for name in ("gateway", "logic"):
            if pids.get(name):
                output = state.workdir / "profiles" / f"{name}.txt"
                profiles[name] = asyncio.create_task(profile.record(pids[name][0], options.duration, output))
    log(f"{options.scenario}: measuring for {options.duration:g}s")
    while loop.time() < deadline:
        await asyncio.sleep(min(1.0, max(0.0, deadline - loop.time())))
        state.progress.update(f"{options.scenario}: {loop.time() - start:.0f}/{options.duration:g}s")
    after = cpu_snapshot(pids)
    state.progress.done()
    state.window = (start, deadline)
    cpu = {name: round(cpu_percent(after[name] - before[name], deadline - start), 1) for name in after}
    cpu["machine_total"] = cpu.pop("machine")
    result["cpu_percent_of_a_core"] = cpu
    result["load_average_at_end"] = machine.load_average()
    return profiles


async def collect(state: RunState, result: dict[str, Any], profiles: dict[str, asyncio.Task[str | None]]) -> None:
    """The workers' results (after their drain), the idle figures and the profiles."""
    options = state.options
    if SCENARIOS[options.scenario].sends:
        log(f"draining (at most {options.drain_timeout:g}s)")
    results = await asyncio.wait_for(
        asyncio.gather(*(w.result for w in state.workers)), options.drain_timeout + options.duration + 120
    )
    state.results = list(results)
    for worker_result in results:
        state.sent.extend(SentRecord.from_wire(item) for item in worker_result.sent)
        state.received.extend(ReceivedRecord.from_wire(item) for item in worker_result.received)
    if state.monitor is not None:
        await state.monitor.stop()
    assert state.window is not None
    window = state.window[1] - state.window[0]
    cpu = result["cpu_percent_of_a_core"]
    cpu["clients"] = round(cpu_percent(sum(r.window_cpu_seconds for r in results), window), 1)
    ours = sum(value for name, value in cpu.items() if name != "machine_total")
    # What the rest of the machine (other sessions' tests, say) took from the same cores meanwhile.
    cpu["other_processes"] = round(max(0.0, cpu["machine_total"] - ours), 1)
    gateway = result["gateway"]
    gateway["rss_end_bytes"] = state.gateway_rss()
    rss_start, rss_connected = gateway.get("rss_before_connections_bytes"), gateway.get("rss_connected_bytes")
    if SCENARIOS[options.scenario].idle_figures and rss_start and rss_connected and state.connected:
        pings = merge_counters(r.counters for r in results).get("pings", 0)
        result["idle"] = {
            "connections": state.connected,
            "rss_delta_bytes": rss_connected - rss_start,
            "rss_per_connection_bytes": round((rss_connected - rss_start) / state.connected, 1),
            "heartbeat_cpu_percent_of_a_core": cpu.get("gateway"),
            "window_seconds": round(window, 1),
            "pings_per_second": round(pings / window, 1),
        }
    for name, task in profiles.items():
        error = await task
        if error is not None:
            result.setdefault("profiles", {})[name] = {"error": error}
            continue
        text = (state.workdir / "profiles" / f"{name}.txt").read_text(encoding="utf-8", errors="replace")
        result.setdefault("profiles", {})[name] = profile.summarize(text.splitlines())
        if options.output:
            Path(f"{options.output}-{name}.folded").write_text(text, encoding="utf-8")


async def verify(state: RunState, result: dict[str, Any], failures: list[str]) -> None:
    """Read the stored rows of the run's senders and compare them with the acks."""
    if not state.sent:
        return
    deployment = state.deployment
    if deployment is not None and deployment.mode == "embedded":
        database = f"sqlite:{deployment.sqlite_path}"
    elif deployment is not None and deployment.database is not None:
        database = f"mysql://root@{HOST}:{MYSQL_PORT}/{deployment.database}"
    else:
        database = state.options.database
    if not database:
        result["storage"] = None
        log("no --database given: the storage check is skipped")
        return
    acked = {(r.sender_id, r.cmid): r.msg_id for r in state.sent if r.msg_id is not None}
    sent_keys = [(r.sender_id, r.cmid) for r in state.sent]
    try:
        rows = await asyncio.to_thread(read_rows, database, {r.sender_id for r in state.sent})
    except Exception as e:
        failures.append(f"storage check failed: {type(e).__name__}: {e}")
        return
    result["storage"] = check_storage(acked, sent_keys, rows).as_dict()


def judge(state: RunState, result: dict[str, Any], failures: list[str]) -> None:
    """The figures of the run, the plot, and what makes the run fail."""
    options = state.options
    counters = merge_counters(r.counters for r in state.results)
    result["counters"] = counters
    result["reconnects"] = counters.get("reconnects", 0)
    result["errors"] = {k: v for k, v in counters.items() if ":" in k}
    if state.planned and state.connected < state.planned:
        failures.append(f"{state.planned - state.connected} of {state.planned} connections did not open")
    if state.results:
        result["clients"] = {
            "processes": len(state.results),
            "cpu_seconds": [r.cpu_seconds for r in state.results],
            "window_cpu_seconds": [r.window_cpu_seconds for r in state.results],
            "max_rss_bytes": [r.max_rss_bytes for r in state.results],
        }
    figures = None
    if SCENARIOS[options.scenario].sends and state.results and state.window is not None:
        figures = aggregate(
            state.sent, state.received, options.duration, math.ceil(options.duration + options.drain_timeout)
        )
        messaging_figures(state, figures, result, failures)
    if options.output:
        result["plot"] = write_plot(state, figures, result)


def messaging_figures(state: RunState, figures: Aggregate, result: dict[str, Any], failures: list[str]) -> None:
    """Throughput, latency, the message counts and the loss verdict of a run that sent."""
    result["throughput_per_second"] = {
        "offered": round(figures.offered_per_second, 1),
        "acked": round(figures.acked_per_second, 1),
        "delivered": round(figures.delivered_per_second, 1),
    }
    result["latency_ms"] = {"send_to_push": figures.push.as_dict(), "send_to_ack": figures.ack.as_dict()}
    lags = [lag for r in state.results for lag in r.send_lag_ms]
    if lags:
        result["send_lag_ms"] = LatencySummary.of(lags).as_dict()
    result["messages"] = figures.counts.as_dict()
    result["ordering"] = {
        "seq_gaps": sum(r.seq_gaps for r in state.results),
        "out_of_order": sum(r.out_of_order for r in state.results),
    }
    result["series"] = {
        "acked_per_second": figures.acked_series,
        "delivered_per_second": figures.delivered_series,
        "push_p50_ms_per_second": [None if v is None else round(v, 3) for v in figures.push_p50_series],
        "push_p99_ms_per_second": [None if v is None else round(v, 3) for v in figures.push_p99_series],
    }
    storage = result.get("storage")
    result["loss"] = {
        "lost": None if storage is None else storage["lost"],
        "duplicated": None if storage is None else storage["duplicated"],
        "missing_pushes": figures.counts.missing_pushes,
        "duplicate_pushes": figures.counts.duplicate_pushes,
        "unacked": figures.counts.unacked,
    }
    if figures.counts.acked == 0:
        failures.append("no message was acked")
    # Unacked messages are not lost (no promise was made; a client would retry them): reported, not failed.
    failures.extend(f"{name} = {value}" for name, value in result["loss"].items() if value and name != "unacked")
    unsynced = result["counters"].get("final_sync_failures", 0)
    if figures.counts.missing_pushes and unsynced:
        failures.append(
            f"the final sync failed for {unsynced} client(s): the missing pushes may be late rather than lost"
        )
    if storage is None and (state.options.url is None or state.options.database):
        failures.append("nothing verified in the database")
    if result["ordering"]["out_of_order"]:
        failures.append(f"out_of_order = {result['ordering']['out_of_order']}")


def write_plot(state: RunState, figures: Aggregate | None, result: dict[str, Any]) -> str | None:
    """``PREFIX.png`` (its file name), or ``None`` when there is nothing to draw or no matplotlib."""
    if not plot.matplotlib_available():
        log("matplotlib is not installed (pip install -e '.[bench]'): no plot")
        return None
    path = Path(f"{state.options.output}.png")
    if figures is not None:
        plot.plot_messaging(
            plot.MessagingSeries(
                title=title(result),
                push=figures.push_samples,
                ack=figures.ack_samples,
                acked_per_second=figures.acked_series,
                delivered_per_second=figures.delivered_series,
                push_p50_per_second=figures.push_p50_series,
                push_p99_per_second=figures.push_p99_series,
            ),
            path,
        )
    elif SCENARIOS[state.options.scenario].idle_figures and state.monitor is not None:
        idle = result.get("idle") or {}
        plot.plot_idle(
            plot.IdleSeries(title(result), state.monitor.samples, idle.get("rss_per_connection_bytes")), path
        )
    else:
        return None
    return path.name


def title(result: dict[str, Any]) -> str:
    options = result["options"]
    machine_info = result.get("machine", {})
    what = f"{result['scenario']}" + (f" {options['rate']:g} msg/s" if result["scenario"] == "rate" else "")
    return (
        f"gochat {what}, {result['mode']} mode, {options['connections']} connections, {options['duration']:g} s; "
        f"{machine_info.get('cores')} cores {machine_info.get('cpu_model')}\n{result['command']}"
    )


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="gochat load generator: throughput, latency, memory and loss (see bench/results/load.md).",
    )
    parser.add_argument("-c", "--connections", type=int, default=500, help="WebSocket connections (default 500)")
    parser.add_argument(
        "-d", "--duration", type=parse_duration, default=30.0, help="measurement window, e.g. 30s or 2m (default 30s)"
    )
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="flat", help="default: flat")
    parser.add_argument("--mode", choices=("embedded", "production"), default="embedded", help="default: embedded")
    parser.add_argument("--url", help="target the gateway at this ws:// URL instead of starting servers")
    parser.add_argument("--database", help="with --url: sqlite:PATH or mysql://user@host:port/db, for the loss check")
    parser.add_argument("--gateway-pid", type=int, help="with --url: the gateway's pid, for its RSS and CPU")
    parser.add_argument("--rate", type=float, default=1000.0, help="rate scenario: messages/s in total (1000)")
    parser.add_argument("--window", type=int, default=1, help="flat scenario: unacked messages per connection (1)")
    parser.add_argument("--workers", type=int, default=0, help="client processes (default: 1; idle: 1 per 5,000)")
    parser.add_argument("--sessions-per-user", type=int, default=100, help="idle scenario: sessions per user (100)")
    parser.add_argument("--body-size", type=int, default=100, help="characters per message body (100)")
    parser.add_argument("--connect-rate", type=float, default=500.0, help="new connections per second (500)")
    parser.add_argument("--connect-concurrency", type=int, default=200, help="handshakes in flight at most (200)")
    parser.add_argument("--register-concurrency", type=int, default=8, help="registrations in flight (8)")
    parser.add_argument("--ack-timeout", type=float, default=10.0, help="seconds before a send is retried (10)")
    parser.add_argument("--drain-timeout", type=float, default=30.0, help="seconds to wait for late acks (30)")
    parser.add_argument(
        "--recv-ack-interval", type=float, default=1.0, help="seconds between recv_acks per connection (1; 0: none)"
    )
    parser.add_argument(
        "--frames-per-second", type=float, default=1000.0, help="flood limit given to the servers started (1000)"
    )
    parser.add_argument("--frame-burst", type=int, default=2000, help="flood burst given to the servers started")
    parser.add_argument(
        "--idle-timeout", type=float, help="session idle timeout given to the servers started (default: theirs, 60)"
    )
    parser.add_argument(
        "--ping",
        choices=("json", "websocket", "none"),
        default="json",
        help="how quiet connections keep their session: a ping frame (json, default), a WebSocket ping, or not",
    )
    parser.add_argument("--server-ref", help="run the servers from this git ref (git archive) instead of the tree")
    parser.add_argument("--profile", action="store_true", help="py-spy the gateway and logic over the window")
    parser.add_argument("--output", help="write PREFIX.json and PREFIX.png (and PREFIX-*.folded with --profile)")
    parser.add_argument("--json", action="store_true", help="print the JSON result on stdout")
    parser.add_argument("--keep", action="store_true", help="keep the database, queues, keys and logs")
    options = parser.parse_args(argv)
    if options.connections < 1 or options.window < 1 or options.rate <= 0 or options.body_size < 40:
        parser.error("-c, --window and --rate must be positive and --body-size at least 40")
    if options.scenario != "idle" and options.connections % 2:
        parser.error("the 1:1 scenarios pair connections: -c must be even")
    if options.sessions_per_user < 1 or options.connect_rate <= 0 or options.connect_concurrency < 1:
        parser.error("--sessions-per-user, --connect-rate and --connect-concurrency must be positive")
    return options


async def amain(options: argparse.Namespace) -> dict[str, Any]:
    """:func:`execute` with SIGINT and SIGTERM cancelling the run (once), never its cleanup."""
    loop = asyncio.get_running_loop()
    work: list[asyncio.Task[Any]] = []

    def interrupt() -> None:
        if work and not work[0].done():
            work[0].cancel()
        else:
            log("signal ignored: cleaning up")

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, interrupt)
    return await execute(options, work.append)


def main(argv: list[str] | None = None) -> int:
    options = parse_arguments(argv)
    result = asyncio.run(amain(options))
    text = json.dumps(result, indent=1)
    if options.output:
        Path(f"{options.output}.json").write_text(text + "\n", encoding="utf-8")
    print(text if options.json else report.summary(result), flush=True)
    return 0 if result["ok"] else 1
