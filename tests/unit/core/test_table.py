from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address

import pytest

from omdisc.core.nodeid import NodeIdError, node_id_for, settle
from omdisc.core.table import (
    MAX_ENTRIES,
    Entry,
    TableFormatError,
    build_table,
    decode_config,
    decode_mospe,
    encode_config,
    encode_mospe,
    format_text,
)


@dataclass(frozen=True)
class N:
    node_id: int
    addresses: tuple[IPv4Address | IPv6Address, ...]


def n(addr: str, *more: str, node_id: int | None = None) -> N:
    a = ip_address(addr)
    return N(node_id or node_id_for(a), (a, *map(ip_address, more)))  # type: ignore[arg-type]


def test_node_ids_as_in_the_openmosix_howto() -> None:
    assert node_id_for(IPv4Address("192.168.10.220")) == 2780
    assert node_id_for(IPv4Address("192.168.10.78")) == 2638
    with pytest.raises(NodeIdError, match="node id 0"):
        node_id_for(IPv4Address("198.18.0.0"))


def test_consecutive_ids_on_consecutive_addresses_compress_into_ranges() -> None:
    t = build_table([n("198.18.0.3"), n("198.18.0.1"), n("198.18.0.2"), n("198.18.0.7"), n("198.18.1.8")])
    assert [e.text() for e in t.entries] == ["1 198.18.0.1 3", "7 198.18.0.7 1", "264 198.18.1.8 1"]


def test_gateway_other_addresses_are_alias_lines_and_ipv6_only_nodes_stay_out() -> None:
    gw = n("198.18.0.1", "198.19.5.1", "2001:db8::1")
    t = build_table([gw, n("198.18.0.2"), N(0x7, (ip_address("2001:db8::9"),))])
    assert [e.text() for e in t.entries] == ["1 198.18.0.1 2", "1 198.19.5.1 ALIAS"]
    assert t.ipv6_only == (ip_address("2001:db8::9"),)


def test_collision_lowest_address_keeps_the_id_whatever_the_order() -> None:
    a, b = n("198.19.1.5"), n("198.18.1.5")
    for order in ([a, b], [b, a]):
        t = build_table(order)
        assert [e.text() for e in t.entries] == ["261 198.18.1.5 1"]
        assert t.collisions[0].owner == ip_address("198.18.1.5")
        assert t.collisions[0].losers == (ip_address("198.19.1.5"),)
    kept, _ = settle([n("2001:db8::1", node_id=9), n("198.18.200.1", node_id=9)])
    assert kept[0].addresses[0] == ip_address("198.18.200.1")  # IPv4 before IPv6


def test_more_than_256_lines_keeps_the_first_256_and_reports_the_rest() -> None:
    nodes = [n(f"198.18.{i}.1") for i in range(1, 250)] + [n(f"198.19.{i}.3") for i in range(1, 20)]
    t = build_table(nodes)
    assert len(t.entries) == MAX_ENTRIES
    assert len(t.dropped) == 249 + 19 - MAX_ENTRIES
    assert max(e.node_id for e in t.entries) < min(e.node_id for e in t.dropped)


def test_binary_layout_roundtrip_and_corruption() -> None:
    entries = [Entry(1, IPv4Address("198.18.0.1"), 3), Entry(1, IPv4Address("198.19.0.1"), 1, alias=True)]
    data = encode_config(entries)
    assert len(data) == 24
    assert data[4:8] == bytes([198, 18, 0, 1])  # network order, as the kernel takes addresses
    assert decode_config(data) == entries
    assert decode_mospe(encode_mospe(2780)) == 2780
    with pytest.raises(TableFormatError):
        decode_config(data[:-1])
    with pytest.raises(TableFormatError):
        decode_mospe(b"\x01")


def test_text_form_is_a_valid_map_file() -> None:
    text = format_text(5, [Entry(1, IPv4Address("198.18.0.1"), 5)])
    assert text == "# this is openMosix node #5\n1 198.18.0.1 5\n"
    assert format_text(0, []) == "# this node is not in the map\n"
