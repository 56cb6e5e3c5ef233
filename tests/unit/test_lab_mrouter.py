"""The labs' user-space multicast router (tests/lab/mrouter.py), on packets built here: what it
forwards must be what a kernel router would send, or the TTL-mode tests prove nothing."""

from __future__ import annotations

import ipaddress
import struct

from tests.lab.mrouter import ETH_P_IP, ETH_P_IPV6, Routed, checksum, route

PAYLOAD = b"omdisc announce"


def udp(src: bytes, dst: bytes, pseudo_tail: bytes) -> bytes:
    header = struct.pack("!HHHH", 7727, 7727, 8 + len(PAYLOAD), 0)
    value = checksum(src + dst + pseudo_tail + header + PAYLOAD)
    return struct.pack("!HHHH", 7727, 7727, 8 + len(PAYLOAD), value) + PAYLOAD


def ipv4(dst: str, ttl: int, udp_checksum_done: bool = True) -> bytes:
    s, d = ipaddress.IPv4Address("198.18.1.1").packed, ipaddress.IPv4Address(dst).packed
    body = udp(s, d, struct.pack("!BBH", 0, 17, 8 + len(PAYLOAD)))
    if not udp_checksum_done:  # as a veth hands it over with checksum offload: only the pseudo-header's sum
        body = body[:6] + b"\x12\x34" + body[8:]
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(body), 1, 0, ttl, 17, 0, s, d)
    header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
    return header + body + b"\0" * 6  # Ethernet padding


def ipv6(dst: str, hops: int) -> bytes:
    s, d = ipaddress.IPv6Address("2001:db8:1::1").packed, ipaddress.IPv6Address(dst).packed
    body = udp(s, d, struct.pack("!I3xB", 8 + len(PAYLOAD), 17))
    return struct.pack("!IHBB16s16s", 6 << 28, len(body), 17, hops, s, d) + body


def test_a_routed_ipv4_datagram_has_one_hop_less_and_checksums_a_receiver_accepts() -> None:
    routed = route(ETH_P_IP, ipv4("239.192.77.77", 2, udp_checksum_done=False))
    assert isinstance(routed, Routed)
    packet = routed.packet
    assert packet[8] == 1 and packet[12:16] == ipaddress.IPv4Address("198.18.1.1").packed  # same source
    assert checksum(packet[:20]) == 0  # the header checksum, redone
    assert packet == ipv4("239.192.77.77", 1)[:-6]  # the UDP checksum finished, the padding gone
    assert routed.mac == bytes.fromhex("01005e404d4d")  # 01:00:5e and the group's low 23 bits


def test_a_routed_ipv6_datagram_has_one_hop_less() -> None:
    routed = route(ETH_P_IPV6, ipv6("ff05::7727", 2))
    assert isinstance(routed, Routed)
    assert routed.packet == ipv6("ff05::7727", 1) and routed.mac == bytes.fromhex("333300007727")


def test_ttl_one_and_link_local_groups_are_never_routed() -> None:
    assert route(ETH_P_IP, ipv4("239.192.77.77", 1)) == "ttl expired"
    assert route(ETH_P_IP, ipv4("224.0.0.251", 5)) == "not routed"  # mDNS: link-local
    assert route(ETH_P_IP, ipv4("198.18.2.1", 5)) == "not routed"  # unicast
    assert route(ETH_P_IPV6, ipv6("ff05::7727", 1)) == "ttl expired"
    assert route(ETH_P_IPV6, ipv6("ff02::1", 5)) == "not routed"
    assert route(0x0806, b"\0" * 28) == "not routed"  # ARP
