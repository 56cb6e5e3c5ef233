"""The counters and gauges in Prometheus' text exposition format (version 0.0.4), for
node_exporter's textfile collector (config key metrics_file). Pure: render() makes the text; the
metrics file (shell.metricsfile) is written with state.json."""

from __future__ import annotations

import math
from collections.abc import Mapping

from omdisc.core.protocol import MsgType

# (metric, stats key, help): always present, 0 until counted
COUNTERS = (
    ("omdisc_received_total", "received", "Datagrams received, valid or not."),
    ("omdisc_stale_total", "stale", "Messages not newer than what was already taken from their node."),
    ("omdisc_forwarded_total", "forwarded", "Datagrams this gateway forwarded to its other interfaces."),
    ("omdisc_map_writes_total", "map_writes", "Cluster maps written to the kernel (or the alpha files)."),
    ("omdisc_internal_errors_total", "internal_errors", "Unexpected errors caught in the loop (bugs)."),
    ("omdisc_handler_runs_total", "handler_runs", "Event handler programs started."),
    ("omdisc_handler_failures_total", "handler_failures",
     "Event handler runs that failed: a status other than 0, killed, or not started."),
    ("omdisc_handler_timeouts_total", "handler_timeouts", "Event handler runs killed at handler_timeout."),
    ("omdisc_handler_events_dropped_total", "handler_events_dropped",
     "Events no handler ran for, its backlog being full."),
    ("omdisc_handler_events_merged_total", "handler_events_merged",
     "Events merged into one waiting for the same node, a handler's backlog being full."),
    ("omdisc_map_write_errors_total", "map_write_errors", "Writes of the cluster map that failed (retried)."),
    ("omdisc_metrics_write_errors_total", "metrics_write_errors", "Writes of this metrics file that failed."),
)
# (metric, stats key prefix, label, help, label values always present)
LABELLED = (
    ("omdisc_sent_total", "sent:", "type", "Datagrams sent, by message type.",
     tuple(t.name for t in MsgType)),
    ("omdisc_malformed_total", "malformed:", "reason", "Datagrams dropped as malformed, by reason.", ()),
    ("omdisc_rejected_total", "rejected:", "reason", "Messages refused by the checks against hostile hosts, "
     "by reason.", ()),
    ("omdisc_auth_dropped_total", "auth:", "reason", "Datagrams dropped by the cluster key's checks, by reason.",
     ()),
)
# (metric, gauges key, help)
GAUGES = (
    ("omdisc_members", "members", "Nodes in the cluster as this node knows it, itself included."),
    ("omdisc_map_entries", "map_entries", "Lines of the cluster map last written to the kernel."),
    ("omdisc_collisions", "collisions", "Node ids claimed by more than one node in the last map written."),
)


def escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _family(name: str, kind: str, help_text: str, samples: list[str]) -> list[str]:
    return [f"# HELP {name} {escape_help(help_text)}", f"# TYPE {name} {kind}", *samples]


def render(stats: Mapping[str, int], gauges: Mapping[str, float]) -> str:
    """Every metric omdiscd publishes, from its counters (engine stats keys) and gauges."""
    lines: list[str] = []
    for name, key, help_text in COUNTERS:
        lines += _family(name, "counter", help_text, [f"{name} {number(stats.get(key, 0))}"])
    for name, prefix, label, help_text, always in LABELLED:
        values = {v: 0 for v in always}
        values.update({k[len(prefix):]: v for k, v in stats.items() if k.startswith(prefix) and len(k) > len(prefix)})
        samples = []  # none counted yet: the family is still described, so that it is known to exist
        for shown in sorted(values):
            label_value = shown.lower() if prefix == "sent:" else shown
            samples.append(f'{name}{{{label}="{escape_label(label_value)}"}} {number(values[shown])}')
        lines += _family(name, "counter", help_text, samples)
    for name, key, help_text in GAUGES:
        lines += _family(name, "gauge", help_text, [f"{name} {number(gauges.get(key, 0))}"])
    return "\n".join(lines) + "\n"
