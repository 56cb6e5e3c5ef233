"""Journal MESSAGE_IDs, one per kind of event, so `journalctl MESSAGE_ID=...` finds them all.

The ids are part of the interface (docs/journal.md, omdiscd(8)): never change one.

Beside the log lines, a Recorder keeps what happened (join, leave, expire, update, collision, map)
for the event handlers (handlers.py): the engine and the map writer append, the daemon drains it
each loop pass. Pure and bounded: nothing is kept unless handlers want it.
"""

from __future__ import annotations

import logging
from collections import Counter

from omdisc.core.protocol import IPAddress
from omdisc.core.records import record

JOIN = "b37eb46cae3441e39dc257f39a31b7a7"
LEAVE = "b1a84a5d9363451ca7334e1568719194"
EXPIRE = "4fa561446c694b0fb731914875959e54"
COLLISION = "605a4045c9304c92a8217d4b9c05e375"
MAP_WRITTEN = "244b79dc0e52487195783234d580dbbf"
UPDATE = "1f5dfe380338491eb8375384e70c45bd"
STARTED = "fda2de65345e4a3cb1539d770e28d9a9"
STOPPED = "4b29337867bb47078a758f81f7c31dac"


def log_peer(logger: logging.Logger, message_id: str, fmt: str, node_id: int,
             peer: IPAddress, *args: object, level: int = logging.INFO) -> None:
    """Log an event about one peer with the fields journald indexes (OMDISC_PEER, OMDISC_PEER_ID)."""
    extra = {"MESSAGE_ID": message_id, "OMDISC_PEER": str(peer), "OMDISC_PEER_ID": str(node_id)}
    logger.log(level, fmt, node_id, peer, *args, extra={"journal": extra})


def log_event(logger: logging.Logger, message_id: str, fmt: str, *args: object,
              level: int = logging.INFO, **fields: object) -> None:
    extra = {"MESSAGE_ID": message_id, **{k: str(v) for k, v in fields.items()}}
    logger.log(level, fmt, *args, extra={"journal": extra})


# --- what happened, for the event handlers --------------------------------------------------------

KINDS = ("join", "leave", "expire", "update", "collision", "map")
RECORDED = 4096  # events kept between two drains (one loop pass): an expiry of max_nodes members fits


@record(frozen=True, slots=True)
class Event:
    """Something a handler runs for: what happened, to which node, at which addresses."""

    kind: str  # one of KINDS
    node_id: int
    addresses: tuple[IPAddress, ...]


class Recorder:
    """Events since the daemon last drained them. Off (nothing kept) unless a handler is configured;
    past `limit` an event is counted (handler_events_dropped), never kept: memory stays bounded."""

    def __init__(self, stats: Counter[str], limit: int = RECORDED) -> None:
        self.stats = stats
        self.limit = limit
        self.wanted: frozenset[str] = frozenset()  # the kinds some handler runs for; none: off
        self._events: list[Event] = []

    def __len__(self) -> int:
        return len(self._events)

    def add(self, kind: str, node_id: int, addresses: tuple[IPAddress, ...]) -> None:
        if kind not in self.wanted:
            return
        if kind == "map":  # one stands for all: the newest replaces any waiting, and always finds room
            self._events = [e for e in self._events if e.kind != "map"]
        elif len(self._events) >= self.limit:
            self.stats["handler_events_dropped"] += 1
            return
        self._events.append(Event(kind, node_id, addresses))

    def drain(self) -> list[Event]:
        out, self._events = self._events, []
        return out
