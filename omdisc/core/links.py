"""What is on the link of each interface we hear on: the prefixes of its own addresses. A node
that sends a message itself (hops 0) is on that link, and has an address there; a message that
names none of its originator's addresses on the link was carried there by another host, however
well it is signed (docs/protocol.md, "Threats"). Pure: the shell reads the interfaces.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from ipaddress import IPv4Network, IPv6Network

from omdisc.core.protocol import IPAddress

Prefix = IPv4Network | IPv6Network


def tells(prefix: Prefix) -> bool:
    """Does an address inside it say where its node is? Not a host prefix (/32, /128: the link's
    other nodes are all outside it), nor a link-local one (every link has the same)."""
    return prefix.prefixlen < prefix.max_prefixlen and not prefix.is_link_local


class Links:
    """Per interface, the prefixes that tell what is on its link. An interface not listed, or none
    of whose prefixes is of the family of any address a message names, cannot tell: the message
    is on its link as far as it knows (an IPv4-only link hearing an IPv6-only node, a /32 host)."""

    __slots__ = ("_families", "_nets")

    def __init__(self, prefixes: Mapping[str, Iterable[Prefix]]) -> None:
        # (version, network, mask) as integers: one AND and compare per address, as a datagram arrives
        self._nets = {name: tuple(sorted({(p.version, int(p.network_address), int(p.netmask))
                                           for p in nets if tells(p)}))
                      for name, nets in prefixes.items()}
        self._families = {name: frozenset(v for v, _, _ in nets) for name, nets in self._nets.items()}

    def on_link(self, interface: str, addresses: Iterable[IPAddress]) -> bool:
        """Is one of `addresses` inside a prefix of `interface` (or can it not tell)?"""
        nets = self._nets.get(interface)
        if nets is None:
            return True
        families = self._families[interface]
        judged = False
        for a in addresses:
            if a.version not in families:
                continue
            judged = True
            value = int(a)
            if any(v == a.version and value & mask == net for v, net, mask in nets):
                return True
        return not judged
