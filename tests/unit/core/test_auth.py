"""The cluster key: signatures, the replay window, the keyring and its file. Clock injected."""

from __future__ import annotations

import os
import random
from ipaddress import ip_address, ip_network
from pathlib import Path

import pytest

from omdisc.core.auth import Authenticator, KeyFileError, Keyring, key_id, parse_keys
from omdisc.core.engine import Engine, LocalNode, Settings
from omdisc.core.links import Links
from omdisc.core.protocol import (
    FLAG_GATEWAY,
    FLAG_JOIN,
    MAX_DATAGRAM,
    TRAILER_AUTH,
    Message,
    MsgType,
    body_end,
    decode,
    encode,
    forwarded,
    tlv,
    with_hops,
)
from omdisc.shell.keyfile import gen_key, load_keyring

A = ip_address("198.18.0.1")
B = ip_address("198.18.0.2")
GW = ip_address("198.18.0.254")
K1, K2, K3 = (bytes([i]) * 32 for i in (1, 2, 3))


class Clock:
    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def auth(keys: tuple[bytes, ...] = (K1,), clock: Clock | None = None, skew: float = 5.0,
         mono: Clock | None = None) -> Authenticator:
    return Authenticator(Keyring(keys), clock or Clock(), skew, mono=mono or Clock(0.0))


def datagram(seq: int = 1, origin=A, hops: int = 0) -> bytes:  # type: ignore[no-untyped-def]
    return encode(Message(MsgType.ANNOUNCE, 7, 1, seq, (origin,), hops=hops))


def check(a: Authenticator, data: bytes) -> str:
    """As the engine does: a datagram that passes is taken."""
    verdict = a.verify(data, decode(data))
    if not verdict.reason:
        a.take(verdict)
    return verdict.reason


def test_signed_datagrams_verify_and_tampered_ones_do_not() -> None:
    clock = Clock()
    sender, receiver = auth(clock=clock), auth(clock=clock)
    signed = sender.sign(datagram())
    assert len(signed) - len(datagram()) == 3 + 4 + 8 + 32
    assert check(receiver, signed) == ""
    for i in range(len(signed)):  # every bit that matters is covered: flip one byte anywhere
        if i == 7:
            continue  # hops: a gateway's to change, covered by its own MAC instead
        flipped = signed[:i] + bytes([signed[i] ^ 0x01]) + signed[i + 1:]
        try:
            decode(flipped)
        except ValueError:
            continue
        assert check(auth(clock=clock), flipped) in ("bad", "unsigned", "unknown-key", "skew"), i


def test_unsigned_and_unknown_keys_are_told_apart() -> None:
    clock = Clock()
    assert check(auth(clock=clock), datagram()) == "unsigned"
    assert check(auth((K2,), clock), auth((K1,), clock).sign(datagram())) == "unknown-key"


def test_every_key_of_the_ring_is_accepted_and_the_first_signs() -> None:
    clock = Clock()
    old, both, new = auth((K1,), clock), auth((K2, K1), clock), auth((K2,), clock)
    assert check(both, old.sign(datagram(1))) == ""
    assert check(old, both.sign(datagram(2))) == "unknown-key"  # `both` signs with K2, its first
    assert check(new, both.sign(datagram(3))) == ""


def test_a_replay_is_refused_at_once_later_and_after_the_receiver_restarted() -> None:
    clock = Clock()
    sender, receiver = auth(clock=clock), auth(clock=clock)
    first, second = sender.sign(datagram(1)), sender.sign(datagram(2))
    assert check(receiver, first) == "" and check(receiver, second) == ""
    assert check(receiver, second) == "duplicate"  # a copy of one just taken (the other family): harmless
    for seq in range(3, 70):
        assert check(receiver, sender.sign(datagram(seq))) == ""
    assert check(receiver, first) == "replay"  # older than what was taken
    clock.t += 3
    restarted = auth(clock=clock)  # a new life remembers nothing, yet
    assert check(restarted, second) == "replay"  # sent before it started
    clock.t += 10
    assert check(auth(clock=clock), second) == "skew"  # too old for anyone now


def test_a_clock_outside_the_window_is_named_with_its_skew() -> None:
    clock = Clock()
    signed = auth(clock=Clock(clock.t + 60)).sign(datagram())
    verdict = auth(clock=clock).verify(signed, decode(signed))
    assert verdict.reason == "skew" and 59e6 < verdict.skew_us < 61e6


def test_clocks_set_back_by_ntp_neither_mute_a_sender_nor_deafen_a_receiver() -> None:
    clock, mono = Clock(), Clock(0.0)
    sender = auth(clock=clock, mono=mono)
    receiver = auth(clock=Clock(clock.t + 1800), mono=mono)  # started with its clock half an hour ahead
    sender.sign(datagram(1))
    clock.t += 3600  # the sender's clock was an hour ahead at boot ...
    sender.sign(datagram(2))
    clock.t -= 3600  # ... and NTP sets it right: its next datagrams are stamped now, not an hour ahead
    receiver.wall = Clock(clock.t)  # NTP sets the receiver's clock right too
    mono.t += 10
    clock.t += 10
    receiver.wall = Clock(clock.t)
    assert check(receiver, sender.sign(datagram(3))) == ""  # not "before its start", not "skew"


def test_a_gateway_forwards_without_breaking_the_signature_and_vouches_for_hops_and_via() -> None:
    clock = Clock()
    origin, gateway, far = auth(clock=clock), auth(clock=clock), auth(clock=clock)
    signed = origin.sign(datagram())
    out = forwarded(signed, decode(signed), GW)
    assert out is not None
    fwd = gateway.sign_forward(out)
    assert len(fwd) <= MAX_DATAGRAM
    assert check(far, fwd) == ""
    assert check(auth(clock=clock), out) == "bad"  # forwarded by a host without the key
    assert check(auth(clock=clock), with_hops(fwd, 3)) == "bad"  # hops changed on the way
    evil_via = forwarded(fwd, decode(fwd), B)  # VIA rewritten by a host without the key
    assert evil_via is not None and check(auth(clock=clock), evil_via) == "bad"


def test_the_key_file_is_refused_when_others_may_read_it(tmp_path: Path) -> None:
    path = tmp_path / "cluster.key"
    path.write_text(f"# the cluster's key\n{gen_key()}\n\n{gen_key()}  # the next one\n")
    os.chmod(path, 0o640)
    with pytest.raises(KeyFileError, match=r"mode 0640\): chmod 600"):
        load_keyring(path)
    os.chmod(path, 0o600)
    assert len(load_keyring(path).keys) == 2


@pytest.mark.parametrize(("text", "message"), [
    ("not base64!\n", ":1: not a base64 key"),
    ("# nothing\n\n", "no key in it"),
    ("AAAA\n", ":1: a key is 32 bytes, this one 3"),
])
def test_bad_key_files_are_one_line_naming_file_and_line(text: str, message: str) -> None:
    with pytest.raises(KeyFileError, match=message):
        parse_keys(text, "/etc/omdiscd/cluster.key")


def test_logs_name_keys_by_id_never_by_value() -> None:
    ring = Keyring((K1, K2))
    assert ring.describe() == f"{key_id(K1).hex()}, {key_id(K2).hex()}"
    assert K1.hex() not in ring.describe()


def test_engines_with_a_key_hear_each_other_and_ignore_one_without() -> None:
    clock = Clock()
    s = Settings()
    keyed = [Engine(LocalNode(i, (ip_address(f"198.18.0.{i}"),)), 10, s, random.Random(i), clock, auth(clock=clock))
             for i in (1, 2)]
    bare = Engine(LocalNode(3, (ip_address("198.18.0.3"),)), 10, s, random.Random(3), clock)
    join = keyed[0].start(0.0)[0].data
    keyed[1].receive(join, 0.0, "eth0", ip_address("198.18.0.1"))
    bare_join = bare.start(0.0)[0].data
    keyed[1].receive(bare_join, 0.0, "eth0", ip_address("198.18.0.3"))
    assert list(keyed[1].membership.members) == [ip_address("198.18.0.1")]
    assert keyed[1].stats["auth:unsigned"] == 1
    bare.receive(join, 0.0, "eth0", ip_address("198.18.0.1"))  # the unkeyed one still hears keyed nodes
    assert ip_address("198.18.0.1") in bare.membership
    assert decode(join).flags & FLAG_JOIN


def test_a_probe_read_before_an_older_multicast_is_no_replay_but_a_replayed_probe_is() -> None:
    from omdisc.core.protocol import Subject

    clock = Clock()
    sender, receiver = auth(clock=clock), auth(clock=clock)
    announce = sender.sign(datagram(1))
    clock.t += 0.001
    ack = sender.sign(encode(Message(MsgType.ACK, 7, 1, 2, (A,), subject=Subject(A, 1, 99))))
    # the unicast socket is read first, though the ANNOUNCE was sent before the ACK
    assert check(receiver, ack) == "" and check(receiver, announce) == ""
    assert check(receiver, ack) == "duplicate"
    clock.t += 0.001
    later_ping = sender.sign(encode(Message(MsgType.PING, 7, 1, 3, (A,), subject=Subject(B, 1, 5))))
    assert check(receiver, later_ping) == ""
    replayed = ack  # not newer than the last probe taken from A, and no longer among its recent MACs
    for i in range(70):
        clock.t += 0.001
        check(receiver, sender.sign(encode(Message(MsgType.PING, 7, 1, 10 + i, (A,), subject=Subject(B, 1, i)))))
    assert check(receiver, replayed) == "replay"


# --- a signed datagram carried onto another network ------------------------------------------------

A1 = ip_address("198.18.1.1")  # on network A
GW_A, GW_B = ip_address("198.18.1.254"), ip_address("198.18.2.254")  # the gateway, on A and on B
B1, EVIL_B = ip_address("198.18.2.1"), ip_address("198.18.2.66")  # on network B
ON_B = Links({"eth0": [ip_network("198.18.2.0/24"), ip_network("fe80::/64")]})


def keyed(local: LocalNode, clock: Clock) -> Engine:
    return Engine(local, 10, Settings(), random.Random(local.node_id), clock, auth(clock=clock))


def two_networks() -> tuple[Engine, Engine, Engine, Clock]:
    """a1 on A, b1 on B (which knows what is on its link), a keyed gateway between: b1 has heard the
    gateway and, through it, a1."""
    clock = Clock()
    a1 = keyed(LocalNode(257, (A1,)), clock)
    gw = keyed(LocalNode(510, (GW_A, GW_B), FLAG_GATEWAY), clock)
    gw.route_between = frozenset({"legA", "legB"})
    b1 = keyed(LocalNode(513, (B1,)), clock)
    b1.links = ON_B
    b1.start(0.0)
    for o in gw.start(0.0):
        b1.receive(o.data, 0.0, "eth0", GW_B)
        a1.receive(o.data, 0.0, "eth0", GW_A)
    clock.t += 0.001
    for o in a1.start(0.01):
        for f in gw.receive(o.data, 0.01, "legA", A1):
            b1.receive(f.data, 0.01, "eth0", GW_B)
    assert b1.membership.members[A1].via == GW_A
    return a1, gw, b1, clock


def as_sent_directly(data: bytes) -> bytes:
    """What a host without the key can make of a forwarded datagram: hops back to 0, VIA and the
    gateway's FORWARD_AUTH stripped; the originator's AUTH, which does not cover hops, kept."""
    signature = next(v for t, v in decode(data).trailer if t == TRAILER_AUTH)
    return with_hops(data[: body_end(data)], 0) + tlv(TRAILER_AUTH, signature)


def reached_through_the_gateway(b1: Engine, now: float) -> bool:
    """What showmap --json says: a1 is behind the gateway, not b1's neighbour."""
    return [g["reaches"] for g in b1.state(now)["gateways"]] == [[str(A1)]]


def test_a_forwarded_announce_sent_again_on_b_with_hops_0_does_not_make_its_origin_a_neighbour() -> None:
    a1, gw, b1, clock = two_networks()
    clock.t += 0.001
    announce = [o.data for o in a1.tick(a1.next_announce) if decode(o.data).type is MsgType.ANNOUNCE]
    forwarded_announce = [f.data for f in gw.receive(announce[0], 1.0, "legA", A1)]
    assert len(forwarded_announce) == 1
    relayed = as_sent_directly(forwarded_announce[0])
    b1.receive(relayed, 1.0, "eth0", EVIL_B)  # ahead of the gateway's copy (lost, or slower)
    b1.receive(forwarded_announce[0], 1.01, "eth0", GW_B)  # which still counts
    assert b1.membership.members[A1].seq == decode(relayed).seq and reached_through_the_gateway(b1, 1.01)
    probed = [o for t in range(10, 200) for o in b1.tick(t / 10) if o.to == A1]
    assert probed == []  # never probed by unicast across the gateway, where no answer comes from
    assert b1.stats["rejected:offlink"] == 1 and b1.stats["auth:duplicate"] == 0


def test_a_snapshot_sent_on_a_and_carried_to_b_does_not_make_its_origin_a_neighbour() -> None:
    """SNAPSHOTs answer a JOIN on their own network and are never forwarded: a copy carried to B
    is always fresh there, whatever the race with the gateway."""
    a1, gw, b1, clock = two_networks()
    clock.t += 0.001
    a1.receive(gw.rejoin(1.0)[0].data, 1.0, "eth0", GW_A)  # a JOIN on A, which a1 answers
    snapshot = [o.data for o in a1.tick(2.0) if decode(o.data).type is MsgType.SNAPSHOT]
    assert snapshot, "a1 did not answer"
    b1.receive(snapshot[0], 2.0, "eth0", EVIL_B)
    assert reached_through_the_gateway(b1, 2.0) and b1.stats["rejected:offlink"] == 1


def test_with_the_key_a_leave_from_a_new_address_on_the_link_is_still_taken_at_once() -> None:
    clock = Clock()
    mover = keyed(LocalNode(517, (ip_address("198.18.2.5"),)), clock)
    b1 = keyed(LocalNode(513, (B1,)), clock)
    b1.links = ON_B
    b1.receive(mover.start(0.0)[0].data, 0.0, "eth0", ip_address("198.18.2.5"))
    clock.t += 0.001
    # DHCP gave it another address: its LEAVE in its old name goes out from the new one
    leave = mover.set_local(LocalNode(611, (ip_address("198.18.2.99"),)))[0].data
    b1.receive(leave, 1.0, "eth0", ip_address("198.18.2.99"))
    assert ip_address("198.18.2.5") not in b1.membership and b1.stats["rejected"] == 0
