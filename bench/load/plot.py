"""The PNG of a run: latency over time, throughput per second, the latency distribution.

For the idle scenario: connections and gateway RSS while the connections
open. Needs matplotlib (the ``bench`` extra: ``pip install -e '.[bench]'``);
without it the run still writes its JSON and says the plot was skipped.
"""

from __future__ import annotations

import importlib.util
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

#: Latency samples drawn at most, per kind (the percentile lines use them all).
MAX_POINTS = 20_000


@dataclass(frozen=True)
class MessagingSeries:
    """What a messaging run's plot shows; times in seconds since the start, latencies in milliseconds."""

    title: str
    push: Sequence[tuple[float, float]]
    ack: Sequence[tuple[float, float]]
    acked_per_second: Sequence[int]
    delivered_per_second: Sequence[int]
    push_p50_per_second: Sequence[float | None]
    push_p99_per_second: Sequence[float | None]


@dataclass(frozen=True)
class IdleSeries:
    """What an idle run's plot shows: samples of (seconds, connections open, gateway RSS bytes)."""

    title: str
    samples: Sequence[tuple[float, int, int]]
    bytes_per_connection: float | None


def matplotlib_available() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def _thin(points: Sequence[tuple[float, float]], limit: int, seed: int = 1) -> list[tuple[float, float]]:
    if len(points) <= limit:
        return list(points)
    return random.Random(seed).sample(list(points), limit)


def plot_messaging(series: MessagingSeries, path: Path) -> None:
    """Three panels: latency over time (samples, per-second p50 and p99), throughput, distribution (CCDF)."""
    import matplotlib  # type: ignore[import-not-found,unused-ignore]  # the bench extra

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # type: ignore[import-not-found,unused-ignore]
    from matplotlib.ticker import FuncFormatter  # type: ignore[import-not-found,unused-ignore]

    plain = FuncFormatter(lambda value, _: f"{value:g}")

    figure, (over_time, rate, distribution) = plt.subplots(3, 1, figsize=(11, 12))
    figure.suptitle(series.title, fontsize=10)

    for points, label, color in ((series.ack, "send -> ack", "tab:orange"), (series.push, "send -> push", "tab:blue")):
        thin = _thin(points, MAX_POINTS)
        if thin:
            over_time.scatter([t for t, _ in thin], [v for _, v in thin], s=2, alpha=0.25, color=color, label=label)
    seconds = [k + 0.5 for k in range(len(series.push_p50_per_second))]
    for values, label, style in (
        (series.push_p50_per_second, "push p50 per second", "-"),
        (series.push_p99_per_second, "push p99 per second", "--"),
    ):
        xs = [s for s, v in zip(seconds, values, strict=True) if v is not None]
        ys = [v for v in values if v is not None]
        if xs:
            over_time.plot(xs, ys, style, color="black", linewidth=1, label=label)
    over_time.set_yscale("log")
    over_time.yaxis.set_major_formatter(plain)
    over_time.set_xlabel("seconds since start (by send time)")
    over_time.set_ylabel("latency (ms, log)")
    over_time.set_title("latency over time")
    over_time.grid(True, which="both", alpha=0.3)
    over_time.legend(loc="upper right", fontsize=8, markerscale=4)

    xs = list(range(len(series.acked_per_second)))
    rate.plot(xs, series.acked_per_second, drawstyle="steps-post", label="acked / s")
    rate.plot(xs, series.delivered_per_second, drawstyle="steps-post", label="delivered (pushed) / s")
    rate.set_xlabel("seconds since start")
    rate.set_ylabel("messages per second")
    rate.set_title("throughput")
    rate.grid(True, alpha=0.3)
    rate.legend(loc="lower right", fontsize=8)

    for points, label, color in ((series.ack, "send -> ack", "tab:orange"), (series.push, "send -> push", "tab:blue")):
        values = sorted(v for _, v in points)
        if not values:
            continue
        n = len(values)
        # Complementary CDF: the share of messages slower than x, which shows the tail on a log scale.
        step = max(1, n // MAX_POINTS)
        xs_c = [*values[::step], values[-1]]
        ys_c = [*(max(1.0 - i / n, 1.0 / n) for i in range(0, n, step)), 1.0 / n]
        distribution.plot(xs_c, ys_c, color=color, label=label)
    distribution.set_xscale("log")
    distribution.set_yscale("log")
    distribution.xaxis.set_major_formatter(plain)
    distribution.set_xlabel("latency (ms, log)")
    distribution.set_ylabel("share of messages slower (log)")
    distribution.set_title("distribution (1 - CDF): 0.01 is p99, 0.001 is p99.9")
    distribution.grid(True, which="both", alpha=0.3)
    distribution.legend(loc="lower left", fontsize=8)

    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def plot_idle(series: IdleSeries, path: Path) -> None:
    """Connections open and gateway RSS over time, while the connections open and then idle."""
    import matplotlib  # type: ignore[import-not-found,unused-ignore]  # the bench extra

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # type: ignore[import-not-found,unused-ignore]

    figure, connections = plt.subplots(1, 1, figsize=(11, 5))
    figure.suptitle(series.title, fontsize=10)
    times = [t for t, _, _ in series.samples]
    connections.plot(times, [n for _, n, _ in series.samples], color="tab:blue", label="connections open")
    connections.set_xlabel("seconds since the first connection")
    connections.set_ylabel("connections", color="tab:blue")
    rss = connections.twinx()
    rss.plot(times, [r / 2**20 for _, _, r in series.samples], color="tab:red", label="gateway RSS")
    rss.set_ylabel("gateway RSS (MiB)", color="tab:red")
    if series.bytes_per_connection is not None:
        connections.set_title(f"{series.bytes_per_connection / 1024:.1f} KiB of gateway RSS per connection")
    connections.grid(True, alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
