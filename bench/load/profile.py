"""Where the servers spend their time during a run: ``py-spy record`` and a summary of its samples.

With ``--profile``, each server process is sampled by ``py-spy record
--format raw`` (collapsed stacks, one ``frame;frame;... count`` line per
distinct stack) over the measurement window. :func:`summarize` turns that
into the functions holding the most samples, by themselves (self) and with
what they call (inclusive), as shares of the busy samples. py-spy does not
see that a thread blocked on a lock or in ``epoll_wait`` is idle, so stacks
that end in such a wait (:data:`IDLE_LEAVES`: thread-pool workers waiting for
work, the reactor waiting for events) are counted apart as idle, and the
shares are of the rest. Native code (SQLite, the TLS or gRPC core) shows as
the Python function that called it. py-spy is a measuring tool, not a
dependency: ``pip install py-spy``.
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
    argv += ["--rate", str(rate), "--format", "raw", "--output", str(output)]
    status, out = await run_command(argv, seconds + 60)
    if status != 0 or not output.exists():
        return f"py-spy failed ({status}): {out.strip()[-500:]}"
    return None


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
        frames = [frame_name(f) for f in stack.split(";") if f]
        if not frames:
            continue
        if frames[-1].split(" (", 1)[0] in IDLE_LEAVES:
            idle += count
            continue
        total += count
        own[frames[-1]] += count
        for name in set(frames):
            inclusive[name] += count

    def share(counter: Counter[str]) -> list[dict[str, Any]]:
        return [
            {"function": name, "samples": n, "percent": round(100.0 * n / total, 1) if total else 0.0}
            for name, n in counter.most_common(top)
        ]

    return {"busy_samples": total, "idle_samples": idle, "self": share(own), "inclusive": share(inclusive)}
