"""The metrics file (config key metrics_file): the counters and gauges in Prometheus' text format,
for node_exporter's textfile collector, written with state.json."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from omdisc.core import metrics
from omdisc.shell.files import write_atomic

log = logging.getLogger("omdisc")


class MetricsFile:
    """A failed write is counted each time but said once, until a write works again: a directory
    gone for good does not fill the journal."""

    def __init__(self, stats: Counter[str], gauges: Callable[[], dict[str, float]]) -> None:
        self.stats = stats
        self.gauges = gauges
        self._failed = False

    def write(self, path: Path) -> None:
        """Atomically, readable by node_exporter's user."""
        try:
            write_atomic(path, metrics.render(self.stats, self.gauges()).encode())
        except OSError as e:
            self.stats["metrics_write_errors"] += 1
            if not self._failed:
                log.warning("cannot write the metrics file %s: %s", path, e.strerror or e)
            self._failed = True
            return
        self._failed = False
