"""The human-readable summary of a run, printed on stdout at its end (``--json`` prints the JSON instead)."""

from __future__ import annotations

from typing import Any


def _latency(summary: dict[str, Any] | None) -> str:
    if not summary or not summary.get("count"):
        return "none"
    parts = [f"{name} {summary[name]:.2f}" for name in ("p50", "p90", "p99", "p99.9", "max") if name in summary]
    return "  ".join(parts) + f"  (n={summary['count']:,})"


def summary(result: dict[str, Any]) -> str:
    """A few lines: what ran, throughput, latency, loss, errors, CPU, and the verdict."""
    options = result.get("options", {})
    connections = result.get("connections", {})
    lines = [
        f"gochat load: scenario {result.get('scenario')}, mode {result.get('mode')}, "
        f"{connections.get('connected', 0):,}/{options.get('connections', 0):,} connections open, "
        f"{options.get('duration', 0):g} s window, {options.get('workers')} client process(es)"
    ]
    throughput = result.get("throughput_per_second")
    if throughput:
        lines.append(
            f"  throughput/s: offered {throughput['offered']:,.0f}  acked {throughput['acked']:,.0f}  "
            f"delivered {throughput['delivered']:,.0f}"
        )
    latency = result.get("latency_ms")
    if latency:
        lines.append(f"  send->push ms: {_latency(latency.get('send_to_push'))}")
        lines.append(f"  send->ack  ms: {_latency(latency.get('send_to_ack'))}")
    if result.get("send_lag_ms"):
        lines.append(f"  client send lag ms: {_latency(result['send_lag_ms'])}")
    messages = result.get("messages")
    if messages:
        lines.append(
            f"  messages: sent {messages['sent']:,}  acked {messages['acked']:,}  unacked {messages['unacked']:,}  "
            f"refused {messages['refused']:,}  retries {messages['attempts'] - messages['sent']:,}  "
            f"delivered {messages['delivered']:,} ({messages['delivered_by_sync']:,} by sync after a reconnect, "
            f"{messages['delivered_by_final_sync']:,} not pushed by the end of the drain)"
        )
    loss = result.get("loss")
    if loss:
        storage = result.get("storage") or {}
        lines.append(
            f"  loss: lost {loss['lost']}  duplicated {loss['duplicated']}  (stored rows {storage.get('stored')})  "
            f"missing pushes {loss['missing_pushes']}  duplicate pushes {loss['duplicate_pushes']}"
        )
    ordering = result.get("ordering")
    if ordering:
        lines.append(f"  order: seq gaps {ordering['seq_gaps']}  out of order {ordering['out_of_order']}")
    idle = result.get("idle")
    if idle:
        lines.append(
            f"  idle: {idle['connections']:,} connections, gateway RSS +{idle['rss_delta_bytes'] / 2**20:.1f} MiB "
            f"= {idle['rss_per_connection_bytes'] / 1024:.2f} KiB per connection; heartbeat CPU "
            f"{idle['heartbeat_cpu_percent_of_a_core']}% of a core over {idle['window_seconds']:g} s "
            f"({idle['pings_per_second']:g} pings/s)"
        )
    lines.append(f"  reconnects: {result.get('reconnects', 0)}  errors: {result.get('errors') or 'none'}")
    cpu = result.get("cpu_percent_of_a_core")
    if cpu:
        lines.append("  CPU % of a core in the window: " + "  ".join(f"{k} {v}" for k, v in cpu.items()))
    verdict = "OK" if result.get("ok") else "FAILED: " + "; ".join(result.get("failures", []))
    lines.append(f"  result: {verdict}")
    return "\n".join(lines)
