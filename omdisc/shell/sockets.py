"""The daemon's multicast sockets, one per interface and address family, kept in step with the
interfaces as they come and go: an interface re-created (a new ifindex: a hot-plugged NIC, a bond or
VLAN rebuilt) gets new sockets and group memberships; one that vanished loses its sockets and gets
them back when it returns."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable

from omdisc.core.config import Config
from omdisc.core.engine import Outgoing
from omdisc.core.interface_plan import Plan, StartupError
from omdisc.core.protocol import IPAddress
from omdisc.core.records import record
from omdisc.shell import interfaces
from omdisc.shell.loop import Loop
from omdisc.shell.transport import Endpoint, MulticastSocket, UnicastSocket

log = logging.getLogger("omdisc.net")

Key = tuple[str, int]  # (interface, family); interface "": the family's unicast socket (probes)


@record(frozen=True)
class Wanted:
    """The sockets a configuration asks for."""

    names: tuple[str, ...]
    families: tuple[int, ...]
    endpoints: dict[int, Endpoint]

    @classmethod
    def of(cls, cfg: Config, plan: Plan) -> Wanted:
        groups: dict[int, IPAddress] = {4: cfg.group, 6: cfg.group6}
        return cls(plan.announce_on, plan.families, {f: Endpoint(groups[f], cfg.port, plan.ttl) for f in plan.families})


class Sockets:
    """The sockets in use, each read by the loop: `on_readable` gets the socket that has datagrams
    waiting."""

    def __init__(self, stats: Counter[str], loop: Loop, on_readable: Callable[[MulticastSocket], None]) -> None:
        self.stats = stats
        self.loop = loop
        self.on_readable = on_readable
        self.sockets: dict[Key, MulticastSocket] = {}
        self.wanted: Wanted | None = None
        self._missing: set[str] = set()  # interfaces that vanished, said once

    def __bool__(self) -> bool:
        return bool(self.sockets)

    def watch(self, sock: MulticastSocket) -> None:
        self.loop.add_reader(sock.fileno(), lambda: self.on_readable(sock))

    def unwatch(self, sock: MulticastSocket) -> None:
        self.loop.remove_reader(sock.fileno())

    @staticmethod
    def _open(name: str, family: int, wanted: Wanted, stats: Counter[str]) -> MulticastSocket:
        endpoint = wanted.endpoints[family]
        try:
            return MulticastSocket(name, interfaces.index(name), endpoint, stats)
        except OSError as e:
            raise StartupError(f"cannot join {endpoint.group} port {endpoint.port} on {name}: {e.strerror}") from None

    def _open_unicast(self, endpoint: Endpoint) -> UnicastSocket:
        try:
            return UnicastSocket(endpoint, self.stats)
        except OSError as e:
            raise StartupError(f"cannot open the probe socket on port {endpoint.port}: {e.strerror}") from None

    def replace_all(self, wanted: Wanted) -> None:
        self.install(wanted, self.make(wanted))

    def make(self, wanted: Wanted) -> dict[Key, MulticastSocket]:
        """All of `wanted`'s sockets, or none: on an error the new ones are closed again and the old
        ones stay (a reload that cannot open its sockets changes nothing)."""
        made: dict[Key, MulticastSocket] = {}
        try:
            for name in wanted.names:
                for family in wanted.families:
                    made[(name, family)] = self._open(name, family, wanted, self.stats)
            for family in wanted.families:
                made[("", family)] = self._open_unicast(wanted.endpoints[family])
        except BaseException:
            for sock in made.values():
                sock.close()
            raise
        return made

    def install(self, wanted: Wanted, made: dict[Key, MulticastSocket], drain: bool = False) -> None:
        """The sockets from make() in place of the old ones (with `drain`, what those hold is read first)."""
        if drain:
            self.drain()
        self.close_all()
        self.wanted = wanted
        self._missing.clear()
        for key, sock in made.items():
            self.sockets[key] = sock
            self.watch(sock)

    @property
    def missing(self) -> frozenset[str]:
        """The interfaces we should be on that are gone, until they come back."""
        return frozenset(self._missing)

    def sync(self) -> bool:
        """Match the sockets to the interfaces as they are now. True if any socket was (re)opened:
        the caller then rejoins, since it may have missed what was said meanwhile."""
        if self.wanted is None:
            return False
        opened = False
        for name in self.wanted.names:
            index = interfaces.index_or_none(name)
            for family in self.wanted.families:
                sock = self.sockets.get((name, family))
                if sock is not None and sock.ifindex == index:
                    continue
                if sock is not None:
                    self._drop((name, family))
                if index is None:
                    self._vanished(name)
                    continue
                opened |= self._reopen(name, family)
        return opened

    def _vanished(self, name: str) -> None:
        if name not in self._missing:
            self._missing.add(name)
            self.stats["interface_lost"] += 1
            log.warning("interface %s is gone: its sockets are closed until it comes back", name)

    def _reopen(self, name: str, family: int) -> bool:
        assert self.wanted is not None
        try:
            sock = self._open(name, family, self.wanted, self.stats)
        except StartupError as e:
            self.stats["interface_reopen_errors"] += 1
            log.warning("%s (will try again)", e)
            return False
        self.sockets[(name, family)] = sock
        self.watch(sock)
        self._missing.discard(name)
        self.stats["interface_reopened"] += 1
        log.warning("interface %s (index %d): sockets opened again; rejoining", name, sock.ifindex)
        return True

    def _drop(self, key: Key) -> None:
        sock = self.sockets.pop(key)
        self.unwatch(sock)
        sock.close()

    def close_all(self) -> None:
        for key in list(self.sockets):
            self._drop(key)

    def send(self, out: list[Outgoing], families: frozenset[int]) -> None:
        """On the sockets of `families` only: the families we have an address of. (A copy sent on
        IPv6 from a link-local address would be dropped by every peer: it is none of ours.)"""
        for o in out:
            if o.to is not None:
                self._unicast(o.data, o.to, o.interfaces)
                continue
            for (name, family), sock in self.sockets.items():
                if name and family in families and (o.interfaces is None or name in o.interfaces):
                    sock.send(o.data)

    def _unicast(self, data: bytes, to: IPAddress, where: frozenset[str] | None) -> None:
        sock = self.sockets.get(("", to.version))
        if not isinstance(sock, UnicastSocket):
            self.stats["send_errors:no_probe_socket"] += 1
            return
        ifindex = 0
        if to.version == 6 and to.is_link_local and where:
            ifindex = interfaces.index_or_none(next(iter(where))) or 0
        sock.send_to(data, to, ifindex)

    def drain(self) -> None:
        """What the sockets hold, read before they are replaced: nothing queued is lost."""
        for sock in self.sockets.values():
            self.on_readable(sock)
