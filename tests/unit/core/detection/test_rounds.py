"""The rings of probe rounds (omdisc/core/detection/rounds.py): who is on them, who probes whom,
who may judge whom."""

from __future__ import annotations

from collections import Counter
from ipaddress import ip_address

from omdisc.core.detection.rounds import JUDGE_ROUNDS, Rounds
from omdisc.core.membership import Member, Membership
from omdisc.core.protocol import FLAG_PROBES, FLAG_ROUNDS, IPAddress

ME = ip_address("198.18.0.1")
TODAY = FLAG_PROBES | FLAG_ROUNDS


def member(addr: str, flags: int = TODAY, **kw: object) -> Member:
    return Member(1, (ip_address(addr),), 10, 1, 0.0, flags, **kw)  # type: ignore[arg-type]


def membership(*members: Member) -> Membership:
    m = Membership(35.0)
    for x in members:
        m.members[x.primary] = x
    m.version += 1
    return m


def test_a_far_node_from_a_snapshot_is_never_on_a_ring_nor_a_node_behind_a_gateway() -> None:
    """A joiner told of far nodes (INDIRECT) before it heard their gateway has no path for them:
    taking them as neighbours, it probed them where no PING reaches, and its DEADs were believed."""
    near = member("198.18.0.2")
    far_unknown_path = member("198.18.9.9", via=None, path_known=False, firsthand=False)
    behind = member("198.18.8.8", via=ip_address("198.18.0.254"))
    leaving = member("198.18.0.3", leaving=True)
    old = member("198.18.0.4", flags=0)
    rounds = Rounds(membership(near, far_unknown_path, behind, leaving, old))
    assert rounds.members_on("", 7) == [near.primary]
    assert rounds.targets(ME, 7) == [near.primary]  # alone with us: each probes the other
    assert rounds.version_1 == 1


def test_every_member_is_probed_once_a_round_by_another_prober_each_round() -> None:
    peers = [member(f"198.18.0.{i}") for i in range(2, 22)]
    rounds = Rounds(membership(*peers))
    everyone = [ME, *(p.primary for p in peers)]
    probers_of: dict[IPAddress, set[IPAddress]] = {a: set() for a in everyone}
    for r in range(100):
        ring = rounds.ring("", r, ME)
        probed = Counter(ring[(i + 1) % len(ring)] for i in range(len(ring)))
        assert set(probed) == set(everyone) and set(probed.values()) == {1}
        assert rounds.targets(ME, r) == [ring[(ring.index(ME) + 1) % len(ring)]]  # whom we probe: our successor
        for i, a in enumerate(ring):
            probers_of[ring[(i + 1) % len(ring)]].add(a)
    assert all(len(p) >= 15 for p in probers_of.values())  # 100 rounds: nearly all of the 20 others


def test_addresses_just_below_a_node_are_its_judges_only_in_the_odd_round() -> None:
    """Two addresses sorted just below a victim were its only monitors on an address-ordered ring."""
    victim = member("198.18.0.50")
    squatters = [member("198.18.0.48"), member("198.18.0.49")]
    others = [member(f"198.18.0.{i}") for i in range(60, 76)]
    rounds = Rounds(membership(victim, *squatters, *others))
    judged = sum(any(rounds.may_judge(s, victim.primary, "", ME, r) for s in squatters) for r in range(0, 700, 7))
    assert judged < 60  # of 100 windows of 7 rounds; each squatter is the prober in 1 round of 19


def test_a_judge_must_be_of_the_subjects_network_and_probe_in_rounds() -> None:
    victim = member("198.18.0.50", interface="eth0")
    here = member("198.18.0.49", interface="eth0")
    elsewhere = member("198.18.0.49", interface="eth1")
    older = member("198.18.0.49", flags=FLAG_PROBES, interface="eth0")
    for judge, may in ((here, True), (elsewhere, False), (older, False)):
        rounds = Rounds(membership(victim, judge))
        windows = [any(rounds.may_judge(judge, victim.primary, "eth0", ME, r + k) for k in JUDGE_ROUNDS)
                   for r in range(50)]
        assert any(windows) is may, judge
