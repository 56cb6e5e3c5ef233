"""The interfaces' addresses with their prefixes, as netifaces reads them (shell/interfaces.py)."""

from __future__ import annotations

from ipaddress import ip_interface

from omdisc.shell import interfaces


def test_an_interfaces_addresses_come_with_their_prefixes_in_both_families() -> None:
    own = interfaces.networks("lo")  # every namespace has it
    assert ip_interface("127.0.0.1/8") in own
    assert all(a.network.prefixlen <= a.network.max_prefixlen for a in own)


def test_masks_are_read_as_netifaces_says_them_and_a_gone_interface_has_none() -> None:
    assert interfaces._prefix_length("255.255.254.0", 32) == 23
    assert interfaces._prefix_length("ffff:ffff:ffff:ffff::/64", 128) == 64
    assert interfaces._prefix_length("", 128) == 128  # no mask: the address alone, which tells nothing
    assert interfaces.networks("omdisc-no-such-if") == []
