"""The map to its destination: the kernel table to the sink, the rest to state.json, each write
throttled so that no flood of changes can keep the loop writing; what the table cannot hold and
who collides, said once per change. The metrics file (Prometheus text) goes with state.json."""

from __future__ import annotations

import itertools
import json
import logging
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from omdisc.core import events, metrics
from omdisc.core.engine import Engine
from omdisc.core.protocol import IPAddress
from omdisc.core.table import Entry, Table
from omdisc.shell.sinks import STATE, AlphaSink, LiveSink, write_atomic

log = logging.getLogger("omdisc")
klog = logging.getLogger("omdisc.kernel")

MAP_INTERVAL = 0.05  # the kernel map: at most 20 writes a second
# state.json: a map change is written with the map when none was in the last STATE_AFTER_MAP
# seconds (showmap --json and --members follow the kernel table at once after a quiet spell), else
# at most 4 a second; counters and ages alone at most one a second: no flood keeps the loop writing.
STATE_AFTER_MAP = 0.25
STATE_INTERVAL = 1.0
# counters alone: state.json costs about 5 ms to write at 1,000 members, so beyond 100 members it is
# written every (members / 100) s at most, up to STATE_INTERVAL_MAX (idle CPU stays flat with size)
STATE_MEMBERS_A_SECOND = 100
STATE_INTERVAL_MAX = 10.0
FIRST_MAP_WAIT = 1.0  # seconds a restarted node waits for another before its first map shows only itself
COLLISIONS_SAID = 8  # new collisions named per map write; the rest are counted in one line
MEMBERS_AT_ONCE = 64  # state.json's members encoded this many at a time (see encode_state)
_COMPACT = (",", ":")


def encode_state(state: dict[str, Any]) -> bytes:
    """state.json: what json.dumps(state, separators=(",", ":")) gives, but the members (a list,
    or an iterator: Engine.state's lazy_members) are encoded a few at a time, straight to bytes.
    Made and encoded at once, 1,000 members' dicts and the 20,000 small strings of their text live
    together, 1 MB, and the text is copied twice more on its way to bytes: RSS kept for good after
    the first write (Python does not give back partly used memory)."""
    parts: list[bytes] = []
    for key, value in state.items():
        parts.append(f'{"," if parts else "{"}{json.dumps(key)}:'.encode())
        if key != "members" or not isinstance(value, list | Iterator):
            parts.append(json.dumps(value, separators=_COMPACT).encode())
            continue
        parts.append(b"[")
        members = iter(value)
        while batch := list(itertools.islice(members, MEMBERS_AT_ONCE)):
            parts.append(b"," if parts[-1] != b"[" else b"")
            parts.append(json.dumps(batch, separators=_COMPACT)[1:-1].encode())
        parts.append(b"]")
    parts.append(b"}\n" if parts else b"{}\n")
    return b"".join(parts)


class MapWriter:
    def __init__(self, sink: AlphaSink | LiveSink, state_dir: Path, stats: Counter[str],
                 extra_state: Callable[[], dict[str, Any]], on_written: Callable[[], None],
                 on_event: Callable[[str, int, tuple[IPAddress, ...]], None] = lambda *a: None,
                 metrics_file: Path | None = None, gauges: Callable[[], dict[str, float]] = dict) -> None:
        self.sink = sink
        self.on_event = on_event  # a new collision (the event handlers' `collision`)
        self.metrics_file = metrics_file
        self.gauges = gauges
        self.written: Table | None = None  # the table last given to the kernel, and our id in it
        self.written_id = 0
        self._metrics_failed = False
        self.state_dir = state_dir
        self.stats = stats
        self.extra_state = extra_state
        self.on_written = on_written
        self._written_version = -1
        # until then the first map waits for another node to be heard (a restart: the kernel and
        # showmap keep the last life's map, not one of this node alone for the ~50 ms the answers take)
        self.hold_until = float("-inf")
        self._map_at = float("-inf")
        self._lone = False  # the map last written was of this node alone
        self._state_at = float("-inf")  # state.json last written, for whatever reason
        self._state_map_at = float("-inf")  # ... last written with a map change
        self._state_dirty = True
        self._state_map_pending = False  # a written map that state.json does not show yet
        self._state_wait = STATE_INTERVAL
        self._dropped_reported: tuple[Entry, ...] = ()
        self._ipv6_only_reported: set[Any] = set()
        self._collisions_reported: set[tuple[Any, ...]] = set()

    def touch(self) -> None:
        """Something state.json shows has changed (counters, ages)."""
        self._state_dirty = True

    def next_due(self, engine: Engine) -> float:
        """When flush() has something to write that the throttle held back; inf: nothing."""
        due = float("inf")
        if engine.map_version != self._written_version:
            due = self._map_due(engine)
        if self._state_dirty:
            due = min(due, self._state_due())
        return due

    def _state_due(self) -> float:
        """A map change waits only for the last map change's write, not for a counters' write."""
        if self._state_map_pending:
            return self._state_map_at + STATE_AFTER_MAP
        return self._state_at + self._state_wait

    def _map_due(self, engine: Engine) -> float:
        """The earliest a changed map may be written: the throttle, and a restart's first-map hold."""
        return max(self._map_at + self._gap(engine), self._held(engine))

    def _gap(self, engine: Engine) -> float:
        """MAP_INTERVAL between writes, but none between a map of this node alone and the first
        with others (a newcomer's first answer): the kernel learns the cluster at once, not up to
        50 ms later. Two writes per interval at most, whatever a peer does."""
        return 0.0 if self._lone and len(engine.membership) else MAP_INTERVAL

    def _held(self, engine: Engine) -> float:
        """Until when the first map is held back: only while nobody else has been heard."""
        return self.hold_until if self.written is None and not len(engine.membership) else float("-inf")

    def flush(self, engine: Engine, now: float) -> None:
        if engine.map_version != self._written_version and now >= self._map_due(engine):
            self._write_map(engine, now)
        if self._state_dirty and now >= self._state_due():
            self._write_state(engine, now)

    def _write_map(self, engine: Engine, now: float) -> None:
        version = engine.map_version
        table = engine.table()
        my_id = self._report_collisions(engine, table)
        self._map_at = now
        try:
            self.sink.write(my_id, table)
        except OSError as e:
            self.stats["map_write_errors"] += 1
            klog.error("cannot write the map to %s: %s (will retry)", self.sink.description, e.strerror or e)
            return
        self._written_version = version
        if self._lone and len(engine.membership):
            # a newcomer's first answer: in state.json at once too, as in the kernel table (_gap)
            self._state_map_at = float("-inf")
        self._lone = not len(engine.membership)
        self.written, self.written_id = table, my_id
        self.stats["map_writes"] += 1
        self._report_left_out(engine, table)
        events.log_event(klog, events.MAP_WRITTEN, "map written: %d nodes, %d entries", len(engine.membership) + 1,
                         len(table.entries), OMDISC_MAP_ENTRIES=len(table.entries))
        self._state_dirty = True
        self._state_map_pending = True
        self.on_written()

    def _write_state(self, engine: Engine, now: float) -> None:
        self._state_at = now
        if self._state_map_pending:
            self._state_map_at = now
        self._state_dirty = self._state_map_pending = False
        self._state_wait = min(STATE_INTERVAL_MAX, max(STATE_INTERVAL, len(engine.membership) / STATE_MEMBERS_A_SECOND))
        state = engine.state(now, lazy_members=True)  # member dicts made a batch at a time
        state.update(self.extra_state())
        try:
            write_atomic(self.state_dir / STATE, encode_state(state))
        except OSError as e:
            klog.debug("cannot write state: %s", e)
        if self.metrics_file is not None:
            self._write_metrics(self.metrics_file)

    def _write_metrics(self, path: Path) -> None:
        """node_exporter's textfile collector reads it: atomically, readable by its user."""
        try:
            write_atomic(path, metrics.render(self.stats, self.gauges()).encode())
        except OSError as e:
            self.stats["metrics_write_errors"] += 1
            if not self._metrics_failed:  # said once until it works again
                log.warning("cannot write the metrics file %s: %s", path, e.strerror or e)
            self._metrics_failed = True
            return
        self._metrics_failed = False

    def _report_left_out(self, engine: Engine, table: Table) -> None:
        """What the kernel table cannot hold, said once per change, not at every write."""
        if table.dropped != self._dropped_reported:
            self._dropped_reported = table.dropped
            if table.dropped:
                shown = ", ".join(e.text() for e in table.dropped[:8])
                more = f" and {len(table.dropped) - 8} more" if len(table.dropped) > 8 else ""
                klog.warning("the map has %d entries; openMosix takes %d: left out %s%s",
                             len(table.entries) + len(table.dropped), len(table.entries), shown, more)
        for addr in set(table.ipv6_only) - self._ipv6_only_reported:
            if addr in engine.local.addresses:
                klog.info("this node (%s) is IPv6-only: the openMosix table is IPv4, it has no place there", addr)
            else:
                klog.info("node %s has no IPv4 address: listed by showmap --json, not in the kernel table", addr)
        self._ipv6_only_reported = set(table.ipv6_only)

    def _report_collisions(self, engine: Engine, table: Table) -> int:
        """Warn once per collision while it lasts; our own id, or 0 when another node keeps it.
        Only the collisions of the current table are remembered, so the set cannot grow past it."""
        me = engine.local
        my_id = me.node_id
        current = set()
        new = 0
        for c in table.collisions:
            key = (c.node_id, c.owner, c.losers)
            current.add(key)
            if me.primary in c.losers:
                my_id = 0
            if key in self._collisions_reported:
                continue
            self.on_event("collision", c.node_id, (c.owner, *c.losers))
            new += 1
            if new > COLLISIONS_SAID:
                continue
            events.log_event(
                log, events.COLLISION,
                "node id %d is claimed by %s and %s: %s keeps it (lowest address wins); "
                "set node_id on the other%s", c.node_id, c.owner, ", ".join(map(str, c.losers[:8])), c.owner,
                " -- this node is left out of the map" if me.primary in c.losers else "",
                level=logging.WARNING, OMDISC_PEER=c.losers[0] if c.owner == me.primary else c.owner,
                OMDISC_COLLISION_ID=c.node_id)
        if new > COLLISIONS_SAID:
            log.warning("and %d more node id collisions (showmap --json lists every member)", new - COLLISIONS_SAID)
        self._collisions_reported = current
        return my_id
