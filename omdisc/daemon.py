"""omdiscd: the daemon shell around the engine. asyncio loop, sockets, signals, sinks, pid file.

Data flows one way: socket -> engine (decode, membership) -> batched map -> sinks. Timers feed the
same engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from . import __version__, events, interfaces
from .cli import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK, build_parser
from .config import DEFAULT_PATH, Config, ConfigError, drop_ins, dump, load
from .engine import Engine, LocalNode, Outgoing, Settings
from .journal import LogControl, choose_target, notify, under_systemd, watchdog_seconds
from .nodeid import NodeIdError, check_node_id, node_id_for
from .pidfile import PidFile, PidFileError
from .protocol import FLAG_GATEWAY, IPAddress
from .sinks import AlphaSink, LiveSink, SinkError, choose_sink, write_state
from .table import Entry, Table
from .transport import Endpoint, MulticastHandler

log = logging.getLogger("omdisc")
klog = logging.getLogger("omdisc.kernel")


class StartupError(RuntimeError):
    pass


@dataclass(frozen=True)
class Plan:
    """Which interfaces take part and how, from the config (seed section 5)."""

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


def local_node(cfg: Config, plan: Plan) -> LocalNode:
    """Our addresses: IPv4 first (the first IPv4 address of the first interface is our primary
    address and gives our node id), then IPv6 where enabled."""
    v4 = [a for name in plan.interfaces for a in interfaces.ipv4_addresses(name)] if 4 in plan.families else []
    v6 = [a for name in plan.interfaces for a in interfaces.ipv6_addresses(name)] if 6 in plan.families else []
    first = plan.interfaces[0]
    own: list[IPAddress] = [*interfaces.ipv4_addresses(first), *interfaces.ipv6_addresses(first)]
    primary = next((a for a in own if a in v4 or a in v6), None)
    if primary is None:
        wanted = {(4,): "IPv4", (6,): "global IPv6", (4, 6): "IPv4 or global IPv6"}[plan.families]
        raise StartupError(f"interface {first!r} has no {wanted} address")
    addrs = list(dict.fromkeys([primary, *v4, *v6]))
    if cfg.node_id:
        node_id = check_node_id(cfg.node_id)
    else:
        node_id = node_id_for(primary) if isinstance(primary, IPv4Address) else 0
    return LocalNode(node_id, tuple(addrs), FLAG_GATEWAY if plan.gateway else 0)


def settings_for(cfg: Config) -> Settings:
    return Settings(cfg.announce_interval, cfg.dead_interval, cfg.remove_on_leave)


class Daemon:
    def __init__(self, cfg: Config, cfg_path: Path | None, overrides: dict[str, Any], logctl: LogControl,
                 plan: Plan, sink: AlphaSink | LiveSink) -> None:
        self.cfg = cfg
        self.cfg_path = cfg_path
        self.overrides = overrides
        self.logctl = logctl
        self.plan = plan
        self.sink = sink
        self.clock = time.monotonic
        self.pidfile = PidFile(cfg.pid_file)
        self.handlers: dict[tuple[str, int], MulticastHandler] = {}
        self.engine = Engine(local_node(cfg, plan), time.time_ns() // 1000, settings_for(cfg), random.Random())
        self.engine.route_between = plan.route_between
        self._ipv6_only_reported: set[IPAddress] = set()
        self._dropped_reported: tuple[Entry, ...] = ()
        self.stats = self.engine.stats
        self._written_version = -1
        self._collisions_reported: set[tuple[int, IPAddress, tuple[IPAddress, ...]]] = set()
        self._flush_pending = False
        self._wake = asyncio.Event()
        self._stopping = False
        self._next_address_check = 0.0
        self._next_watchdog = float("inf")
        self._watchdog = watchdog_seconds()
        self._ready_at = 0.0

    # --- lifecycle ---------------------------------------------------------------------------

    async def run(self, on_ready: Callable[[], None] = lambda: None) -> int:
        self.pidfile.acquire()
        try:
            self._start()
            on_ready()
            await self._loop()
        finally:
            self._shutdown()
        return EXIT_OK

    def _start(self) -> None:
        loop = asyncio.get_running_loop()
        self.sink.prepare()
        self._open_handlers()
        for sig, handler in ((signal.SIGTERM, self.stop), (signal.SIGINT, self.stop),
                             (signal.SIGHUP, self.reload), (signal.SIGUSR1, self.toggle_debug)):
            loop.add_signal_handler(sig, handler)
        self.logctl.set_field("OMDISC_NODE_ID", self.engine.local.node_id)
        now = self.clock()
        self._ready_at = time.time()
        self._send(self.engine.start(now))
        self._flush_map()
        local = self.engine.local
        events.log_event(log, events.STARTED, "omdiscd %s started: node #%d at %s on %s (%s), map to %s",
                         __version__, local.node_id, ", ".join(map(str, local.addresses)),
                         ",".join(self.plan.announce_on), self._mode(), self.sink.description)
        notify(f"READY=1\nMAINPID={os.getpid()}\nSTATUS={self.status()}")
        self._next_address_check = now + self.cfg.announce_interval / 2
        if self._watchdog:
            self._next_watchdog = now

    def _shutdown(self) -> None:
        notify("STOPPING=1")
        if self.handlers:  # we had joined: say goodbye
            self._send(self.engine.shutdown())
            events.log_event(log, events.STOPPED, "omdiscd stopped (left the cluster)")
        self._close_handlers()
        self.pidfile.release()

    async def _loop(self) -> None:
        while not self._stopping:
            deadline = min(self.engine.next_deadline(), self._next_address_check, self._next_watchdog)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.0, deadline - self.clock()))
            now = self.clock()
            out = self.engine.tick(now)
            self._send(out)
            if now >= self._next_address_check:
                self._check_addresses(now)
            if now >= self._next_watchdog:
                notify("WATCHDOG=1")
                self._next_watchdog = now + (self._watchdog or 0)
            self._flush_map(state=bool(out))

    def _mode(self) -> str:
        families = "+".join(f"IPv{f}" for f in self.plan.families)
        if self.plan.gateway:
            return f"{families}, gateway routing between {', '.join(self.plan.announce_on)}"
        return f"{families}, multicast TTL {self.plan.ttl}"

    def stop(self) -> None:
        log.info("stopping: announcing LEAVE")
        self._stopping = True
        self._wake.set()

    def status(self) -> str:
        n = len(self.engine.membership) + 1
        return (f"node #{self.engine.local.node_id} on {','.join(self.plan.announce_on)}: "
                f"{n} node{'s' * (n != 1)} in the map")

    # --- sockets -----------------------------------------------------------------------------

    def _open_handlers(self) -> None:
        self._install(self._make_handlers(self.cfg, self.plan))

    def _make_handlers(self, cfg: Config, plan: Plan) -> dict[tuple[str, int], MulticastHandler]:
        """All of the plan's sockets, or none: on an error the ones opened are closed again."""
        groups: dict[int, IPAddress] = {4: cfg.group, 6: cfg.group6}
        made: dict[tuple[str, int], MulticastHandler] = {}
        try:
            for name in plan.announce_on:
                for family in plan.families:
                    endpoint = Endpoint(groups[family], cfg.port, plan.ttl)
                    try:
                        made[(name, family)] = MulticastHandler(name, interfaces.index(name), endpoint, self.stats)
                    except OSError as e:
                        raise StartupError(f"cannot join {endpoint.group} port {endpoint.port} on {name}: "
                                           f"{e.strerror}") from None
        except BaseException:
            for h in made.values():
                h.close()
            raise
        return made

    def _install(self, handlers: dict[tuple[str, int], MulticastHandler]) -> None:
        loop = asyncio.get_running_loop()
        for key, h in handlers.items():
            self.handlers[key] = h
            loop.add_reader(h.fileno(), self._on_readable, h)

    def _close_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for h in self.handlers.values():
            loop.remove_reader(h.fileno())
            h.close()
        self.handlers.clear()

    def _on_readable(self, handler: MulticastHandler) -> None:
        batch = handler.receive_batch()
        if not batch:
            return
        self.stats["batches"] += 1
        now = self.clock()
        for data, _src in batch:
            self._send(self.engine.receive(data, now, interface=handler.ifname))
        if not self._flush_pending:  # once per loop pass, whatever the number of interfaces
            self._flush_pending = True
            asyncio.get_running_loop().call_soon(self._flush_map)
        self._wake.set()  # a JOIN may have scheduled an answer

    def _send(self, out: list[Outgoing]) -> None:
        for o in out:
            for (name, _family), h in self.handlers.items():
                if o.interfaces is None or name in o.interfaces:
                    h.send(o.data)

    # --- the map -----------------------------------------------------------------------------

    def _flush_map(self, state: bool = False) -> None:
        self._flush_pending = False
        version = self.engine.map_version
        if version == self._written_version:
            if state:
                self._write_state()
            return
        table = self.engine.table()
        my_id = self._report_collisions(table)
        try:
            self.sink.write(my_id, table)
        except OSError as e:
            self.stats["map_write_errors"] += 1
            klog.error("cannot write the map to %s: %s (will retry)", self.sink.description, e.strerror or e)
            return
        self._written_version = version
        self.stats["map_writes"] += 1
        self._report_left_out(table)
        events.log_event(klog, events.MAP_WRITTEN, "map written: %d nodes, %d entries", len(self.engine.nodes()),
                         len(table.entries), OMDISC_MAP_ENTRIES=len(table.entries))
        self._write_state()
        notify(f"STATUS={self.status()}")

    def _report_left_out(self, table: Table) -> None:
        """What the kernel table cannot hold, said once per change, not at every write."""
        if table.dropped != self._dropped_reported:
            self._dropped_reported = table.dropped
            if table.dropped:
                shown = ", ".join(e.text() for e in table.dropped[:8])
                more = f" and {len(table.dropped) - 8} more" if len(table.dropped) > 8 else ""
                klog.warning("the map has %d entries; openMosix takes %d: left out %s%s",
                             len(table.entries) + len(table.dropped), len(table.entries), shown, more)
        for addr in set(table.ipv6_only) - self._ipv6_only_reported:
            if addr in self.engine.local.addresses:
                klog.info("this node (%s) is IPv6-only: the openMosix table is IPv4, it has no place there", addr)
            else:
                klog.info("node %s has no IPv4 address: listed by showmap --json, not in the kernel table", addr)
        self._ipv6_only_reported = set(table.ipv6_only)

    def _report_collisions(self, table: Table) -> int:
        """Warn once per collision; our own id, or 0 when another node keeps it."""
        me = self.engine.local
        my_id = me.node_id
        for c in table.collisions:
            key = (c.node_id, c.owner, c.losers)
            if me.primary in c.losers:
                my_id = 0
            if key in self._collisions_reported:
                continue
            self._collisions_reported.add(key)
            events.log_event(
                log, events.COLLISION,
                "node id %d is claimed by %s and %s: %s keeps it (lowest address wins); "
                "set node_id on the other%s", c.node_id, c.owner, ", ".join(map(str, c.losers)), c.owner,
                " -- this node is left out of the map" if me.primary in c.losers else "",
                level=logging.WARNING, OMDISC_PEER=c.losers[0] if c.owner == me.primary else c.owner,
                OMDISC_COLLISION_ID=c.node_id)
        return my_id

    def _write_state(self) -> None:
        state = self.engine.state(self.clock())
        state["ready_at"] = self._ready_at  # wall clock: benchmarks time convergence from it
        state["interfaces"] = list(self.plan.announce_on)
        state["gateway"] = self.plan.gateway
        try:
            write_state(self.cfg.alpha_dir, state)
        except OSError as e:
            klog.debug("cannot write state: %s", e)

    # --- changes while running ----------------------------------------------------------------

    def _check_addresses(self, now: float) -> None:
        """DHCP renewals and the like: poll our addresses twice per announce interval."""
        self._next_address_check = now + self.cfg.announce_interval / 2
        try:
            local = local_node(self.cfg, self.plan)
        except (StartupError, NodeIdError, interfaces.InterfaceError) as e:
            self.stats["address_problems"] += 1
            if self.stats["address_problems"] == 1:
                log.warning("%s; keeping the addresses announced so far", e)
            return
        self.stats.pop("address_problems", None)
        if local != self.engine.local:
            self._send(self.engine.set_local(local))
            self._send(self.engine.rejoin(now))
            self.logctl.set_field("OMDISC_NODE_ID", local.node_id)
            self._wake.set()

    def toggle_debug(self) -> None:
        full = self.logctl.toggle_full()
        log.warning("SIGUSR1: debug messages %s", "all on" if full else "back to the configured categories")

    def reload(self) -> None:
        notify(f"RELOADING=1\nMONOTONIC_USEC={time.monotonic_ns() // 1000}")
        try:
            self._reload()
        except (ConfigError, StartupError, NodeIdError, interfaces.InterfaceError) as e:
            log.error("reload failed, the running configuration stays: %s", e)
        notify(f"READY=1\nSTATUS={self.status()}")

    def _reload(self) -> None:
        cfg, _ = load(self.cfg_path)
        cfg = cfg.overridden(**self.overrides)
        plan = make_plan(cfg)
        local = local_node(cfg, plan)
        for key in ("kernel", "alpha_dir", "pid_file"):
            if getattr(cfg, key) != getattr(self.cfg, key):
                log.warning("reload: a new %s takes effect only at restart", key)
        now = self.clock()
        endpoints = (cfg.group, cfg.group6, cfg.port)
        reopen = (plan, endpoints) != (self.plan, (self.cfg.group, self.cfg.group6, self.cfg.port))
        # New sockets first: if one cannot be opened, everything stays as it was.
        handlers = self._make_handlers(cfg, plan) if reopen else {}
        self.cfg, self.plan = cfg, plan
        self.logctl.set_categories(cfg.debug)
        self.engine.reconfigure(settings_for(cfg), now)
        self.engine.route_between = plan.route_between
        changed = local != self.engine.local
        self._send(self.engine.set_local(local))  # on the old sockets: where the old identity was known
        if reopen:
            self._close_handlers()
            self._install(handlers)
            self.engine.forget_interfaces(frozenset(plan.announce_on))
        if changed or reopen:
            self._send(self.engine.rejoin(now))  # introduce ourselves where we now are
        if changed:
            self.logctl.set_field("OMDISC_NODE_ID", local.node_id)
        log.info("configuration reloaded from %s; %d nodes kept", self.cfg_path or "built-in defaults",
                 len(self.engine.membership))
        self._wake.set()


# --- start-up ------------------------------------------------------------------------------------


class _Detacher:
    """Detach (the seed's classic mode). The parent waits until the child is up or has failed, so a
    start-up error still reaches the user's terminal and exit status."""

    def __init__(self) -> None:
        self.fd: int | None = None

    def detach(self) -> None:
        r, w = os.pipe()
        if os.fork():
            os.close(w)
            with os.fdopen(r, "rb") as f:
                msg = f.read().decode(errors="replace")
            sys.stderr.write(msg)
            os._exit(EXIT_FAILURE if msg else EXIT_OK)
        os.close(r)
        os.setsid()
        if os.fork():
            os._exit(EXIT_OK)
        os.chdir("/")
        os.umask(0o022)
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        os.close(devnull)
        self.fd = w

    def up(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # EOF with no message: the parent exits 0
            self.fd = None

    def fail(self, message: str) -> None:
        if self.fd is not None:
            os.write(self.fd, f"omdiscd: {message}\n".encode())
            self.up()
        else:
            sys.stderr.write(f"omdiscd: {message}\n")


STARTUP_ERRORS = (interfaces.InterfaceError, StartupError, NodeIdError, SinkError, PidFileError)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    overrides = {"interfaces": args.interfaces, "multicast_ttl": args.multicast_ttl, "debug": args.debug,
                 "family": args.family, "route": args.route}
    try:
        cfg, cfg_path = load(Path(args.config) if args.config else None)
        cfg = cfg.overridden(**overrides)
    except ConfigError as e:
        sys.stderr.write(f"omdiscd: {e}\n")
        return EXIT_CONFIG
    if args.check_config:
        main_file = cfg_path or "none: built-in defaults"
        sys.stdout.write(f"# main file: {main_file}; drop-ins: "
                         f"{', '.join(map(str, drop_ins(cfg_path or DEFAULT_PATH))) or 'none'}\n{dump(cfg)}")
        return EXIT_OK
    try:
        plan = make_plan(cfg)
        local_node(cfg, plan)
        sink = choose_sink(cfg.kernel, cfg.alpha_dir)
        sink.prepare()
        PidFile(cfg.pid_file).check()
    except STARTUP_ERRORS as e:
        sys.stderr.write(f"omdiscd: {e}\n")
        return EXIT_FAILURE
    detacher = _Detacher()
    detached = not args.nodaemon and not under_systemd()
    if detached:
        detacher.detach()
    logctl = LogControl(choose_target(detached), cfg.debug)
    try:
        daemon = Daemon(cfg, cfg_path, overrides, logctl, plan, sink)
        return asyncio.run(daemon.run(on_ready=detacher.up))
    except STARTUP_ERRORS as e:
        if detacher.fd is not None:
            detacher.fail(str(e))
        log.error("%s", e)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
