"""A simulated LAN for engines: every datagram reaches every other engine after `latency` seconds.
Virtual time, seeded randomness: the same run every time, no sockets."""

from __future__ import annotations

import heapq
import random
from ipaddress import IPv4Address

from omdisc.engine import Engine, LocalNode, Settings
from omdisc.nodeid import node_id_for


class SimLan:
    def __init__(self, settings: Settings, seed: int = 1, latency: float = 0.0005) -> None:
        self.settings = settings
        self.rng = random.Random(seed)
        self.latency = latency
        self.now = 0.0
        self.engines: list[Engine] = []
        self.queue: list[tuple[float, int, int, bytes]] = []  # (arrival, order, sender index, data)
        self.sent = 0
        self._order = 0

    def add(self, addr: str, start: bool = True) -> Engine:
        ip = IPv4Address(addr)
        e = Engine(LocalNode(node_id_for(ip), (ip,)), incarnation=1000 + len(self.engines), settings=self.settings,
                   rng=random.Random(self.rng.random()), wall=lambda: self.now)
        self.engines.append(e)
        if start:
            self._emit(len(self.engines) - 1, e.start(self.now))
        return e

    def _emit(self, sender: int, out: list) -> None:  # type: ignore[type-arg]
        for o in out:
            self.sent += 1
            self._order += 1
            heapq.heappush(self.queue, (self.now + self.latency, self._order, sender, o.data))

    def run_until(self, t_end: float) -> None:
        while True:
            next_timer = min((e.next_deadline(), i) for i, e in enumerate(self.engines))
            next_packet = self.queue[0][0] if self.queue else float("inf")
            t = min(next_timer[0], next_packet)
            if t > t_end:
                self.now = t_end
                return
            self.now = t
            if next_packet <= next_timer[0]:
                _, _, sender, data = heapq.heappop(self.queue)
                for i, e in enumerate(self.engines):
                    if i != sender:
                        self._emit(i, e.receive(data, self.now, source=self.engines[sender].local.primary))
            else:
                i = next_timer[1]
                self._emit(i, self.engines[i].tick(self.now))

    def stop(self, i: int) -> None:
        self._emit(i, self.engines[i].shutdown())
        self.engines[i] = _Gone(self.engines[i])  # type: ignore[assignment]


class _Gone(Engine):
    """A stopped engine: hears nothing, says nothing."""

    def __init__(self, was: Engine) -> None:
        self.__dict__.update(was.__dict__)

    def next_deadline(self) -> float:
        return float("inf")

    def receive(self, data: bytes, now: float, interface: str = "", source: object = None) -> list:  # type: ignore[override,type-arg]
        return []

    def tick(self, now: float) -> list:  # type: ignore[type-arg]
        return []
