"""The map to its destination: the kernel table to the sink, the rest to state.json (and the
metrics file with it), when the throttle (core.throttle) says each is due; what the table cannot
hold and who collides said once per change (core.mapnotes). MapWriter conducts them."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from omdisc.core import events, mapnotes
from omdisc.core.engine import Engine, Settings
from omdisc.core.protocol import IPAddress
from omdisc.core.table import Table
from omdisc.core.throttle import Throttle
from omdisc.shell.metricsfile import MetricsFile
from omdisc.shell.sinks import AlphaSink, LiveSink
from omdisc.shell.statefile import write_state

TYPE_CHECKING = False  # typing is mypy's only: never loaded at run time (docs/architecture.md)
if TYPE_CHECKING:
    from typing import Any

klog = logging.getLogger("omdisc.kernel")

ANSWER_MARGIN = 0.5  # seconds for an answer's way back to a loaded host, and its reading


def first_map_wait(settings: Settings, cluster_size: int) -> float:
    """Seconds a restarted node keeps its last map (of a cluster of this size) while it does not
    know every node of it again: until the answer to its last JOIN retry may have come. That retry
    is answered even where our JOINs outran the peers' answer rate (restarts less than a second
    apart); at once by the node expected first, within the cluster's answer spread should it be gone."""
    return max(settings.join_retries, default=0.0) + settings.answers.slowest(cluster_size) + ANSWER_MARGIN


class MapWriter:
    """Writes the map and state.json when due; the daemon calls flush() each loop pass and sleeps
    until next_due()."""

    def __init__(self, sink: AlphaSink | LiveSink, alpha_dir: Path, stats: Counter[str],
                 extra_state: Callable[[], dict[str, Any]], on_written: Callable[[], None],
                 on_event: Callable[[str, int, tuple[IPAddress, ...]], None] = lambda *a: None,
                 metrics_file: Path | None = None, gauges: Callable[[], dict[str, float]] = dict) -> None:
        self.sink = sink
        self.alpha_dir = alpha_dir
        self.stats = stats
        self.extra_state = extra_state
        self.on_written = on_written
        self.metrics_file = metrics_file
        self.written: Table | None = None  # the table last given to the kernel, and our id in it
        self.written_id = 0
        self._throttle = Throttle()
        self._last_map: frozenset[int] = frozenset()  # a restart's: the node ids its first map waits for
        self._last_known = (-1, False)  # (map version, whether it knew them all)
        self._metrics = MetricsFile(stats, gauges)
        self._collisions = mapnotes.Collisions(on_event)
        self._left_out = mapnotes.LeftOut()

    def hold_first_map(self, last_map: frozenset[int], until: float) -> None:
        """A restarted node: the last life's map (`last_map`: its node ids) is kept until the nodes
        known include every one of them, or `until`."""
        self._last_map = last_map
        self._throttle.hold_until = until

    def touch(self) -> None:
        """Something state.json shows has changed (counters, ages)."""
        self._throttle.touch()

    def next_due(self, engine: Engine) -> float:
        """When flush() has something to write that the throttle held back; inf: nothing."""
        return min(self._map_due(engine), self._throttle.state_due())

    def _map_due(self, engine: Engine) -> float:
        return self._throttle.map_due(engine.map_version, len(engine.membership), self._knows_last_map(engine))

    def _knows_last_map(self, engine: Engine) -> bool:
        """Every node of the last life's map is known again; looked at once per map change."""
        if not self._throttle.holding:
            return True
        if self._last_known[0] != engine.map_version:
            known = {m.node_id for m in engine.membership.members.values()}
            known.add(engine.local.node_id)
            self._last_known = (engine.map_version, self._last_map <= known)
        return self._last_known[1]

    def flush(self, engine: Engine, now: float) -> None:
        self._throttle.hold_over(now)
        if now >= self._map_due(engine):
            self._write_map(engine, now)
        if now >= self._throttle.state_due():
            self._write_state(engine, now)

    def _write_map(self, engine: Engine, now: float) -> None:
        version = engine.map_version
        table = engine.table()
        my_id = mapnotes.my_id(engine.local, table)
        self._collisions.report(engine.local, table)
        self._throttle.map_tried(now)
        try:
            self.sink.write(my_id, table)
        except OSError as e:
            self.stats["map_write_errors"] += 1
            klog.error("cannot write the map to %s: %s (will retry)", self.sink.description, e.strerror or e)
            return
        self._throttle.map_written(version, len(engine.membership))
        self.written, self.written_id = table, my_id
        self.stats["map_writes"] += 1
        self._left_out.report(engine.local, table)
        events.log_event(klog, events.MAP_WRITTEN, "map written: %d nodes, %d entries", len(engine.membership) + 1,
                         len(table.entries), OMDISC_MAP_ENTRIES=len(table.entries))
        self.on_written()

    def _write_state(self, engine: Engine, now: float) -> None:
        self._throttle.state_written(now, len(engine.membership))
        state = engine.state(now, lazy_members=True)  # member dicts made a batch at a time
        state.update(self.extra_state())
        try:
            write_state(self.alpha_dir, state)
        except OSError as e:
            klog.debug("cannot write state: %s", e)
        if self.metrics_file is not None:
            self._metrics.write(self.metrics_file)
