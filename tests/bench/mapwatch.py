"""When each daemon's map first held a given number of nodes, stamped as its files arrive: an
inotify watch on every alpha directory, read in a thread, as the serf bench stamps serf's log lines
as they arrive. The observer does not poll, so it takes little of the CPU the daemons need.

Two files per daemon: om_config, what the kernel is given, and state.json, what `showmap
--members` shows (the daemon replaces each by a rename, so one IN_MOVED_TO is one new version).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from omdisc.shell.inotify import IN_MOVED_TO, Inotify
from omdisc.shell.sinks import ALPHA_CONFIG, STATE
from tests.bench.converge import in_map
from tests.bench.crash import in_state
from tests.lab.netlab import Daemon

MAP = ALPHA_CONFIG  # what the kernel is given; STATE: what showmap --members shows
COUNTS: dict[str, Callable[[Daemon], int]] = {MAP: in_map, STATE: in_state}


class MapWatch:
    """Every version of the watched daemons' map files, counted as it arrives (time.monotonic)."""

    def __init__(self) -> None:
        self._inotify = Inotify()
        self._daemons: dict[int, Daemon] = {}  # watch descriptor -> its daemon
        self._seen: dict[tuple[Path, str, int], list[float]] = {}  # (daemon's dir, file, nodes) -> when
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="mapwatch")
        self._thread.start()

    def add(self, d: Daemon) -> None:
        """Watch `d` from now on; what its files hold already counts as seen now."""
        self._daemons[self._inotify.add_watch(d.alpha, IN_MOVED_TO)] = d
        now = time.monotonic()
        for name in COUNTS:
            self._count(d, name, now)

    def first(self, d: Daemon, name: str, nodes: int, since: float) -> float | None:
        """When `d`'s file `name` (MAP, STATE) first held `nodes` nodes, at or after `since`."""
        with self._lock:
            return next((t for t in self._seen.get((d.dir, name, nodes), []) if t >= since), None)

    def everywhere(self, daemons: list[Daemon], name: str, nodes: int, since: float) -> float | None:
        """When the last of `daemons` had `nodes` nodes in `name`, or None while one has not."""
        times = [self.first(d, name, nodes, since) for d in daemons]
        return None if None in times else max(t for t in times if t is not None)

    def close(self) -> None:
        self._done.set()
        self._thread.join(5)
        self._inotify.close()

    def _run(self) -> None:
        while not self._done.is_set():
            events = self._inotify.read(0.1)
            now = time.monotonic()  # the batch's arrival, before any file of it is read
            for ev in events:
                d = self._daemons.get(ev.wd)
                if d is not None and ev.name in COUNTS:
                    self._count(d, ev.name, now)

    def _count(self, d: Daemon, name: str, now: float) -> None:
        nodes = COUNTS[name](d)
        with self._lock:
            self._seen.setdefault((d.dir, name, nodes), []).append(now)
