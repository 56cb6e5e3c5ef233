"""Which interfaces take part and how (seed section 5), and this node's own addresses and id."""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address

from omdisc.core.config import Config
from omdisc.core.engine import LocalNode
from omdisc.core.nodeid import check_node_id, node_id_for
from omdisc.core.protocol import FLAG_GATEWAY, MAX_ADDRESSES, IPAddress
from omdisc.shell import interfaces


class StartupError(RuntimeError):
    pass


@dataclass(frozen=True)
class Plan:
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


def make_plan(cfg: Config) -> Plan:
    names = cfg.interfaces or (interfaces.default_interface(),)
    interfaces.check_exist(names)
    families = {"ipv4": (4,), "ipv6": (6,), "both": (4, 6)}[cfg.family]
    if cfg.multicast_ttl is not None:  # TTL mode: real multicast routing joins the networks
        return Plan(names, names[:1], cfg.multicast_ttl, False, families)
    return Plan(names, names, 1, cfg.route, families)


@dataclass(frozen=True)
class Addresses:
    node: LocalNode
    left_out: tuple[IPAddress, ...]  # past MAX_ADDRESSES: not announced


def _per_interface(plan: Plan) -> list[list[IPAddress]]:
    out: list[list[IPAddress]] = []
    for name in plan.interfaces:
        own: list[IPAddress] = []
        if 4 in plan.families:
            own += interfaces.ipv4_addresses(name)
        if 6 in plan.families:
            own += interfaces.ipv6_addresses(name)
        out.append(own)
    return out


def local_node(cfg: Config, plan: Plan) -> Addresses:
    """Our addresses: the primary first (the first IPv4 address of the first interface, or its
    first global IPv6 address), then each interface's first address (what the kernel sends from,
    which peers check), then the rest, IPv4 before IPv6; at most MAX_ADDRESSES of them."""
    per_if = _per_interface(plan)
    if not per_if[0]:
        wanted = {(4,): "IPv4", (6,): "global IPv6", (4, 6): "IPv4 or global IPv6"}[plan.families]
        raise StartupError(f"interface {plan.interfaces[0]!r} has no {wanted} address")
    firsts = [a for own in per_if for a in (own[:1] + [b for b in own if b.version != own[0].version][:1])]
    rest = sorted((a for own in per_if for a in own), key=lambda a: a.version)
    ordered = list(dict.fromkeys([per_if[0][0], *firsts, *rest]))
    if cfg.node_id:
        node_id = check_node_id(cfg.node_id)
    else:
        primary = ordered[0]
        node_id = node_id_for(primary) if isinstance(primary, IPv4Address) else 0
    node = LocalNode(node_id, tuple(ordered[:MAX_ADDRESSES]), FLAG_GATEWAY if plan.gateway else 0)
    return Addresses(node, tuple(ordered[MAX_ADDRESSES:]))
