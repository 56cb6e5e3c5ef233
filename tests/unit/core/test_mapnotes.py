"""What is said of a map written (core.mapnotes): each collision and each thing left out of the
kernel table once while it lasts, and this node's id 0 when another node keeps it."""

from __future__ import annotations

from ipaddress import IPv4Address, ip_address

import pytest

from omdisc.core import mapnotes
from omdisc.core.engine import LocalNode
from omdisc.core.nodeid import Collision
from omdisc.core.table import Entry, Table

ME = LocalNode(7, (ip_address("198.18.0.7"),))
LOWER = ip_address("198.18.0.3")


def collision(node_id: int, owner: str, *losers: str) -> Collision:
    return Collision(node_id, ip_address(owner), tuple(ip_address(a) for a in losers))


def test_a_collision_is_said_once_while_it_lasts_and_again_when_it_comes_back(
        caplog: pytest.LogCaptureFixture) -> None:
    said: list[tuple[object, ...]] = []
    notes = mapnotes.Collisions(lambda *event: said.append(event))
    lost = Table((), (Collision(7, LOWER, (ME.primary,)),))
    assert mapnotes.my_id(ME, lost) == 0 and mapnotes.my_id(ME, Table(())) == 7
    notes.report(ME, lost)
    notes.report(ME, lost)
    assert said == [("collision", 7, (LOWER, ME.primary))]
    assert [r.getMessage().endswith("this node is left out of the map") for r in caplog.records] == [True]
    notes.report(ME, Table(()))  # over: forgotten, so said again when it comes back
    notes.report(ME, lost)
    assert len(said) == 2


def test_past_the_few_named_collisions_the_rest_are_counted_in_one_line(caplog: pytest.LogCaptureFixture) -> None:
    said: list[tuple[object, ...]] = []
    many = Table((), tuple(collision(i, f"198.18.1.{i}", f"198.18.2.{i}") for i in range(1, 13)))
    mapnotes.Collisions(lambda *event: said.append(event)).report(ME, many)
    assert len(said) == 12  # every one to the handlers
    assert len(caplog.records) == mapnotes.COLLISIONS_SAID + 1
    assert caplog.records[-1].getMessage().startswith(f"and {12 - mapnotes.COLLISIONS_SAID} more node id")


def test_what_the_table_leaves_out_is_said_once_per_change(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="omdisc.kernel")
    notes = mapnotes.LeftOut()
    dropped = tuple(Entry(300 + i, IPv4Address(f"198.18.3.{i + 1}")) for i in range(10))
    v6 = ip_address("2001:db8::5")
    table = Table((), (), (v6,), dropped)
    notes.report(ME, table)
    notes.report(ME, table)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert messages[0].endswith(" and 2 more") and "no IPv4 address" in messages[1]
