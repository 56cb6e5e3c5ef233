"""A simulated network of engines in virtual time: seeded, no sockets, fast enough for thousands.

Model (what a test can rely on):
- Segments are LANs; a node sits on one or more (one address on each, the segment's name is its
  interface name). A multicast reaches every other node on the segments it is sent on, all at the
  same instant: send time + the segment's latency + a jitter drawn once per datagram (uniform in
  [0, jitter)). A unicast (`Outgoing.to`) reaches only the node that owns that address: over a
  shared segment, or routed between segments (latency of both; `routed=False`: dropped).
- Loss: each datagram is lost for each receiver on its own, with probability `loss` (seeded).
- crash(i): kill -9, silent: no LEAVE, whatever is in flight from it still arrives.
  stop(i): a clean stop, the engine's LEAVE. stall(i, d): SIGSTOP for d seconds: datagrams queue
  in its socket buffer (at most `buffer` of them, about what a default 208 KiB receive buffer
  holds; the rest are dropped and counted as overflow); on SIGCONT the queued datagrams are taken
  first, in order, then the timers that fell due, late. restart(i): a new life (the next
  incarnation) of a node that crashed or stopped.
- partition(nodes, d): those nodes and the rest hear nothing from each other (multicast and
  unicast, in both directions) until heal() or d seconds.
- Every node's datagrams sent and received (multicast, unicast) are counted; observers are told
  each change an engine makes to its map (tests.sim.watch).
- key: every node signs with it and takes only what it signed (a keyed cluster); None: no key.

Speed: one heap of events (deliveries, each engine's next timer, scheduled actions); an engine's
deadline is asked after each thing it is given, as the daemon's loop does; a multicast is one
event delivered to its receivers in a loop; random loss skips ahead geometrically (one random
number per lost datagram, not per receiver); the receivers of a multicast share one decode of it
(_decoded_once). What is left is the engines' own time (the report of tests.bench.sim).
"""

from __future__ import annotations

import contextlib
import heapq
import math
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from omdisc.core import engine as engine_module
from omdisc.core.auth import Authenticator, Keyring
from omdisc.core.engine import EARLY_ANNOUNCES, Engine, LocalNode, Outgoing, Settings
from omdisc.core.nodeid import node_id_for
from omdisc.core.protocol import FLAG_GATEWAY, IPAddress, Message
from omdisc.core.records import replace

FIRST_ADDRESS = int(IPv4Address("198.18.0.1"))
INF = float("inf")
TICK = 1e-6  # a loop's turn: the least a clock moves between two ticks
WARM = 1e-6  # add_settled(): its nodes announce this soon after their start

# event kinds; an event is (time, seq, kind, a, b, c): seq keeps equal times in order, so the run
# is the same every time for a seed
_MULTICAST, _UNICAST, _TIMER, _ACTION = range(4)

Observer = Callable[[int, str, IPAddress], None]  # (node index, event kind, address): see watch.py


@dataclass(slots=True)
class Counters:
    sent_multicast: int = 0  # one per segment it is sent on
    sent_unicast: int = 0
    received_multicast: int = 0  # given to the engine
    received_unicast: int = 0
    lost: int = 0  # random loss on the way to this node
    cut: int = 0  # a partition between the sender and this node
    overflow: int = 0  # arrived while stalled with the socket buffer full

    @property
    def sent(self) -> int:
        return self.sent_multicast + self.sent_unicast

    @property
    def received(self) -> int:
        return self.received_multicast + self.received_unicast


@dataclass(slots=True)
class Segment:
    name: str
    latency: float
    jitter: float
    members: list[int] = field(default_factory=list)

class Wire:
    """How datagrams travel between the simulated nodes: segments (latency, jitter), loss,
    partitions, a stalled node's socket buffer, and what each node sent and received. Sim, below,
    runs the nodes' engines and timers on it; both share one heap of events in virtual time."""

    def __init__(self, seed: int, latency: float, jitter: float, loss: float, buffer: int, routed: bool) -> None:
        if not 0.0 <= loss < 1.0:
            raise ValueError(f"loss is a probability below 1, not {loss}")
        self._net_rng = random.Random(seed * 7919 + 1)  # loss and jitter: its own stream
        self.latency, self.jitter, self.loss, self.buffer, self.routed = latency, jitter, loss, buffer, routed
        self._log_keep = math.log1p(-loss) if loss else 0.0
        self.now = 0.0
        self.engines: list[Engine] = []
        self.counters: list[Counters] = []
        self.segments: list[Segment] = []
        self._segment_index: dict[str, int] = {}
        self.tap: Callable[[int, bytes], None] | None = None  # told of every datagram given to a node
        # a targeted fault: (sender, receiver) -> lose this multicast (counted as lost)
        self.drop_multicast: Callable[[int, int], bool] | None = None
        # (sender, receiver) -> this unicast has no way there (counted as unroutable): multicast routed, unicast not
        self.drop_unicast: Callable[[int, int], bool] | None = None
        self.unroutable = 0  # unicasts to an address nobody has (or across segments, not routed)
        # per node
        self.up: list[bool] = []  # started and neither crashed nor stopped
        self.stalled: list[bool] = []
        self.side: list[int] = []  # partition side: nodes hear each other only on the same side
        self._on: list[dict[int, IPAddress]] = []  # segment index -> the node's address there
        self._queued: dict[int, list[tuple[bytes, str, IPAddress, bool]]] = {}  # stalled: its socket buffer
        self._owner: dict[IPAddress, int] = {}
        self._events: list[tuple] = []  # type: ignore[type-arg]
        self._seq = 0
        self._next_address = FIRST_ADDRESS
        self._until_lost = self._draw_until_lost()

    def segment(self, name: str, latency: float | None = None, jitter: float | None = None) -> int:
        """The segment called `name` (created on first use, with the simulator's latency and jitter)."""
        if name not in self._segment_index:
            self._segment_index[name] = len(self.segments)
            self.segments.append(Segment(name, self.latency if latency is None else latency,
                                         self.jitter if jitter is None else jitter))
        return self._segment_index[name]

    def _attach(self, e: Engine, seg_ids: list[int], addrs: list[IPv4Address]) -> None:
        """A new node (index len(engines)), its engine, with one address on each of those segments; down."""
        i = len(self.engines)
        self.engines.append(e)
        self.counters.append(Counters())
        for s, a in zip(seg_ids, addrs, strict=True):
            self.segments[s].members.append(i)
            self._owner[a] = i
        self._on.append(dict(zip(seg_ids, addrs, strict=True)))
        self.up.append(False)
        self.stalled.append(False)
        self.side.append(0)

    def _new_address(self) -> IPv4Address:
        while IPv4Address(self._next_address) in self._owner:
            self._next_address += 1
        self._next_address += 1
        return IPv4Address(self._next_address - 1)

    def _push(self, t: float, kind: int, a: object, b: object, c: object) -> int:
        self._seq += 1
        heapq.heappush(self._events, (t, self._seq, kind, a, b, c))
        return self._seq

    def _reschedule(self, i: int, ticked: bool = False) -> None:
        """Node i's engine was given something: its next timer (Sim keeps them)."""
        raise NotImplementedError

    # --- datagrams -------------------------------------------------------------------------------

    def _emit(self, i: int, out: list[Outgoing]) -> None:
        c = self.counters[i]
        for o in out:
            if o.to is not None:
                c.sent_unicast += 1
                self._send_unicast(i, o)
                continue
            on = self._on[i]
            for s in on if o.interfaces is None else (self._segment_index[n] for n in o.interfaces):
                if s not in on:
                    continue  # not one of this node's segments
                c.sent_multicast += 1
                seg = self.segments[s]
                delay = seg.latency + (self._net_rng.random() * seg.jitter if seg.jitter else 0.0)
                self._push(self.now + delay, _MULTICAST, i, s, o.data)

    def _send_unicast(self, i: int, o: Outgoing) -> None:
        j = self._owner.get(o.to)  # type: ignore[arg-type]
        route = None if j is None or (self.drop_unicast is not None and self.drop_unicast(i, j)) else self._route(i, j)
        if route is None:
            self.unroutable += 1
            return
        delay, s_from, s_to = route
        jitter = self.segments[s_to].jitter
        if jitter:
            delay += self._net_rng.random() * jitter
        self._push(self.now + delay, _UNICAST, i, j, (o.data, s_from, s_to))

    def _route(self, i: int, j: int) -> tuple[float, int, int] | None:
        """(latency, sender's segment, receiver's segment): a segment they share, else routed."""
        mine, theirs = self._on[i], self._on[j]
        for s in mine:
            if s in theirs:
                return self.segments[s].latency, s, s
        if not self.routed:
            return None
        s_from, s_to = next(iter(mine)), next(iter(theirs))
        return self.segments[s_from].latency + self.segments[s_to].latency, s_from, s_to

    def _draw_until_lost(self) -> int:
        """How many receptions succeed before the next one is lost: geometric, so each reception
        is lost with probability `loss`, independently, for one random number per loss."""
        if not self.loss:
            return -1  # never counts down to 0
        return int(math.log(1.0 - self._net_rng.random()) / self._log_keep)

    def _multicast(self, sender: int, s: int, data: bytes) -> None:
        seg = self.segments[s]
        source = self._on[sender][s]
        side, up, stalled, counters = self.side, self.up, self.stalled, self.counters
        my_side = side[sender]
        until_lost = self._until_lost
        drop = self.drop_multicast
        for r in seg.members:
            if r == sender or not up[r]:
                continue
            if drop is not None and drop(sender, r):
                counters[r].lost += 1
                continue
            if until_lost == 0:
                until_lost = self._draw_until_lost()
                counters[r].lost += 1
                continue
            until_lost -= 1
            if side[r] != my_side:
                counters[r].cut += 1
            elif stalled[r]:
                self._queue(r, data, seg.name, source, True)
            else:
                self._deliver(r, data, seg.name, source, True)
        self._until_lost = until_lost

    def _unicast(self, sender: int, r: int, c: tuple[bytes, int, int]) -> None:
        data, s_from, s_to = c
        if not self.up[r]:
            return
        if self.loss and self._net_rng.random() < self.loss:
            self.counters[r].lost += 1
        elif self.side[r] != self.side[sender]:
            self.counters[r].cut += 1
        elif self.stalled[r]:
            self._queue(r, data, self.segments[s_to].name, self._on[sender][s_from], False)
        else:
            self._deliver(r, data, self.segments[s_to].name, self._on[sender][s_from], False)

    def _queue(self, r: int, data: bytes, interface: str, source: IPAddress, multicast: bool) -> None:
        queued = self._queued[r]
        if len(queued) >= self.buffer:
            self.counters[r].overflow += 1
        else:
            queued.append((data, interface, source, multicast))

    def _deliver(self, r: int, data: bytes, interface: str, source: IPAddress, multicast: bool) -> None:
        c = self.counters[r]
        if multicast:
            c.received_multicast += 1
        else:
            c.received_unicast += 1
        if self.tap is not None:
            self.tap(r, data)
        out = self.engines[r].receive(data, self.now, interface, source)
        if out:
            self._emit(r, out)
        self._reschedule(r)

    # --- looking at it ---------------------------------------------------------------------------

    @property
    def sent(self) -> int:
        return sum(c.sent for c in self.counters)

    @property
    def sent_by(self) -> list[int]:
        return [c.sent for c in self.counters]

    @property
    def received_by(self) -> list[int]:
        return [c.received for c in self.counters]

    def live(self) -> list[int]:
        return [i for i, u in enumerate(self.up) if u]

    def owner(self, addr: IPAddress) -> int | None:
        """The index of the node with that address, if any."""
        return self._owner.get(addr)

    def totals(self) -> Counters:
        t = Counters()
        for c in self.counters:
            for name in Counters.__slots__:  # type: ignore[attr-defined]
                setattr(t, name, getattr(t, name) + getattr(c, name))
        return t


class Sim(Wire):
    """Engines on simulated LANs. `engines[i]` stays the i-th node's engine after it stopped."""

    def __init__(self, settings: Settings, seed: int = 1, latency: float = 0.0005, jitter: float = 0.0,
                 loss: float = 0.0, buffer: int = 256, routed: bool = True, share_decode: bool = True,
                 key: bytes | None = None) -> None:
        super().__init__(seed, latency, jitter, loss, buffer, routed)
        self.settings = settings
        self.key = key  # the cluster key every node signs with; None: none
        self.rng = random.Random(seed)  # engines' seeds
        self.share_decode = share_decode
        self.observers: list[Observer] = []
        # per node
        self.gone: list[bool] = []  # crashed or stopped
        self._timer_seq: list[int] = []  # seq of the node's one live timer event (others are stale)
        self._timer_at: list[float] = []
        self._next_side = 1

    # --- building the network ------------------------------------------------------------------

    def add(self, addr: str | None = None, start: bool | float = True, segments: Sequence[str] = ("lan",),
            route: bool = False, settings: Settings | None = None) -> Engine:
        """A node with one address on each segment (`addr` for the first, else the next free one in
        198.18.0.0/16). start: True now, False not (start(i) later), a number: at that time.
        route: a gateway forwarding between its segments."""
        i = len(self.engines)
        seg_ids = [self.segment(s) for s in segments]
        addrs = [IPv4Address(addr) if addr and k == 0 else self._new_address() for k in range(len(seg_ids))]
        # the engines' wall clock is the virtual time, their first incarnations small and distinct
        flags = FLAG_GATEWAY if route else 0  # as the daemon's plan says of a routing host
        e = Engine(LocalNode(node_id_for(addrs[0]), tuple(addrs), flags), incarnation=1000 + i,
                   settings=settings or self.settings, rng=random.Random(self.rng.random()), wall=self._wall,
                   auth=self._auth())
        if route:
            e.route_between = frozenset(segments)
        self._watch(i, e)
        self._attach(e, seg_ids, addrs)
        self.gone.append(False)
        self._timer_seq.append(-1)
        self._timer_at.append(INF)
        if start is True:
            self.start(i)
        elif start is not False:
            self.start(i, at=float(start))
        return e

    def add_settled(self, n: int) -> list[int]:
        """n nodes on the first segment, up now and each in every other's map: each has heard one
        announce of every other, first-hand, as after a join storm that went well. For runs of the
        steady state at sizes whose storm would take the engines too long (N^2 receptions here,
        uncounted, and no join traffic: their JOINs are never sent, nobody answers)."""
        # an announce a microsecond after the start, whatever the cluster size; no JOIN retries
        warm = replace(self.settings, announce_interval=WARM, announce_rate=1.0 / WARM, join_retries=())
        nodes = [len(self.engines) + k for k in range(n)]
        for _ in nodes:
            self.add(start=False, settings=warm)
        start, now = self.now, self.now + (EARLY_ANNOUNCES + 1) * WARM
        announces: list[tuple[int, list[Outgoing]]] = []
        for i in nodes:
            e = self.engines[i]
            self.up[i] = True
            e.start(start)  # its JOIN: dropped
            for _ in range(EARLY_ANNOUNCES - 1):  # settled: a joiner's early announcements are over
                e.tick(e.next_announce)  # (dropped too: the last, below, is what every node heard)
            announces.append((i, e.tick(now)))
        self.now = now
        with _decoded_once():
            for i, out in announces:
                for o in out:
                    for j in nodes:
                        if j != i:
                            self.engines[j].receive(o.data, now, self.segments[0].name, self._on[i][0])
        for i in nodes:
            self.engines[i].reconfigure(self.settings, now)
            self._reschedule(i)
        return nodes

    def _wall(self) -> float:
        return self.now

    def _auth(self) -> Authenticator | None:
        return None if self.key is None else Authenticator(Keyring((self.key,)), self._wall, 5.0, mono=self._wall)

    def _watch(self, i: int, e: Engine) -> None:
        """Tell the observers of every change the engine records (join, leave, expire...), as it
        happens: the engine's own event recorder, which the handlers get, still gets them all."""
        record = e.events.add

        def observed(kind: str, node_id: int, addresses: tuple[IPAddress, ...]) -> None:
            record(kind, node_id, addresses)
            for observer in self.observers:
                observer(i, kind, addresses[0])

        e.events.add = observed  # type: ignore[method-assign]

    # --- what happens to nodes -------------------------------------------------------------------

    def at(self, when: float | None, action: Callable[[], None]) -> None:
        """Run `action` at virtual time `when` (None: now)."""
        if when is None or when <= self.now:
            action()
        else:
            self._push(when, _ACTION, action, None, None)

    def start(self, i: int, at: float | None = None) -> None:
        def go() -> None:
            if self.up[i] or self.gone[i]:
                return
            self.up[i] = True
            self._emit(i, self.engines[i].start(self.now))
            self._reschedule(i)
        self.at(at, go)

    def restart(self, i: int, engine: Engine | None = None, at: float | None = None) -> None:
        """Node i, crashed or stopped, comes back: `engine`, or a new life of the one it had
        (same addresses and settings, the next incarnation), started then."""
        def go() -> None:
            if not self.gone[i]:
                return
            old = self.engines[i]
            e = engine or Engine(old.local, old.incarnation + 1, old.settings, random.Random(self.rng.random()),
                                 wall=self._wall, auth=self._auth())
            self._watch(i, e)
            self.engines[i] = e
            self.gone[i] = False
            self.start(i)
        self.at(at, go)

    def crash(self, i: int, at: float | None = None) -> None:
        """kill -9: silent from now on; what it had sent is still on its way."""
        self.at(at, lambda: self._down(i))

    def stop(self, i: int, at: float | None = None) -> None:
        """A clean stop: the engine's LEAVE, then silence."""
        def go() -> None:
            if self.up[i]:
                self._emit(i, self.engines[i].shutdown())
            self._down(i)
        self.at(at, go)

    def stall(self, i: int, duration: float, at: float | None = None) -> None:
        """SIGSTOP for `duration` seconds, then SIGCONT."""
        def go() -> None:
            if self.up[i] and not self.stalled[i]:
                self.stalled[i] = True
                self._queued[i] = []
                self.at(self.now + duration, lambda: self._resume(i))
        self.at(at, go)

    def partition(self, nodes: Iterable[int], duration: float | None = None, at: float | None = None) -> None:
        """Cut `nodes` off from the others (for `duration` seconds; None: until heal())."""
        chosen = list(nodes)

        def go() -> None:
            side, self._next_side = self._next_side, self._next_side + 1
            for i in chosen:
                self.side[i] = side
            if duration is not None:
                self.heal(at=self.now + duration)
        self.at(at, go)

    def heal(self, at: float | None = None) -> None:
        def go() -> None:
            self.side = [0] * len(self.side)
        self.at(at, go)

    def _down(self, i: int) -> None:
        if self.gone[i]:
            return
        was_up, self.up[i], self.gone[i], self.stalled[i] = self.up[i], False, True, False
        self._queued.pop(i, None)
        self._timer_seq[i] = -1
        if was_up:
            for observer in self.observers:
                observer(i, "down", self.engines[i].local.primary)

    def _resume(self, i: int) -> None:
        if not self.stalled[i]:
            return  # crashed meanwhile
        self.stalled[i] = False
        for data, interface, source, multicast in self._queued.pop(i, []):
            if self.up[i]:
                self._deliver(i, data, interface, source, multicast)
        self._timer_at[i] = INF
        self._reschedule(i)

    def send(self, i: int, out: list[Outgoing]) -> None:
        """Send these from node i now, as if its engine had returned them (a test's own datagrams)."""
        self._emit(i, out)

    # --- the run ---------------------------------------------------------------------------------

    def run_until(self, t_end: float) -> None:
        with _decoded_once() if self.share_decode else contextlib.nullcontext():
            self._run_until(t_end)
        self.now = max(self.now, t_end)

    def _run_until(self, t_end: float) -> None:
        events = self._events
        pop = heapq.heappop
        while events and events[0][0] <= t_end:
            t, seq, kind, a, b, c = pop(events)
            self.now = t
            if kind == _MULTICAST:
                self._multicast(a, b, c)
            elif kind == _UNICAST:
                self._unicast(a, b, c)
            elif kind == _TIMER:
                if seq == self._timer_seq[a]:
                    self._timer(a)
            else:
                a()

    def run_for(self, duration: float) -> None:
        self.run_until(self.now + duration)

    def _reschedule(self, i: int, ticked: bool = False) -> None:
        """Keep one timer event per node, at its engine's deadline; a later deadline is found when
        the earlier event fires (no push for each datagram that moves it later). A deadline still
        due right after a tick comes a microsecond later, as a real loop's clock would have moved
        (Membership's next_expiry, last_heard + dead_interval, can be a rounding short of what
        expire() takes, now - last_heard >= dead_interval: in virtual time that would spin)."""
        if not self.up[i]:
            return
        d = self.engines[i].next_deadline()
        if d < self._timer_at[i]:
            d = max(d, self.now + TICK if ticked else self.now)
            self._timer_at[i] = d
            self._timer_seq[i] = self._push(d, _TIMER, i, None, None)

    def _timer(self, i: int) -> None:
        self._timer_at[i] = INF
        self._timer_seq[i] = -1
        if not self.up[i] or self.stalled[i]:
            return  # a stalled node's timers fire when it resumes, late
        # ticked even if the deadline moved later meanwhile: harmless, the daemon ticks on every wake
        self._emit(i, self.engines[i].tick(self.now))
        self._reschedule(i, ticked=True)


@contextlib.contextmanager
def _decoded_once() -> Iterator[None]:
    """While the simulator runs, the engines' decode() of the very datagram (the same bytes object)
    decoded last returns the same Message: every receiver of a multicast decoded it alike (decode is
    pure, its Message immutable), and N decodes of each multicast would be most of the run's time.
    What a real daemon pays to decode is measured elsewhere (tests.bench.sim prints it)."""
    decode = engine_module.decode
    last: list[tuple[bytes, Message]] = []

    def shared(data: bytes) -> Message:
        if last and last[0][0] is data:
            return last[0][1]
        msg = decode(data)  # a DecodeError is raised again each time, like decode's
        last[:] = [(data, msg)]  # holds `data`: its id cannot be reused while it is the key
        return msg

    engine_module.decode = shared  # type: ignore[assignment]
    try:
        yield
    finally:
        engine_module.decode = decode  # type: ignore[assignment]
