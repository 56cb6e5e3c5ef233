"""The attack labs' hostile member (tests/lab/liar.py), on datagrams built here: what it sends must be
what a real member would send, bar the one lie, or the attack tests prove nothing."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

import pytest

from omdisc.core.protocol import FLAG_PROBES, FLAG_ROUNDS, Message, MsgType, Subject, decode, encode
from tests.lab.liar import Identity, Liar

LIAR = IPv4Address("198.18.1.66")
NODE = IPv4Address("198.18.1.1")
VICTIM = IPv4Address("198.18.1.3")
LIFE = 1_700_000_000_000_000


def from_node(kind: MsgType, subject: Subject | None = None, origin: IPv4Address = NODE, hops: int = 0) -> bytes:
    return encode(Message(kind, 257, LIFE, 9, (origin,), FLAG_PROBES, hops=hops, subject=subject))


def liar(mode: str, *addresses: IPv4Address, about: IPv4Network | None = None) -> Liar:
    return Liar(mode, [Identity(a, 5) for a in addresses or (LIAR,)], about)


def test_a_member_answers_a_ping_naming_it_as_a_daemon_does_and_ignores_others() -> None:
    member = liar("ring-squatter")
    me = member.identities[0]
    [ack] = [decode(d) for d in member.unicast(me, from_node(MsgType.PING, Subject(LIAR, 5, 42)))]
    today = FLAG_PROBES | FLAG_ROUNDS
    assert (ack.type, ack.origin, ack.node_id, ack.incarnation, ack.flags) == (MsgType.ACK, LIAR, 322, 5, today)
    assert ack.subject == Subject(LIAR, 5, 42)
    assert member.unicast(me, from_node(MsgType.PING, Subject(VICTIM, 5, 43))) == []
    assert member.unicast(me, from_node(MsgType.PING_REQ, Subject(VICTIM, 1, 44))) == []  # it never helps


def test_the_lying_helper_acks_a_ping_req_itself_with_the_requesters_nonce() -> None:
    helper = liar("lying-helper")
    request = from_node(MsgType.PING_REQ, Subject(VICTIM, 7, 99))
    [ack] = [decode(d) for d in helper.unicast(helper.identities[0], request)]
    assert (ack.type, ack.origin, ack.subject) == (MsgType.ACK, LIAR, Subject(VICTIM, 7, 99))
    assert helper.sent["lying ACK"] == 1


def test_members_announce_each_from_its_own_address_with_rising_seqs() -> None:
    squatter = liar("ring-squatter", IPv4Address("198.18.1.48"), IPv4Address("198.18.1.49"))
    first = [(i.address, decode(d)) for i, d in squatter.tick(0.0)]
    assert squatter.tick(0.5) == []  # not due yet
    again = [decode(d) for _, d in squatter.tick(1.0)]
    assert [(a, m.type, m.origin, m.flags) for a, m in first] == [
        (a, MsgType.ANNOUNCE, a, FLAG_PROBES | FLAG_ROUNDS)
        for a in (IPv4Address("198.18.1.48"), IPv4Address("198.18.1.49"))]
    assert [m.seq for m in again] == [m.seq + 1 for _, m in first]


def test_a_member_refutes_a_suspicion_of_itself() -> None:
    member = liar("lying-helper")
    [(ident, data)] = member.multicast(from_node(MsgType.SUSPECT, Subject(LIAR, 5, 1)))
    assert ident.address == LIAR and decode(data).type is MsgType.ANNOUNCE


def test_the_stranger_never_announces_and_suspects_every_node_heard_at_its_announced_life() -> None:
    stranger = liar("stranger-suspects")
    assert stranger.tick(0.0) == []  # nobody heard yet
    stranger.multicast(from_node(MsgType.ANNOUNCE))
    stranger.multicast(from_node(MsgType.ANNOUNCE, origin=VICTIM))
    assert stranger.multicast(from_node(MsgType.SUSPECT, Subject(LIAR, 5, 1))) == []  # no refutation
    sent = [decode(d) for _, d in stranger.tick(0.25)]
    assert [(m.type, m.origin, m.subject) for m in sent] == [
        (MsgType.SUSPECT, LIAR, Subject(NODE, LIFE, 0)), (MsgType.SUSPECT, LIAR, Subject(VICTIM, LIFE, 0))]
    assert stranger.tick(0.4) == [] and len(stranger.tick(0.5)) == 2  # four rounds a second
    assert stranger.unicast(stranger.identities[0], from_node(MsgType.PING, Subject(LIAR, 5, 1))) == []


def test_the_wrong_network_judge_declares_dead_only_the_nodes_of_the_other_network() -> None:
    judge = liar("wrong-network-judge", IPv4Address("198.18.2.200"), about=IPv4Network("198.18.1.0/24"))
    about_a = Subject(VICTIM, 7, 12)
    [(_, data)] = judge.multicast(from_node(MsgType.SUSPECT, about_a, hops=1))
    dead = decode(data)
    assert (dead.type, dead.origin, dead.hops, dead.subject) == (MsgType.DEAD, IPv4Address("198.18.2.200"), 0, about_a)
    assert judge.multicast(from_node(MsgType.SUSPECT, Subject(IPv4Address("198.18.2.1"), 7, 12))) == []
    assert judge.multicast(from_node(MsgType.DEAD, about_a, hops=1)) == []


def test_an_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError):
        liar("polite")
