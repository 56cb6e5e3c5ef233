"""A simulated LAN for engines: a multicast datagram reaches every other engine, a unicast one (a
probe: Outgoing.to) only the engine with that address, after `latency` seconds; each copy is lost
with probability `loss`. Virtual time, seeded randomness: the same run every time, no sockets."""

from __future__ import annotations

import heapq
import random
from ipaddress import IPv4Address

from omdisc.engine import Engine, LocalNode, Outgoing, Settings
from omdisc.nodeid import node_id_for
from omdisc.protocol import IPAddress


class SimLan:
    def __init__(self, settings: Settings, seed: int = 1, latency: float = 0.0005, loss: float = 0.0) -> None:
        self.settings = settings
        self.rng = random.Random(seed)
        self.latency = latency
        self.loss = loss
        self.now = 0.0
        self.engines: list[Engine] = []
        self.owner: dict[IPAddress, int] = {}
        # (arrival, order, sender index, receiver index or -1 for everyone, data)
        self.queue: list[tuple[float, int, int, int, bytes]] = []
        self.sent = 0
        self.sent_by: list[int] = []
        self.received_by: list[int] = []
        self.stalled: dict[int, float] = {}  # engine -> until when it neither reads nor ticks
        self._order = 0

    def add(self, addr: str, start: bool = True) -> Engine:
        ip = IPv4Address(addr)
        e = Engine(LocalNode(node_id_for(ip), (ip,)), incarnation=1000 + len(self.engines), settings=self.settings,
                   rng=random.Random(self.rng.random()), wall=lambda: self.now)
        self.engines.append(e)
        self.owner[ip] = len(self.engines) - 1
        self.sent_by.append(0)
        self.received_by.append(0)
        if start:
            self._emit(len(self.engines) - 1, e.start(self.now))
        return e

    def _emit(self, sender: int, out: list[Outgoing]) -> None:
        for o in out:
            self.sent += 1
            self.sent_by[sender] += 1
            self._order += 1
            to = -1 if o.to is None else self.owner.get(o.to, -2)
            heapq.heappush(self.queue, (self.now + self.latency, self._order, sender, to, o.data))

    def _deliver(self, sender: int, to: int, data: bytes) -> None:
        receivers = range(len(self.engines)) if to == -1 else [to] if to >= 0 else []
        source = self.engines[sender].local.primary
        for i in receivers:
            if i == sender or (self.loss and self.rng.random() < self.loss):
                continue
            until = self.stalled.get(i)
            if until is not None and until > self.now:  # read when it wakes up, as a socket buffer would
                self._order += 1
                heapq.heappush(self.queue, (until, self._order, sender, i, data))
                continue
            self.received_by[i] += 1
            self._emit(i, self.engines[i].receive(data, self.now, source=source))

    def run_until(self, t_end: float) -> None:
        while True:
            timers = ((max(e.next_deadline(), self.stalled.get(i, 0.0)), i) for i, e in enumerate(self.engines))
            next_timer = min(timers, default=(float("inf"), -1))
            next_packet = self.queue[0][0] if self.queue else float("inf")
            t = min(next_timer[0], next_packet)
            if t > t_end:
                self.now = t_end
                return
            self.now = t
            if next_packet <= next_timer[0]:
                _, _, sender, to, data = heapq.heappop(self.queue)
                self._deliver(sender, to, data)
            else:
                i = next_timer[1]
                self._emit(i, self.engines[i].tick(self.now))

    def stop(self, i: int) -> None:
        self._emit(i, self.engines[i].shutdown())
        self.crash(i)

    def crash(self, i: int) -> None:
        """kill -9: it says nothing more, not even LEAVE."""
        self.engines[i] = _Gone(self.engines[i])  # type: ignore[assignment]

    def stall(self, i: int, seconds: float) -> None:
        """SIGSTOP for `seconds`, then SIGCONT: what arrived meanwhile is read late, timers fire late."""
        self.stalled[i] = self.now + seconds


class _Gone(Engine):
    """A stopped engine: hears nothing, says nothing."""

    def __init__(self, was: Engine) -> None:
        self.__dict__.update(was.__dict__)

    def next_deadline(self) -> float:
        return float("inf")

    def receive(self, data: bytes, now: float, interface: str = "", source: object = None) -> list[Outgoing]:  # type: ignore[override]
        return []

    def tick(self, now: float) -> list[Outgoing]:
        return []
