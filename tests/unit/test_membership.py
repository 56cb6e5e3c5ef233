from __future__ import annotations

from ipaddress import ip_address

from omdisc.membership import Change, Claim, Membership
from omdisc.protocol import MemberRecord

A = ip_address("198.18.0.1")
B = ip_address("198.18.0.2")


def claim(seq: int, inc: int = 10, addr=A, node_id: int = 1) -> Claim:  # type: ignore[no-untyped-def]
    return Claim(node_id, (addr,), inc, seq)


def test_join_refresh_duplicate_and_reordered_messages() -> None:
    m = Membership(dead_interval=5)
    assert m.heard(claim(1), now=0) is Change.JOINED
    v = m.version
    assert m.heard(claim(2), now=1) is Change.REFRESHED
    assert m.heard(claim(2), now=1.5) is Change.STALE  # duplicate
    assert m.heard(claim(1), now=1.6) is Change.STALE  # late, reordered
    assert m.version == v  # none of that touches the map
    assert m.members[A].last_heard == 1


def test_restart_is_a_new_incarnation_and_an_update() -> None:
    m = Membership(dead_interval=5)
    m.heard(claim(50), now=0)
    assert m.heard(Claim(1, (A, B), 11, 1), now=1) is Change.UPDATED
    assert m.members[A].addresses == (A, B)


def test_expiry_uses_the_injected_clock() -> None:
    m = Membership(dead_interval=5)
    m.heard(claim(1), now=0)
    m.heard(claim(1, addr=B, node_id=2), now=3)
    assert m.next_expiry() == 5
    assert m.expire(now=4.9) == []
    assert [x.primary for x in m.expire(now=5)] == [A]
    assert [x.primary for x in m.expire(now=8)] == [B]


def test_leave_removes_and_an_older_message_cannot_resurrect() -> None:
    m = Membership(dead_interval=5)
    m.heard(claim(1), now=0)
    assert m.left(claim(2), now=1) is Change.LEFT
    assert A not in m
    assert m.heard(claim(1), now=1.1) is Change.STALE  # delayed announce from before the LEAVE
    assert m.learned(MemberRecord(1, 10, 0, (A,)), now=1.2) is Change.STALE  # second-hand, same life
    assert m.heard(claim(1, inc=11), now=2) is Change.JOINED  # restarted: welcome back


def test_leave_without_remove_on_leave_keeps_the_node_until_expiry() -> None:
    m = Membership(dead_interval=5, remove_on_leave=False)
    m.heard(claim(1), now=0)
    assert m.left(claim(2), now=1) is Change.LEFT
    assert m.members[A].leaving
    assert m.expire(now=4) == []
    assert [x.primary for x in m.expire(now=5)] == [A]


def test_second_hand_knowledge_keeps_its_age() -> None:
    m = Membership(dead_interval=5)
    assert m.learned(MemberRecord(1, 10, 2000, (A,)), now=10) is Change.JOINED
    assert m.members[A].last_heard == 8  # heard 2 s before the snapshot's sender told us
    assert m.learned(MemberRecord(2, 10, 6000, (B,)), now=10) is Change.STALE  # already dead
    assert m.expire(now=12.9) == [] and len(m.expire(now=13)) == 1
