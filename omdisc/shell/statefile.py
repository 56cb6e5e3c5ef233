"""state.json: what the binary table cannot say (members, gateways, counters), for showmap --json
and --members, written whole or not at all beside the alpha files."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path

from omdisc.shell.files import write_atomic
from omdisc.shell.sinks import STATE

TYPE_CHECKING = False  # typing is mypy's only: never loaded at run time (docs/architecture.md)
if TYPE_CHECKING:
    from typing import Any

MEMBERS_AT_ONCE = 64  # state.json's members encoded this many at a time (see encode_state)
_COMPACT = (",", ":")


def encode_state(state: dict[str, Any]) -> bytes:
    """state.json: what json.dumps(state, separators=(",", ":")) gives, but the members (a list,
    or an iterator: Engine.state's lazy_members) are encoded a few at a time, straight to bytes.
    Made and encoded at once, every member's dict and the many small strings of their text would
    live together, and the text be copied twice more on its way to bytes: memory kept for good
    after the first write (Python does not give back partly used memory)."""
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


def write_state(alpha_dir: Path, state: dict[str, Any]) -> None:
    """state.json in the alpha directory, atomically; an OSError when it cannot be written."""
    write_atomic(alpha_dir / STATE, encode_state(state))
