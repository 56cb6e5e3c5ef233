"""The map as JSON: what showmap --json prints, and what an event handler reads on stdin."""

from __future__ import annotations

import json

from omdisc.core.table import Entry

TYPE_CHECKING = False  # typing is mypy's only: never loaded at run time (docs/architecture.md)
if TYPE_CHECKING:
    from typing import Any

# what state.json adds to the table, in this order
STATE_KEYS = ("addresses", "members", "gateways", "interfaces", "gateway", "keys", "kernel", "stats")


def as_json(node_id: int, entries: list[Entry], state: dict[str, Any]) -> str:
    out: dict[str, Any] = {"node_id": node_id, "entries": [e.as_json() for e in entries]}
    for key in STATE_KEYS:
        if key in state:
            out[key] = state[key]
    return json.dumps(out, indent=2)
