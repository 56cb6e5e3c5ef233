"""What is on-link on an interface (omdisc/core/links.py): the prefixes of its own addresses, those
that tell where a node is."""

from __future__ import annotations

from ipaddress import ip_address, ip_network

from omdisc.core.links import Links
from omdisc.core.protocol import IPAddress


def ips(*texts: str) -> tuple[IPAddress, ...]:
    return tuple(ip_address(t) for t in texts)


def links(**per_interface: tuple[str, ...]) -> Links:
    return Links({name: [ip_network(p) for p in prefixes] for name, prefixes in per_interface.items()})


def test_an_address_inside_any_prefix_of_the_interface_is_on_link_whichever_it_is_in_the_list() -> None:
    here = links(eth0=("198.18.2.0/24", "198.19.0.0/16"), eth1=("198.18.1.0/24",))
    assert here.on_link("eth0", ips("198.18.2.7"))
    assert here.on_link("eth0", ips("198.18.1.1", "198.19.44.1"))  # its second address, in the second prefix
    assert not here.on_link("eth0", ips("198.18.1.1", "198.18.3.1"))  # eth1's network, not eth0's
    assert here.on_link("eth1", ips("198.18.1.1"))


def test_ipv6_global_prefixes_judge_ipv6_addresses_and_link_local_ones_judge_nothing() -> None:
    here = links(eth0=("198.18.2.0/24", "2001:db8:2::/64", "fe80::/64"))
    assert here.on_link("eth0", ips("2001:db8:2::9"))  # an IPv6-only node on the link
    assert not here.on_link("eth0", ips("2001:db8:1::9"))
    assert not here.on_link("eth0", ips("fe80::1", "198.18.1.1"))  # every link has fe80::/64: it tells nothing


def test_an_interface_with_no_prefix_of_the_family_cannot_tell_and_takes_it() -> None:
    v4_only = links(eth0=("198.18.2.0/24", "fe80::/64", "169.254.0.0/16"))
    assert v4_only.on_link("eth0", ips("2001:db8:1::9"))  # an IPv6-only node: no IPv6 prefix here to judge it
    assert not v4_only.on_link("eth0", ips("2001:db8:1::9", "198.18.1.1"))  # its IPv4 address is judged
    hosts = links(eth0=("198.18.2.1/32", "2001:db8::1/128"))  # /32 and /128: the link's nodes are all outside
    assert hosts.on_link("eth0", ips("198.18.7.7"))
    assert links().on_link("eth9", ips("198.18.7.7"))  # an interface not read: cannot tell
    assert Links({"eth0": []}).on_link("eth0", ips("198.18.7.7"))  # no address yet (DHCP)

