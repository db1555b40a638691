"""Where the servers spend their time during a run: ``py-spy record`` and a summary of its samples.

With ``--profile``, each server process is sampled by ``py-spy record
--gil --nonblocking --format raw`` over the measurement window: only the
thread holding the GIL is recorded, so the samples say where the process's
Python CPU goes (the resource a Python server runs out of first), and the
process is not paused to be read (a process with hundreds of gRPC threads
slows down badly when it is). Native code that keeps the GIL (the JSON
encoder, Autobahn's masking, protobuf) shows as the Python function that
called it; native code that releases it (SQLite, socket waits) is not
sampled. The output is collapsed stacks, one ``frame;frame;... count`` line
per distinct stack. :func:`summarize` turns that into the functions holding
the most samples, by themselves (self) and with what they call (inclusive),
as shares of the busy samples. A stack that ends in a wait
(:data:`IDLE_LEAVES`: a thread-pool worker waiting for work, the reactor in
``epoll_wait``) is counted apart as idle. py-spy is a measuring tool, not a
dependency of the server: ``pip install py-spy`` (or the ``bench`` extra).
"""

from __future__ import annotations

import re
import shutil
import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bench.load.servers import run_command

#: ``function (path/to/file.py:123)`` as py-spy writes a frame; the line number is dropped when summing.
FRAME = re.compile(r"^(?P<function>.*?) \((?P<file>[^():]+)(?::\d+)?\)$")
TOP = 15
#: Leaf functions of a thread that waits: a stack ending in one is idle time, not work.
IDLE_LEAVES = frozenset(
    {
        "Condition.wait",
        "Event.wait",
        "Thread._wait_for_tstate_lock",
        "EPollReactor.doPoll",
        "PollReactor.doPoll",
        "SelectReactor.doSelect",
        "_worker",
        "select",
        "sleep",
    }
)


def py_spy() -> str | None:
    """The py-spy executable beside this Python, or on PATH."""
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


async def record(pid: int, seconds: float, output: Path, rate: int = 100) -> str | None:
    """Sample *pid* for *seconds* into *output* (collapsed stacks); an error message, or ``None``."""
    executable = py_spy()
    if executable is None:
        return "py-spy is not installed (pip install py-spy)"
    argv = [executable, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds)))]
    argv += ["--rate", str(rate), "--gil", "--nonblocking", "--format", "raw", "--output", str(output)]
    status, out = await run_command(argv, 4 * seconds + 60)
    if status != 0 or not output.exists():
        return f"py-spy failed ({status}): {out.strip()[-500:]}"
    return None


def frame_package(frame: str) -> str:
    """The package (``grpc``, ``autobahn``, ``twisted``, ``json``...) or gochat module group of a frame.

    gochat's own frames are told apart one level down (``gochat/gateway``,
    ``gochat/logic``, ``gochat/grpc_bridge.py``), the standard library's by
    module (``threading.py``).
    """
    match = FRAME.match(frame.strip())
    path = match.group("file") if match is not None else frame.strip()
    for marker in ("site-packages/", "/lib/python3."):
        index = path.find(marker)
        if index >= 0:
            path = path[index + len(marker) :]
            if marker == "/lib/python3.":
                path = path.split("/", 1)[-1]
            break
    index = path.find("/gochat/")
    if index >= 0:
        path = path[index + 1 :]
    parts = [p for p in path.split("/") if p]
    if not parts:
        return path
    return "/".join(parts[:2]) if parts[0] == "gochat" and len(parts) > 1 else parts[0]


def frame_name(frame: str) -> str:
    """``function (file)`` with the line number and the directories up to the package dropped."""
    match = FRAME.match(frame.strip())
    if match is None:
        return frame.strip()
    path = match.group("file")
    for marker in ("site-packages/", "/gochat/", "/lib/python3"):
        index = path.find(marker)
        if index >= 0:
            path = path[index + len(marker) :] if marker != "/gochat/" else "gochat/" + path[index + len(marker) :]
            break
    return f"{match.group('function')} ({path})"


def summarize(lines: Iterable[str], top: int = TOP) -> dict[str, Any]:
    """The *top* functions by self and by inclusive samples, from collapsed-stack *lines*, idle waits apart."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    own_package: Counter[str] = Counter()
    inclusive_package: Counter[str] = Counter()
    total = 0
    idle = 0
    for raw in lines:
        line = raw.rstrip("\n")
        if not line.strip():
            continue
        stack, _, count_text = line.rpartition(" ")
        try:
            count = int(count_text)
        except ValueError:
            continue
        raw_frames = [f for f in stack.split(";") if f]
        if not raw_frames:
            continue
        frames = [frame_name(f) for f in raw_frames]
        if frames[-1].split(" (", 1)[0] in IDLE_LEAVES:
            idle += count
            continue
        total += count
        own[frames[-1]] += count
        for name in set(frames):
            inclusive[name] += count
        packages = [frame_package(f) for f in raw_frames]
        own_package[packages[-1]] += count
        for package in set(packages):
            inclusive_package[package] += count

    def share(counter: Counter[str], key: str = "function") -> list[dict[str, Any]]:
        return [
            {key: name, "samples": n, "percent": round(100.0 * n / total, 1) if total else 0.0}
            for name, n in counter.most_common(top)
        ]

    return {
        "busy_samples": total,
        "idle_samples": idle,
        "self": share(own),
        "inclusive": share(inclusive),
        "self_by_package": share(own_package, "package"),
        "inclusive_by_package": share(inclusive_package, "package"),
    }
