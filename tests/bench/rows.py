"""The one table `make bench` prints (tests/bench/table.py): a row per cluster size, where it ran
(real daemons in namespaces, or the simulator) and the LAN's random loss."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class Row:
    n: int
    where: str  # "real" or "sim"
    loss: float  # fraction of datagrams the LAN drops at random
    converge: float | None = None  # join storm: seconds from the last start until every map is complete
    per_join: float | None = None  # multicast datagrams sent during the storm, per node
    late_join: float | None = None  # one more node, into a settled cluster: until it is in every map
    p50: float | None = None  # kill -9: until the node is out of a live map, over all maps and kills
    p99: float | None = None
    crashes: int = 0
    undetected: int = 0  # crashes some live map still held when the run ended
    false_removals: int | None = None  # a live node dropped from a map
    dg_in: float | None = None  # steady state: datagrams a second per node
    dg_out: float | None = None
    rss: float | None = None  # MiB, mean of the daemons
    cpu: float | None = None  # % of one core, mean of the daemons
    storm_wall: float | None = None  # the simulator's own cost: seconds of this machine
    steady_wall: float | None = None  # per simulated minute


def fmt(x: float | None, spec: str, unit: str = "", missing: str = "-") -> str:
    return missing if x is None else format(x, spec) + unit


HEADER = (f"{'N':>6} {'where':>5} {'loss':>5} {'storm conv':>10} {'dg/join':>7} {'late join':>9} "
          f"{'crash p50':>9} {'p99':>6} {'missed':>6} {'false rm':>8} {'dg/s in':>7} {'dg/s out':>8} "
          f"{'RSS MiB':>7} {'CPU %':>6}")

LEGEND = """\
storm conv: N nodes started at once, from the last start (real: from the last daemon's first announce,
  Python's start-up excluded) until every map is complete ("never": not within 60 s); dg/join: multicast
  datagrams sent until then (real) or until 3 s after the last start (sim), per node
late join: one more node joins the settled cluster: from its start until it is in every map
crash: kill -9 one node, until it is out of a live map: real, p50 and p99 over all maps and kills;
  sim, over the kills, until out of every live map (the slowest map of each); missed: crashes still
  in some map when the run ended
false rm: a live node missing from a live map at some point (real: polled every 0.5 s)
dg/s: datagrams per node a second, received and sent, at steady state; RSS and CPU: the daemons' mean"""


def line(r: Row) -> str:
    missed = f"{r.undetected}/{r.crashes}" if r.crashes else "-"
    conv = "-" if r.per_join is None and r.converge is None else fmt(r.converge, ".3f", "s", "never")
    false_rm = "-" if r.false_removals is None else str(r.false_removals)
    return (f"{r.n:>6} {r.where:>5} {r.loss:>5.0%} {conv:>10} {fmt(r.per_join, '.2f'):>7} "
            f"{fmt(r.late_join, '.3f', 's'):>9} {fmt(r.p50, '.2f', 's'):>9} {fmt(r.p99, '.2f', 's'):>6} "
            f"{missed:>6} {false_rm:>8} {fmt(r.dg_in, '.2f'):>7} {fmt(r.dg_out, '.2f'):>8} "
            f"{fmt(r.rss, '.1f'):>7} {fmt(r.cpu, '.2f'):>6}")


def percentile(values: list[float], p: float) -> float:
    """The nearest-rank percentile: the value that p% of the values do not exceed."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(len(ordered) * p / 100) - 1))]
