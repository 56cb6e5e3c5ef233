"""Node ids as openMosix numbered nodes, and the rule that settles two claims on one id."""

from __future__ import annotations

from collections.abc import Iterable
from ipaddress import IPv4Address

from omdisc.core.protocol import MAX_NODE_ID, IPAddress
from omdisc.core.records import record

TYPE_CHECKING = False  # typing is mypy's only: never loaded at run time (docs/architecture.md)
if TYPE_CHECKING:
    from typing import Protocol

    class NodeLike(Protocol):
        @property
        def node_id(self) -> int: ...

        @property
        def addresses(self) -> tuple[IPAddress, ...]: ...


class NodeIdError(ValueError):
    pass


def node_id_for(addr: IPv4Address) -> int:
    """256 x third octet + fourth octet: 192.168.10.220 is node 2780, as in the openMosix HOWTO."""
    node_id = addr.packed[2] * 256 + addr.packed[3]
    if node_id == 0:
        raise NodeIdError(f"address {addr} gives node id 0, which is invalid; set node_id in the config")
    return node_id


def check_node_id(node_id: int) -> int:
    if not 1 <= node_id <= MAX_NODE_ID:
        raise NodeIdError(f"node id {node_id} is out of range 1..{MAX_NODE_ID}")
    return node_id


def address_order(addr: IPAddress) -> tuple[int, int]:
    """IPv4 before IPv6, then numerically: the order every node applies the same way."""
    return (addr.version, int(addr))


@record(frozen=True)
class Collision:
    """Two or more nodes with one id: the owner keeps it, the losers are out of the table."""

    node_id: int
    owner: IPAddress
    losers: tuple[IPAddress, ...]


def settle(nodes: Iterable[NodeLike]) -> tuple[list[NodeLike], list[Collision]]:
    """Keep one node per id: the one with the lowest primary address (see address_order).

    Every node applies this rule to the same membership, so all maps stay identical.
    Returns the kept nodes sorted by id, and one Collision per contested id.
    """
    by_id: dict[int, list[NodeLike]] = {}
    for node in nodes:
        by_id.setdefault(node.node_id, []).append(node)
    kept: list[NodeLike] = []
    collisions: list[Collision] = []
    for node_id in sorted(by_id):
        claimants = sorted(by_id[node_id], key=lambda n: address_order(n.addresses[0]))
        kept.append(claimants[0])
        if len(claimants) > 1:
            losers = tuple(n.addresses[0] for n in claimants[1:])
            collisions.append(Collision(node_id, claimants[0].addresses[0], losers))
    return kept, collisions
