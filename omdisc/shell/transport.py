"""Multicast sockets: one per interface and address family, as wsdd does; and the probes' unicast
socket. No protocol knowledge here."""

from __future__ import annotations

import errno
import logging
import socket
import struct
from collections import Counter
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address, ip_address

from omdisc.core.protocol import MAX_DATAGRAM, IPAddress
from omdisc.core.records import record

log = logging.getLogger("omdisc.net")

# Linux values; older Pythons lack the names.
IP_MULTICAST_ALL = getattr(socket, "IP_MULTICAST_ALL", 49)
IPV6_MULTICAST_ALL = getattr(socket, "IPV6_MULTICAST_ALL", 29)
MAX_BATCH = 256  # datagrams drained per readiness event: bounded so timers still run under a flood
# Send errors that mean "this interface is down or lost its address for now": logged, not fatal.
TRANSIENT_SEND_ERRORS = {errno.ENETUNREACH, errno.ENETDOWN, errno.EADDRNOTAVAIL, errno.ENODEV,
                         errno.EHOSTUNREACH, errno.ENOBUFS, errno.EPERM, errno.EAGAIN}


@record(frozen=True)
class Endpoint:
    """Where the group's datagrams go: the group, the port, the TTL."""

    group: IPv4Address | IPv6Address
    port: int
    ttl: int = 1

    @property
    def family(self) -> int:
        return socket.AF_INET if self.group.version == 4 else socket.AF_INET6


def open_socket(endpoint: Endpoint, setup: Callable[[socket.socket], None]) -> socket.socket:
    """A non-blocking UDP socket of the endpoint's family, SO_REUSEADDR (the group sockets and the
    probes' share the port), made ready by `setup`; closed again if any step fails."""
    sock = socket.socket(endpoint.family, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        setup(sock)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class MulticastSocket:
    """Receives and sends the group's datagrams on one interface only.

    IP(V6)_MULTICAST_ALL=0 plus a membership bound to this interface's index means the socket gets
    only what arrives on this interface, so the daemon always knows where a datagram came from.
    """

    def __init__(self, ifname: str, ifindex: int, endpoint: Endpoint, stats: Counter[str]) -> None:
        self.ifname = ifname
        self.ifindex = ifindex
        self.endpoint = endpoint
        self.stats = stats
        self.sock = open_socket(endpoint, self._setup_v4 if endpoint.group.version == 4 else self._setup_v6)
        self.destination: tuple[str, int] | tuple[str, int, int, int] = (
            (str(endpoint.group), endpoint.port) if endpoint.group.version == 4
            else (str(endpoint.group), endpoint.port, 0, ifindex))

    def _setup_v4(self, s: socket.socket) -> None:
        ep = self.endpoint
        s.bind((str(ep.group), ep.port))
        s.setsockopt(socket.IPPROTO_IP, IP_MULTICAST_ALL, 0)
        mreqn = struct.pack("=4s4si", ep.group.packed, bytes(4), self.ifindex)
        s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, mreqn)
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ep.ttl)
        # Loop on: two daemons on one host (tests with -i lo) must hear each other; our own
        # datagrams are recognised by their origin and ignored.
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)

    def _setup_v6(self, s: socket.socket) -> None:
        ep = self.endpoint
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s.bind((str(ep.group), ep.port, 0, self.ifindex))
        s.setsockopt(socket.IPPROTO_IPV6, IPV6_MULTICAST_ALL, 0)
        mreq = ep.group.packed + struct.pack("=I", self.ifindex)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, self.ifindex)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, ep.ttl)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 1)

    def fileno(self) -> int:
        return self.sock.fileno()

    def receive_batch(self) -> list[tuple[bytes, IPAddress]]:
        """Every datagram waiting (up to MAX_BATCH), so a burst of joins is handled as one batch."""
        batch: list[tuple[bytes, IPAddress]] = []
        while len(batch) < MAX_BATCH:
            try:
                data, src = self.sock.recvfrom(MAX_DATAGRAM + 1)  # +1: oversize shows as oversize
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                self.stats["receive_errors"] += 1
                log.debug("%s: receive failed: %s", self.ifname, e.strerror)
                break
            batch.append((data, ip_address(src[0].split("%")[0])))
        return batch

    def send(self, data: bytes) -> bool:
        try:
            self.sock.sendto(data, self.destination)
        except OSError as e:
            self.stats["send_errors"] += 1
            level = logging.DEBUG if e.errno in TRANSIENT_SEND_ERRORS else logging.WARNING
            log.log(level, "%s: send failed: %s", self.ifname, e.strerror or e)
            return False
        return True

    def close(self) -> None:
        self.sock.close()


class UnicastSocket(MulticastSocket):
    """The failure detector's probes (PING, ACK, PING_REQ): unicast on the group's port, one socket
    per family on every interface. IP(V6)_MULTICAST_ALL=0 and no group membership: it gets no
    multicast, which the per-interface sockets read."""

    def __init__(self, endpoint: Endpoint, stats: Counter[str]) -> None:  # not the group sockets set-up
        self.ifname = ""  # the engine does not need to know where a probe came in
        self.ifindex = 0
        self.endpoint = endpoint
        self.stats = stats
        self.sock = open_socket(endpoint, self._unicast_v4 if endpoint.group.version == 4 else self._unicast_v6)
        self.destination = ("", 0)

    def _unicast_v4(self, s: socket.socket) -> None:
        s.bind(("0.0.0.0", self.endpoint.port))
        s.setsockopt(socket.IPPROTO_IP, IP_MULTICAST_ALL, 0)

    def _unicast_v6(self, s: socket.socket) -> None:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s.bind(("::", self.endpoint.port))
        s.setsockopt(socket.IPPROTO_IPV6, IPV6_MULTICAST_ALL, 0)

    def send_to(self, data: bytes, to: IPAddress, ifindex: int = 0) -> bool:
        """To one node; `ifindex` for an IPv6 link-local address (which needs its interface)."""
        port = self.endpoint.port
        self.destination = (str(to), port) if to.version == 4 else (str(to), port, 0, ifindex)
        return self.send(data)
