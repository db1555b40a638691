"""The machine and software a run measured: written into every result."""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.load.servers import mysql_connect, redis_command, run_command

#: Python packages whose versions a result names (those not installed are left out).
PACKAGES = (
    "twisted",
    "autobahn",
    "txamqp",
    "txredisapi",
    "grpcio",
    "protobuf",
    "pymysql",
    "websockets",
    "matplotlib",
)


def cpu_model() -> str | None:
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or None


def memory_bytes() -> int | None:
    with contextlib.suppress(OSError), open("/proc/meminfo", encoding="ascii") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return None


def load_average() -> list[float] | None:
    with contextlib.suppress(OSError):
        return [round(x, 2) for x in os.getloadavg()]
    return None


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[name] = importlib.metadata.version(name)
    return versions


def git(repo: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def source(repo: Path, server_ref: str | None) -> dict[str, Any]:
    """Which gochat code the servers ran: a committed ref, or the work tree (and whether it was edited)."""
    if server_ref is not None:
        return {"ref": server_ref, "commit": git(repo, "rev-parse", f"{server_ref}^{{commit}}"), "work_tree": False}
    status = git(repo, "status", "--porcelain", "--", "gochat", "twisted", "setup.py")
    return {"ref": None, "commit": git(repo, "rev-parse", "HEAD"), "work_tree": True, "edited": bool(status)}


def service_versions() -> dict[str, str | None]:
    """MariaDB and Redis versions, if they answer (for production runs)."""
    versions: dict[str, str | None] = {"mariadb": None, "redis": None}
    with contextlib.suppress(Exception):
        connection = mysql_connect()
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT VERSION()")
                versions["mariadb"] = str(cursor.fetchone()[0])
        finally:
            connection.close()
    with contextlib.suppress(OSError, ValueError):
        info = redis_command("INFO", "server").decode("utf-8", "replace")
        for line in info.splitlines():
            if line.startswith("redis_version:"):
                versions["redis"] = line.split(":", 1)[1].strip()
    return versions


async def rabbitmq_version() -> str | None:
    status, out = await run_command(["rabbitmqctl", "version"], 30)
    return out.strip().splitlines()[-1] if status == 0 and out.strip() else None


async def describe(repo: Path, server_ref: str | None, production: bool) -> dict[str, Any]:
    """Cores, memory, CPU model, kernel, Python, package and service versions, the gochat source."""
    info: dict[str, Any] = {
        "cores": os.cpu_count(),
        "memory_bytes": memory_bytes(),
        "cpu_model": cpu_model(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "packages": package_versions(),
        "load_average_at_start": load_average(),
        "gochat": source(repo, server_ref),
    }
    if production:
        info["services"] = service_versions()
        info["services"]["rabbitmq"] = await rabbitmq_version()
    return info
