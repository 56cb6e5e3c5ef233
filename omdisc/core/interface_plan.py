"""Which interfaces take part and how (seed section 5), and this node's own addresses and id, from
the interfaces' names and addresses as shell/addresses.py reads them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from ipaddress import IPv4Address, IPv4Interface, IPv6Interface

from omdisc.core.config import Config
from omdisc.core.engine import LocalNode
from omdisc.core.links import Links
from omdisc.core.nodeid import check_node_id, node_id_for
from omdisc.core.protocol import FLAG_GATEWAY, MAX_ADDRESSES, IPAddress
from omdisc.core.records import record


class StartupError(RuntimeError):
    pass


@record(frozen=True)
class Plan:
    """Which interfaces take part and how: those that announce, the TTL, routing, the families."""

    interfaces: tuple[str, ...]  # all of them, in the order given: the first gives our primary address
    announce_on: tuple[str, ...]  # those with multicast sockets
    ttl: int
    route: bool  # forward announcements between the announce_on interfaces
    families: tuple[int, ...]  # 4, 6 or both

    @property
    def gateway(self) -> bool:
        return self.route and len(self.announce_on) > 1

    @property
    def route_between(self) -> frozenset[str]:
        """The interfaces the engine forwards between; none unless we are a gateway."""
        return frozenset(self.announce_on) if self.gateway else frozenset()

    @property
    def multicast_routed(self) -> bool:
        """Multicast routers may carry what a node sends to other subnets (TTL mode, above 1)."""
        return self.ttl > 1

    @property
    def mode(self) -> str:
        """How announcements travel, in words (the start-up line)."""
        families = "+".join(f"IPv{f}" for f in self.families)
        if self.gateway:
            return f"{families}, gateway routing between {', '.join(self.announce_on)}"
        return f"{families}, multicast TTL {self.ttl}"


def plan_for(cfg: Config, names: tuple[str, ...]) -> Plan:
    """The plan for `names`: the configured interfaces, or the default route's."""
    families = {"ipv4": (4,), "ipv6": (6,), "both": (4, 6)}[cfg.family]
    if cfg.multicast_ttl is not None:  # TTL mode: real multicast routing joins the networks
        return Plan(names, names[:1], cfg.multicast_ttl, False, families)
    return Plan(names, names, 1, cfg.route, families)


@record(frozen=True)
class Addresses:
    """This node from its interfaces' addresses, and the addresses that did not fit."""

    node: LocalNode
    left_out: tuple[IPAddress, ...]  # past MAX_ADDRESSES: not announced


def node_id_of(cfg: Config, primary: IPAddress) -> int:
    """The configured node id, else the one the primary address gives (none from an IPv6 one)."""
    if cfg.node_id:
        return check_node_id(cfg.node_id)
    return node_id_for(primary) if isinstance(primary, IPv4Address) else 0


def node_addresses(cfg: Config, plan: Plan, per_interface: list[list[IPAddress]]) -> Addresses:
    """Our addresses from each of plan.interfaces' own (in the plan's families): the primary first
    (the first IPv4 address of the first interface, or its first global IPv6 address), then each
    interface's first address (what the kernel sends from, which peers check), then the rest, IPv4
    before IPv6; at most MAX_ADDRESSES of them."""
    if not per_interface[0]:
        wanted = {(4,): "IPv4", (6,): "global IPv6", (4, 6): "IPv4 or global IPv6"}[plan.families]
        raise StartupError(f"interface {plan.interfaces[0]!r} has no {wanted} address")
    firsts = [a for own in per_interface for a in (own[:1] + [b for b in own if b.version != own[0].version][:1])]
    rest = sorted((a for own in per_interface for a in own), key=lambda a: a.version)
    ordered = list(dict.fromkeys([per_interface[0][0], *firsts, *rest]))
    node = LocalNode(node_id_of(cfg, ordered[0]), tuple(ordered[:MAX_ADDRESSES]), FLAG_GATEWAY if plan.gateway else 0)
    return Addresses(node, tuple(ordered[MAX_ADDRESSES:]))


def links_for(plan: Plan, own: Mapping[str, Iterable[IPv4Interface | IPv6Interface]]) -> Links | None:
    """What is on-link on each interface we hear on, from its own addresses and their prefixes (of
    both families, whichever we announce: a peer's are judged); None when multicast routers may
    carry a datagram its originator sent to other subnets (TTL mode): then anyone may be heard."""
    if plan.multicast_routed:
        return None
    return Links({name: [a.network for a in own.get(name, ())] for name in plan.announce_on})
