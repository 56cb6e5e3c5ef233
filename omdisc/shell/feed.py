"""The engine's events to the operator's handlers (shell/handlers.py runs them): which kinds the
engine records, when they are handed over, and the map each program reads on stdin."""

from __future__ import annotations

from collections.abc import Callable

from omdisc.core.config import Config
from omdisc.core.engine import Engine
from omdisc.core.mapdoc import as_json
from omdisc.shell.handlers import Runner
from omdisc.shell.loop import Loop
from omdisc.shell.mapwriter import MapWriter

TYPE_CHECKING = False  # typing is mypy's only: never loaded at run time (docs/architecture.md)
if TYPE_CHECKING:
    from typing import Any

FRESH_FOR = 1.0  # seconds a document is reused while the map stays the same (the members' ages move)


class MapDocument:
    """showmap --json of the map now, made by the daemon itself: at most once per map version and
    FRESH_FOR, however many handlers start; made anew once a map was written (its entries are the
    table written)."""

    def __init__(self, engine: Engine, writer: MapWriter, extra_state: Callable[[], dict[str, Any]],
                 clock: Callable[[], float]) -> None:
        self.engine = engine
        self.writer = writer
        self.extra_state = extra_state
        self.clock = clock
        self._made: tuple[int, float, bytes] | None = None  # (map version, when, JSON)

    def forget(self) -> None:
        self._made = None

    def __call__(self) -> bytes:
        now = self.clock()
        version = self.engine.map_version
        if self._made is not None and self._made[0] == version and now - self._made[1] < FRESH_FOR:
            return self._made[2]
        state = self.engine.state(now)
        state.update(self.extra_state())
        written = self.writer.written
        table = written if written is not None else self.engine.table()
        node_id = self.writer.written_id if written is not None else self.engine.local.node_id
        data = (as_json(node_id, list(table.entries), state) + "\n").encode()
        self._made = (version, now, data)
        return data


class HandlerFeed:
    def __init__(self, engine: Engine, writer: MapWriter, extra_state: Callable[[], dict[str, Any]],
                 loop: Loop) -> None:
        self.engine = engine
        self.document = MapDocument(engine, writer, extra_state, loop.clock)
        self.runner = Runner(engine.stats, self.document, loop)

    def configure(self, cfg: Config) -> None:
        """The handlers in force (start, SIGHUP): the engine records only what one of them runs for."""
        self.runner.configure(cfg.handlers, cfg.handler_timeout)
        self.engine.events.wanted = self.runner.kinds
        if not self.runner.wanted:
            self.engine.events.drain()

    def hand_over(self) -> None:
        """What the engine recorded, to the handlers' backlogs (never waits)."""
        if len(self.engine.events):
            self.runner.submit(self.engine.events.drain())

    def map_written(self) -> None:
        self.document.forget()
        local = self.engine.local
        self.engine.events.add("map", local.node_id, local.addresses)

    def close(self) -> None:
        self.runner.close()
