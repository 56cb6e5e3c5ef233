"""Observers of the simulated engines' maps: convergence, departures, false removals.

Each is called as (node index, event kind, address) for every change an engine records, and with
kind "down" when a node crashes or stops (the address is its own). "In a map" is one test,
in_map(), for all of them.
"""

from __future__ import annotations

from omdisc.core.engine import Engine
from omdisc.core.protocol import IPAddress
from tests.sim.lan import Sim

ADDED = frozenset({"join", "update"})


def in_map(e: Engine, addr: IPAddress) -> bool:
    return addr in e.membership


class Convergence:
    """The first time every map of `nodes` holds all the others."""

    def __init__(self, sim: Sim, nodes: list[int]) -> None:
        self.sim = sim
        self.nodes = set(nodes)
        self.addresses = {sim.engines[i].local.primary for i in nodes}
        self.complete = {i for i in nodes if self._full(i)}
        self.at: float | None = sim.now if len(self.complete) == len(self.nodes) else None
        sim.observers.append(self)

    def _full(self, i: int) -> bool:
        e = self.sim.engines[i]
        if len(e.membership) < len(self.nodes) - 1:
            return False  # the cheap test first: a full check per change would cost N^2 per storm
        me = e.local.primary
        return all(a == me or in_map(e, a) for a in self.addresses)

    def __call__(self, i: int, kind: str, addr: IPAddress) -> None:
        if i not in self.nodes or kind == "down":
            return
        if kind in ADDED:
            if i not in self.complete and self._full(i):
                self.complete.add(i)
                if len(self.complete) == len(self.nodes) and self.at is None:
                    self.at = self.sim.now
        elif addr in self.addresses and not in_map(self.sim.engines[i], addr):
            self.complete.discard(i)

    def close(self) -> None:
        self.sim.observers.remove(self)


class Departure:
    """When node `i`, gone (crashed or stopped), is out of every live node's map; a live node that
    takes it back (a resurrection) puts it back in the count."""

    def __init__(self, sim: Sim, i: int) -> None:
        self.sim = sim
        self.index = i
        self.addr = sim.engines[i].local.primary
        self.since = sim.now
        self.holders = {j for j in sim.live() if j != i and in_map(sim.engines[j], self.addr)}
        self.at: float | None = sim.now if not self.holders else None
        self.resurrections = 0
        sim.observers.append(self)

    @property
    def took(self) -> float | None:
        """Seconds from the start of the watch until it was out of every map."""
        return None if self.at is None else self.at - self.since

    def __call__(self, j: int, kind: str, addr: IPAddress) -> None:
        if kind == "down":
            self.holders.discard(j)
        elif addr != self.addr:
            return
        elif kind in ADDED and self.sim.up[j]:
            if self.at is not None:
                self.resurrections += 1
            self.holders.add(j)
            self.at = None
            return
        elif not in_map(self.sim.engines[j], addr):
            self.holders.discard(j)
        if not self.holders and self.at is None:
            self.at = self.sim.now

    def close(self) -> None:
        self.sim.observers.remove(self)


class Removals:
    """Every time a live node's map drops a node that is up (not crashed, not stopped)."""

    def __init__(self, sim: Sim) -> None:
        self.sim = sim
        self.false: list[tuple[float, int, int]] = []  # (when, whose map, who was dropped)
        sim.observers.append(self)

    def __call__(self, j: int, kind: str, addr: IPAddress) -> None:
        sim = self.sim
        if kind in ADDED or kind == "down" or not sim.up[j] or in_map(sim.engines[j], addr):
            return
        k = sim.owner(addr)
        if k is not None and sim.up[k]:
            self.false.append((sim.now, j, k))

    def close(self) -> None:
        self.sim.observers.remove(self)
