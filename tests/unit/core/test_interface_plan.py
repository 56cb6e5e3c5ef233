"""The interface plan and this node's own addresses and id, decided from names and address lists
alone (omdisc/core/interface_plan.py; shell/addresses.py reads the interfaces)."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_address, ip_interface

import pytest

from omdisc.core.config import Config
from omdisc.core.interface_plan import StartupError, links_for, node_addresses, plan_for
from omdisc.core.nodeid import node_id_for
from omdisc.core.protocol import FLAG_GATEWAY, MAX_ADDRESSES, IPAddress


def ips(*texts: str) -> list[IPAddress]:
    return [ip_address(t) for t in texts]


def test_several_interfaces_route_between_them_unless_a_ttl_is_given() -> None:
    routed = plan_for(Config(), ("eth0", "eth1"))
    assert routed.announce_on == ("eth0", "eth1") and routed.gateway and routed.ttl == 1
    assert routed.route_between == frozenset({"eth0", "eth1"})
    assert routed.mode == "IPv4, gateway routing between eth0, eth1"
    ttl = plan_for(Config(multicast_ttl=4, family="both"), ("eth0", "eth1"))
    assert ttl.interfaces == ("eth0", "eth1") and ttl.announce_on == ("eth0",) and not ttl.gateway
    assert ttl.families == (4, 6) and ttl.mode == "IPv4+IPv6, multicast TTL 4"


def test_the_primary_then_each_interfaces_first_then_the_rest_ipv4_before_ipv6() -> None:
    plan = plan_for(Config(family="both"), ("eth0", "eth1"))
    per_if = [ips("198.18.0.1", "198.18.0.2", "2001:db8::1"), ips("2001:db8:1::1", "198.18.1.1")]
    addrs = node_addresses(Config(), plan, per_if)
    assert addrs.node.addresses == tuple(ips("198.18.0.1", "2001:db8::1", "2001:db8:1::1", "198.18.1.1",
                                             "198.18.0.2"))
    assert addrs.node.node_id == node_id_for(IPv4Address("198.18.0.1")) and addrs.left_out == ()
    assert addrs.node.flags == FLAG_GATEWAY


def test_past_sixteen_addresses_the_rest_are_left_out() -> None:
    many = [IPv4Address(f"198.18.0.{i}") for i in range(1, MAX_ADDRESSES + 3)]
    addrs = node_addresses(Config(), plan_for(Config(), ("eth0",)), [list(many)])
    assert addrs.node.addresses == tuple(many[:MAX_ADDRESSES]) and addrs.left_out == tuple(many[MAX_ADDRESSES:])


def test_the_node_id_is_configured_or_from_an_ipv4_primary_or_none() -> None:
    v6 = plan_for(Config(family="ipv6"), ("eth0",))
    assert node_addresses(Config(), v6, [ips("2001:db8::7")]).node.node_id == 0
    assert node_addresses(Config(node_id=42), v6, [ips("2001:db8::7")]).node.node_id == 42
    assert node_addresses(Config(), v6, [ips("2001:db8::7")]).node.primary == IPv6Address("2001:db8::7")


def test_a_first_interface_without_an_address_cannot_start() -> None:
    plan = plan_for(Config(family="ipv6"), ("eth0", "eth1"))
    with pytest.raises(StartupError, match="interface 'eth0' has no global IPv6 address"):
        node_addresses(Config(), plan, [[], ips("2001:db8::1")])


def test_what_is_on_link_is_judged_on_every_interface_we_hear_on_unless_routers_carry_the_group() -> None:
    own = {"eth0": [ip_interface("198.18.1.1/24"), ip_interface("fe80::1/64")],
           "eth1": [ip_interface("198.18.2.1/24"), ip_interface("2001:db8:2::1/64")]}
    far, near = ips("198.18.1.9"), ips("2001:db8:2::9")
    gateway = links_for(plan_for(Config(), ("eth0", "eth1")), own)
    assert gateway is not None and gateway.on_link("eth0", far) and not gateway.on_link("eth1", far)
    assert gateway.on_link("eth1", near)  # IPv6 prefixes too, whatever family we announce
    assert links_for(plan_for(Config(multicast_ttl=4), ("eth0", "eth1")), own) is None  # TTL mode: any subnet
    one_hop = links_for(plan_for(Config(multicast_ttl=1), ("eth1",)), own)  # TTL 1 crosses no router
    assert one_hop is not None and not one_hop.on_link("eth1", far)
