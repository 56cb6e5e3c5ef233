"""A multicast router in user space, for labs on kernels built without multicast routing
(`# CONFIG_IP_MROUTE is not set`: no /proc/net/ip_mr_vif, and smcroute cannot work).

    ip netns exec ROUTER python -m tests.lab.mrouter LEG0 LEG1

It does what a router does with a routed multicast datagram, and nothing more: every IPv4 or IPv6
multicast datagram heard on one leg (not link-local scope) goes out of the other leg with the same
source address and its TTL (hop limit) one lower; one that arrives with a TTL of 1 or less is
dropped. It floods (no IGMP or MLD): a lab's LANs are small. On SIGTERM or SIGINT it prints what it
did, one `key=value` line, and exits 0.
"""

from __future__ import annotations

import select
import signal
import socket
import struct
import sys
from collections import Counter
from dataclasses import dataclass

ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
PACKET_MULTICAST = 2  # sll_pkttype of a multicast frame another host sent (ours are PACKET_OUTGOING)
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_ALLMULTI = 2
UDP = 17


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071): ones' complement of the ones' complement sum of 16-bit words."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def udp_checksum(pseudo: bytes, udp: bytes) -> bytes:
    """The UDP datagram with its checksum computed anew over the pseudo-header. A veth hands a packet
    socket the sender's checksum unfinished (offload), so what was heard cannot be sent as it is."""
    body = udp[:6] + b"\0\0" + udp[8:]
    value = checksum(pseudo + body) or 0xFFFF  # 0 means "no checksum" on the wire
    return udp[:6] + struct.pack("!H", value) + udp[8:]


@dataclass(frozen=True)
class Routed:
    """A datagram to send on the other leg: the IP packet and the Ethernet multicast address."""

    packet: bytes
    mac: bytes
    proto: int


def route_ipv4(packet: bytes) -> Routed | str:
    """The packet one hop on, or why it stays: 'not routed' or 'ttl expired'."""
    if len(packet) < 20 or packet[0] >> 4 != 4:
        return "not routed"
    ihl = (packet[0] & 0x0F) * 4
    total = struct.unpack("!H", packet[2:4])[0]
    packet = packet[:total]  # without the Ethernet padding
    dst = packet[16:20]
    if not 224 <= dst[0] <= 239 or dst[:3] == b"\xe0\x00\x00":  # 224.0.0.0/24: link-local, never routed
        return "not routed"
    if packet[8] <= 1:
        return "ttl expired"
    header = bytearray(packet[:ihl])
    header[8] -= 1
    header[10:12] = b"\0\0"
    header[10:12] = struct.pack("!H", checksum(bytes(header)))
    payload = packet[ihl:]
    if header[9] == UDP and len(payload) >= 8 and payload[6:8] != b"\0\0":
        pseudo = bytes(header[12:20]) + struct.pack("!BBH", 0, UDP, len(payload))
        payload = udp_checksum(pseudo, payload)
    mac = b"\x01\x00\x5e" + bytes([dst[1] & 0x7F]) + dst[2:4]
    return Routed(bytes(header) + payload, mac, ETH_P_IP)


def route_ipv6(packet: bytes) -> Routed | str:
    if len(packet) < 40 or packet[0] >> 4 != 6:
        return "not routed"
    length = struct.unpack("!H", packet[4:6])[0]
    packet = packet[:40 + length]
    dst = packet[24:40]
    if dst[0] != 0xFF or dst[1] & 0x0F <= 2:  # not multicast, or interface- or link-local scope
        return "not routed"
    if packet[7] <= 1:
        return "ttl expired"
    header = bytearray(packet[:40])
    header[7] -= 1
    payload = packet[40:]
    if header[6] == UDP and len(payload) >= 8:
        pseudo = bytes(header[8:40]) + struct.pack("!I3xB", len(payload), UDP)
        payload = udp_checksum(pseudo, payload)
    return Routed(bytes(header) + payload, b"\x33\x33" + dst[12:16], ETH_P_IPV6)


def route(proto: int, packet: bytes) -> Routed | str:
    if proto == ETH_P_IP:
        return route_ipv4(packet)
    if proto == ETH_P_IPV6:
        return route_ipv6(packet)
    return "not routed"


def open_leg(name: str) -> socket.socket:
    """A packet socket on one leg (the IP packet without its Ethernet header), hearing every
    multicast frame on it, not only the groups this host joined."""
    s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ALL))
    s.bind((name, ETH_P_ALL))
    mreq = struct.pack("iHH8s", socket.if_nametoindex(name), PACKET_MR_ALLMULTI, 0, b"")
    s.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
    return s


class Stop(Exception):
    pass


def _stop(*_: object) -> None:
    raise Stop


def serve(legs: list[str]) -> Counter[str]:
    sockets = [open_leg(name) for name in legs]
    other = {sockets[0]: (sockets[1], legs[1]), sockets[1]: (sockets[0], legs[0])}
    counts: Counter[str] = Counter()
    try:
        while True:
            for s in select.select(sockets, [], [])[0]:
                data, (_, proto, pkttype, _, _) = s.recvfrom(65535)
                if pkttype != PACKET_MULTICAST:
                    continue
                routed = route(proto, data)
                if isinstance(routed, str):
                    counts[routed.replace(" ", "_")] += 1
                    continue
                out, name = other[s]
                out.sendto(routed.packet, (name, routed.proto, 0, 0, routed.mac))
                counts["forwarded_ipv4" if proto == ETH_P_IP else "forwarded_ipv6"] += 1
    except Stop:
        return counts
    finally:
        for s in sockets:
            s.close()


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m tests.lab.mrouter LEG0 LEG1", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    counts = serve(argv)
    print(" ".join(f"{k}={counts[k]}" for k in ("forwarded_ipv4", "forwarded_ipv6", "ttl_expired", "not_routed")),
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
