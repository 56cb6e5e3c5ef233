"""Journal MESSAGE_IDs, one per kind of event, so `journalctl MESSAGE_ID=...` finds them all.

The ids are part of the interface (docs/journal.md, omdiscd(8)): never change one.
"""

from __future__ import annotations

import logging
from ipaddress import IPv4Address, IPv6Address

JOIN = "b37eb46cae3441e39dc257f39a31b7a7"
LEAVE = "b1a84a5d9363451ca7334e1568719194"
EXPIRE = "4fa561446c694b0fb731914875959e54"
COLLISION = "605a4045c9304c92a8217d4b9c05e375"
MAP_WRITTEN = "244b79dc0e52487195783234d580dbbf"
UPDATE = "1f5dfe380338491eb8375384e70c45bd"
STARTED = "fda2de65345e4a3cb1539d770e28d9a9"
STOPPED = "4b29337867bb47078a758f81f7c31dac"


def log_peer(logger: logging.Logger, message_id: str, fmt: str, node_id: int,
             peer: IPv4Address | IPv6Address, *args: object, level: int = logging.INFO) -> None:
    """Log an event about one peer with the fields journald indexes (OMDISC_PEER, OMDISC_PEER_ID)."""
    extra = {"MESSAGE_ID": message_id, "OMDISC_PEER": str(peer), "OMDISC_PEER_ID": str(node_id)}
    logger.log(level, fmt, node_id, peer, *args, extra={"journal": extra})


def log_event(logger: logging.Logger, message_id: str, fmt: str, *args: object,
              level: int = logging.INFO, **fields: object) -> None:
    extra = {"MESSAGE_ID": message_id, **{k: str(v) for k, v in fields.items()}}
    logger.log(level, fmt, *args, extra={"journal": extra})
