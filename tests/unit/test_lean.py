"""What keeps the daemon lean does not change what it does: state.json byte for byte as before."""

from __future__ import annotations

import json

import pytest

from omdisc.mapwriter import MEMBERS_AT_ONCE, encode_state
from tests.bench.lean import engine_with


@pytest.mark.parametrize("members", [0, 1, MEMBERS_AT_ONCE, MEMBERS_AT_ONCE + 1, 1000])
def test_state_json_is_what_json_dumps_writes(members: int) -> None:
    state = engine_with(members).state(200.0)
    state["keys"] = {"signing": "00ff", "accepted": ["00ff", "\u00e9\n\""]}  # nesting and escapes too
    assert len(state["members"]) == members
    assert encode_state(state) == (json.dumps(state, separators=(",", ":")) + "\n").encode()
