"""This node's addresses as the interfaces have them now, and the watch on them: the kernel's link
and address events through netlink (looked at once a burst of them settles) and a poll twice per
announce interval, which finds the same without netlink, later."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable

from omdisc.core.config import Config
from omdisc.core.engine import LocalNode
from omdisc.core.interface_plan import Addresses, Plan, StartupError, links_for, node_addresses, plan_for
from omdisc.core.links import Links
from omdisc.core.nodeid import NodeIdError
from omdisc.core.protocol import IPAddress
from omdisc.shell import interfaces
from omdisc.shell.loop import Loop
from omdisc.shell.netlink import LinkMonitor

log = logging.getLogger("omdisc")

RESCAN_DELAY = 0.1  # after a link event: let a burst of netlink messages settle, then look once
# what a look at our addresses may find instead of them
ADDRESS_ERRORS = (StartupError, NodeIdError, interfaces.InterfaceError)


def make_plan(cfg: Config) -> Plan:
    names = cfg.interfaces or (interfaces.default_interface(),)
    interfaces.check_exist(names)
    return plan_for(cfg, names)


def _own(name: str, families: tuple[int, ...]) -> list[IPAddress]:
    own: list[IPAddress] = []
    if 4 in families:
        own += interfaces.ipv4_addresses(name)
    if 6 in families:
        own += interfaces.ipv6_addresses(name)
    return own


def local_node(cfg: Config, plan: Plan) -> Addresses:
    """Our addresses and node id as the plan's interfaces have them now."""
    return node_addresses(cfg, plan, [_own(name, plan.families) for name in plan.interfaces])


def links(plan: Plan) -> Links | None:
    """What is on-link on each interface we hear on, as the interfaces have it now (the engine
    takes a datagram sent directly only from a node with an address there)."""
    return links_for(plan, {name: interfaces.networks(name) for name in plan.announce_on})


class AddressWatch:
    """When to look at the interfaces again, and what our addresses are when we do. `wake` is
    called when a link event makes a look due sooner than the loop sleeps."""

    def __init__(self, stats: Counter[str], loop: Loop, wake: Callable[[], None]) -> None:
        self.stats = stats
        self.loop = loop
        self.clock = loop.clock
        self.wake = wake
        self.monitor: LinkMonitor | None = None
        self.next_poll = 0.0
        self.rescan_at = float("inf")
        self.left_out: tuple[IPAddress, ...] = ()  # said when they change

    def open(self, poll_every: float) -> None:
        try:
            self.monitor = LinkMonitor()
        except OSError as e:  # still correct without it: the address poll finds the same, later
            log.warning("cannot watch interface changes through netlink (%s); polling every %gs", e.strerror or e,
                        poll_every)
            return
        self.loop.add_reader(self.monitor.fileno(), self._on_link_event)

    def close(self) -> None:
        if self.monitor is not None:
            self.loop.remove_reader(self.monitor.fileno())
            self.monitor.close()

    def next_due(self) -> float:
        return min(self.next_poll, self.rescan_at)

    def poll_from(self, now: float, poll_every: float) -> None:
        self.next_poll = now + poll_every

    def looked(self, now: float, poll_every: float) -> None:
        """A look was taken now: the next one at the next poll, or sooner at a link event."""
        self.poll_from(now, poll_every)
        self.rescan_at = float("inf")

    def _on_link_event(self) -> None:
        assert self.monitor is not None
        try:
            changed = self.monitor.changed()
        except OSError as e:
            self.stats["netlink_errors"] += 1
            log.debug("netlink: %s", e)
            return
        if changed and self.rescan_at == float("inf"):
            self.rescan_at = self.clock() + RESCAN_DELAY
            self.wake()

    def moved(self, cfg: Config, plan: Plan, local: LocalNode) -> LocalNode | None:
        """Our node as the interfaces have it now, if it is not `local` (then we are someone else)."""
        addrs = self.current(cfg, plan)
        return addrs.node if addrs is not None and addrs.node != local else None

    def current(self, cfg: Config, plan: Plan) -> Addresses | None:
        """Our addresses as they are now; None if they cannot be told (said once, counted)."""
        try:
            addrs = local_node(cfg, plan)
        except ADDRESS_ERRORS as e:
            self.stats["address_problems"] += 1
            if self.stats["address_problems"] == 1:
                log.warning("%s; keeping the addresses announced so far", e)
            return None
        self.stats.pop("address_problems", None)
        self.report_left_out(addrs)
        return addrs

    def report_left_out(self, addrs: Addresses) -> None:
        if addrs.left_out and addrs.left_out != self.left_out:
            log.warning("this node has %d addresses; the protocol carries 16: announcing %s; left out %s",
                        len(addrs.node.addresses) + len(addrs.left_out), ", ".join(map(str, addrs.node.addresses)),
                        ", ".join(map(str, addrs.left_out)))
        self.left_out = addrs.left_out
