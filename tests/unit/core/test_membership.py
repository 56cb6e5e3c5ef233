from __future__ import annotations

import random
from ipaddress import ip_address

import pytest

from omdisc.core.membership import HEAP_SLACK, Change, Claim, Member, Membership, Rejected, Replaced
from omdisc.core.protocol import MAX_ADDRESSES, MemberRecord

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


def test_a_node_that_said_it_leaves_goes_after_the_configured_dead_interval_not_the_grown_one() -> None:
    """With probes the dead_interval grows with the cluster (the announce period does); a node that
    left is neither probed nor heard again: remove_on_leave false keeps it dead_interval, as set."""
    m = Membership(dead_interval=5, remove_on_leave=False)
    m.dead_interval = 80
    m.heard(claim(1), now=0)
    m.heard(claim(1, addr=B, node_id=2), now=0)
    assert m.left(claim(2), now=1) is Change.LEFT
    assert m.next_expiry() == 5
    assert [x.primary for x in m.expire(now=5)] == [A]  # B, silent as long, is kept: it did not leave


def test_second_hand_knowledge_keeps_its_age() -> None:
    m = Membership(dead_interval=5)
    assert m.learned(MemberRecord(1, 10, 2000, (A,)), now=10) is Change.JOINED
    assert m.members[A].last_heard == 8  # heard 2 s before the snapshot's sender told us
    assert m.learned(MemberRecord(2, 10, 6000, (B,)), now=10) is Change.STALE  # already dead
    assert m.expire(now=12.9) == [] and len(m.expire(now=13)) == 1


# --- expiry at scale: a heap of deadlines, not a scan of every member ------------------------------


def addr(i: int):  # type: ignore[no-untyped-def]
    return ip_address(int(ip_address("198.18.1.0")) + i)


def test_nodes_expire_longest_silent_first_whatever_their_join_order() -> None:
    m = Membership(dead_interval=10)
    heard_at = {5: 3.0, 1: 1.0, 4: 0.5, 2: 2.0, 3: 1.5}
    for i, t in heard_at.items():
        m.heard(claim(1, addr=addr(i), node_id=i), now=t)
    assert m.next_expiry() == 10.5
    assert [x.node_id for x in m.expire(now=11.6)] == [4, 1, 3]
    assert m.next_expiry() == 12 and [x.node_id for x in m.expire(now=20)] == [2, 5]
    assert m.next_expiry() is None and m.expire(now=100) == []


def test_a_refresh_moves_the_deadline_first_hand_and_second_hand() -> None:
    m = Membership(dead_interval=10)
    m.heard(claim(1, addr=A), now=0)
    m.learned(MemberRecord(2, 10, 0, (B,)), now=1)
    m.heard(claim(2, addr=A), now=6)  # A heard again: it is no longer the first to go
    assert m.next_expiry() == 11
    m.learned(MemberRecord(2, 10, 1000, (B,)), now=8)  # another SNAPSHOT: B heard of 1 s before it
    assert m.next_expiry() == 16
    assert m.expire(now=15.9) == []
    assert [x.primary for x in m.expire(now=16)] == [A] and [x.primary for x in m.expire(now=17)] == [B]


def test_leave_forget_and_a_new_life_take_the_node_out_of_the_expiry_order() -> None:
    m = Membership(dead_interval=10)
    m.heard(claim(1, addr=A), now=0)
    m.heard(claim(1, addr=B, node_id=2), now=1)
    m.left(claim(2, addr=A), now=2)
    assert m.next_expiry() == 11
    m.forget(B)
    assert m.next_expiry() is None and m.expire(now=50) == []
    m.heard(claim(1, inc=11, addr=A), now=60)  # A again, a new life: its old entry is nobody's
    assert m.next_expiry() == 70 and [x.primary for x in m.expire(now=70)] == [A]


def test_a_stream_of_made_up_nodes_keeps_max_nodes_and_a_bounded_expiry_heap() -> None:
    """One host making up a new node every datagram replaces the last one each time, while 60 others,
    each its own, are more than the map takes: neither the members nor what expiry keeps may grow."""
    m = Membership(dead_interval=30, max_nodes=50)
    for i in range(20_000):
        m.heard(Claim(i % 60_000 + 1, (addr(1000 + i),), 1, 1, source=A), now=i / 1000)
        m.heard(Claim(7, (addr(i % 60),), 1, i + 1, source=addr(i % 60)), now=i / 1000)
        assert len(m) <= 50
        assert len(m._deadlines) <= 2 * m.max_nodes + HEAP_SLACK  # the bound is the point
    assert len(m) == 50
    assert len(m.expire(now=1000)) == 50 and len(m) == 0 and m.next_expiry() is None


@pytest.mark.parametrize("remove_on_leave", [True, False])
def test_expiry_agrees_with_a_scan_of_every_member_under_random_churn(remove_on_leave: bool) -> None:
    """What the heap says (who expires, and when the next one is due) is what looking at every
    member says, through joins, refreshes, second-hand news, leaves, restarts and expiry."""
    rng = random.Random(7)
    m = Membership(dead_interval=5, remove_on_leave=remove_on_leave, max_nodes=40)
    m.dead_interval = 8  # grown with the cluster: a node that said it leaves still goes after 5

    def interval(x: Member) -> float:
        return 5 if x.leaving else 8

    seqs: dict[int, int] = {}
    now = 0.0
    for _ in range(20_000):
        now += rng.expovariate(50)
        i = rng.randrange(60)
        seqs[i] = seqs.get(i, 0) + 1
        op = rng.random()
        if op < 0.6:
            m.heard(Claim(i + 1, (addr(i),), 10 + seqs[i] // 50, seqs[i]), now=now)
        elif op < 0.8:
            m.learned(MemberRecord(i + 1, 10 + seqs[i] // 50, rng.randrange(4000), (addr(i),)), now=now)
        elif op < 0.85:
            m.left(Claim(i + 1, (addr(i),), 10 + seqs[i] // 50, seqs[i]), now=now)
        elif op < 0.95:
            m.touch(addr(i), now)  # it answered a probe
        else:
            m.forget(addr(i))
        due = {x.primary for x in m.members.values() if now - x.last_heard >= interval(x) and now >= x.spared}
        soonest = min((max(x.last_heard + interval(x), x.spared) for x in m.members.values()), default=None)
        assert m.next_expiry() == soonest
        kept = {p for p in due if (keep_for(m.members[p], now) or 0) > now}  # a time not past: it expires
        assert {x.primary for x in m.expire(now, lambda x, now=now: keep_for(x, now))} == due - kept
        assert all(m.members[p].spared > now for p in kept)


def keep_for(m: Member, now: float) -> float | None:
    """The failure detector's part, made up: most members due are checked once (kept 0 to 3 s, by
    their address), then expire; a member's first check may be long (30 s) and a touch end it."""
    if m.spared or int(m.primary) % 5 == 0:
        return None
    return now + (30.0 if int(m.primary) % 7 == 0 else (int(m.primary) % 4))


def test_a_member_spared_stays_until_then_and_expires_if_still_silent() -> None:
    m = Membership(dead_interval=10)
    m.heard(claim(1, addr=A), now=0)
    m.heard(claim(1, addr=B, node_id=2), now=1)
    assert m.expire(now=10, spare=lambda x: 13.0) == [] and m.members[A].spared == 13
    assert m.next_expiry() == 11  # B first, now
    assert [x.primary for x in m.expire(now=11, spare=lambda x: None)] == [B]
    assert m.next_expiry() == 13 and m.expire(now=12.9, spare=lambda x: None) == []
    assert [x.primary for x in m.expire(now=13, spare=lambda x: None)] == [A]


def test_a_touch_refreshes_and_ends_a_spare_sooner_or_later() -> None:
    m = Membership(dead_interval=10)
    m.heard(claim(1, addr=A), now=0)
    m.heard(claim(1, addr=B, node_id=2), now=0)
    assert m.expire(now=10, spare=lambda x: 100.0 if x.primary == A else 50.0) == []  # kept a long while
    m.touch(A, now=12)  # A answered: due 10 s after that, long before 100 (and before B)
    assert m.next_expiry() == 22 and [x.primary for x in m.expire(now=22)] == [A]
    m.touch(B, now=45)  # B answered near the end of its spare: due later than that
    assert m.next_expiry() == 55 and m.expire(now=54.9) == [] and [x.primary for x in m.expire(now=55)] == [B]
    m.touch(A, now=56)  # no longer a member: nothing comes back
    assert len(m) == 0 and m.next_expiry() is None


def test_spares_and_touches_keep_the_expiry_heap_bounded() -> None:
    m = Membership(dead_interval=1, max_nodes=20)
    for i in range(20):
        m.heard(Claim(i + 1, (addr(i),), 1, 1), now=0)
    now = 0.0
    for _ in range(5_000):  # every member spared again and again, touched now and then
        now += 0.05
        m.expire(now, spare=lambda x, now=now: now + 50.0)
        m.touch(addr(int(now * 20) % 20), now)
        assert len(m._deadlines) <= 2 * len(m) + HEAP_SLACK
    assert len(m) == 20


def test_expiry_follows_dead_interval_when_it_shrinks_or_grows() -> None:
    """The engine scales dead_interval with the cluster's size: who is due moves with it, spared
    members (whose time does not scale) and the rest alike."""
    m = Membership(dead_interval=40)
    m.heard(claim(1, addr=A), now=0)
    m.heard(claim(1, addr=B, node_id=2), now=5)
    assert m.expire(now=40, spare=lambda x: 41.0) == []  # A checked until 41
    m.dead_interval = 10  # the cluster shrank: B, silent since 5, is due at 15, before A
    assert m.next_expiry() == 15 and [x.primary for x in m.expire(now=40)] == [B]
    m.dead_interval = 80  # and grew: its check over, A is silent until 80
    assert m.next_expiry() == 80 and m.expire(now=79.9) == [] and [x.primary for x in m.expire(now=80)] == [A]


# --- an address is one member's -----------------------------------------------------------------

V1, V2, V3 = ip_address("198.18.1.13"), ip_address("198.18.9.13"), ip_address("198.18.7.13")
V6 = ip_address("2001:db8:9::13")
E = ip_address("198.18.0.66")


def from_(source, *addresses, seq: int = 1, node_id: int = 7) -> Claim:  # type: ignore[no-untyped-def]
    return Claim(node_id, tuple(addresses), 10, seq, source=source)


def test_no_new_node_may_list_any_address_a_known_member_holds() -> None:
    """A multi-homed node sends from its first address; a host lists one of its others as its own,
    first or not: refused, and the node's own messages go on counting (before, only the known
    members' primary addresses were looked at: the made-up node got in, and the real one was refused)."""
    m = Membership(dead_interval=30)
    assert m.heard(from_(V1, V1, V2, V3, V6, node_id=269), now=0) is Change.JOINED
    for seq, fake in enumerate([(V2, E), (E, V3), (E, V6), (V6,), (V2,)], 1):
        assert m.heard(from_(E, *fake, seq=seq), now=seq) == Rejected("conflict"), fake
    assert m.learned(MemberRecord(7, 10, 0, (V2, E)), now=6) == Rejected("conflict")  # second-hand alike
    assert list(m.members) == [V1]
    assert m.heard(from_(V1, V1, V2, V3, V6, seq=2, node_id=269), now=7) is Change.REFRESHED
    assert m.members[V1].addresses == (V1, V2, V3, V6)


def test_the_address_index_follows_a_member_whose_addresses_change_and_one_that_goes() -> None:
    m = Membership(dead_interval=30)
    m.heard(from_(V1, V1, V2), now=0)
    assert m.heard(from_(V1, V1, V3, seq=2), now=1) is Change.UPDATED  # V2 let go, V3 taken
    assert m.heard(from_(E, E, V3), now=2) == Rejected("conflict")
    assert m.heard(from_(E, E, V2), now=3) is Change.JOINED
    assert m.heard(from_(V1, V1, V2, seq=3), now=4) == Rejected("conflict")  # now E's
    m.forget(V1)
    assert len(m.holders) == 2  # E's two: what goes with a member goes from the index
    assert m.heard(from_(V3, V3, seq=1, node_id=8), now=5) is Change.JOINED


def test_a_node_sending_from_an_address_another_member_only_listed_takes_it() -> None:
    """Planted before the real node was heard: the made-up node lists the address the real one then
    sends from. Sending from an address proves it (a host without IP spoofing has only its own)."""
    m = Membership(dead_interval=30)
    assert m.heard(from_(E, E, V1), now=0) is Change.JOINED
    result = m.heard(from_(V1, V1, V2, node_id=269), now=1)
    assert isinstance(result, Replaced) and result.gone.primary == E and result.taken == V1
    assert result.then is Change.JOINED and list(m.members) == [V1]
    assert m.heard(from_(E, E, V1, seq=2), now=2) == Rejected("conflict")  # and the made-up one cannot come back


def test_the_address_index_agrees_with_a_scan_of_every_member_under_random_churn() -> None:
    """No address held by two members, and the index is exactly the members' addresses, through
    joins, address changes, made-up claims, second-hand news, leaves, replacements and expiry."""
    rng = random.Random(11)
    m = Membership(dead_interval=5, max_nodes=30)
    pool = [addr(i) for i in range(50)]
    now = 0.0
    for step in range(20_000):
        now += rng.expovariate(50)
        addresses = tuple(dict.fromkeys(rng.sample(pool, rng.randrange(1, 4))))
        source = rng.choice([addresses[0], rng.choice(addresses), rng.choice(pool)])
        op = rng.random()
        if op < 0.7:
            m.heard(Claim(1, addresses, 10, step, source=source if source in addresses else None), now=now)
        elif op < 0.85:
            m.learned(MemberRecord(1, 10, rng.randrange(4000), addresses), now=now)
        elif op < 0.9:
            m.left(Claim(1, addresses, 10, step), now=now)
        else:
            m.expire(now)
        held = [(a, x.primary) for x in m.members.values() for a in x.addresses]
        assert len(dict(held)) == len(held) and dict(held) == m.holders._of


def test_a_flood_of_made_up_nodes_with_sixteen_addresses_each_grows_the_address_index_only_to_its_bound() -> None:
    """The index holds only members' addresses: max_nodes members of MAX_ADDRESSES each at most,
    whatever a host claims, and a refused claim leaves nothing in it."""
    m = Membership(dead_interval=30, max_nodes=50)
    for i in range(2_000):
        addresses = tuple(addr(i * MAX_ADDRESSES + k) for k in range(MAX_ADDRESSES))
        m.heard(Claim(1, addresses, 10, 1, source=addresses[0]), now=i / 1000)
    assert len(m.members) == 50  # the rest refused ("full")
    assert len(m.holders) == 50 * MAX_ADDRESSES
    assert all(m.holders.get(a) == x.primary for x in m.members.values() for a in x.addresses)
