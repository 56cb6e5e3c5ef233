"""omdiscd: the daemon shell around the engine. asyncio loop, sockets, signals, pid file; it wires
the rooms together (engine, map writer, link monitor) and keeps nothing a peer can grow.

Data flows one way: socket -> engine (decode, checks, membership) -> throttled map -> sinks.
Timers and link events feed the same engine. Handling one datagram or one timer is a boundary:
an unexpected exception there is counted (internal_errors), said once, and the loop goes on.
"""

from __future__ import annotations

import os
import sys

# Modules the daemon never uses but would load, kept out of the omdiscd program (python -m
# omdisc.daemon, or the omdiscd script) before anything imports them: 5.5 MB of its RSS. asyncio
# imports ssl when it can (the daemon speaks no TLS); hashlib and ssl load OpenSSL (the cluster key's
# HMAC-SHA256 is Python's own SHA-256 then: 6 us more a datagram); shutil, should anything import it
# (the daemon's own temporary files do without: sinks.make_temp), imports bz2 and lzma to see which
# archives it could make. Whoever imports this module for its functions keeps them all
# (tests/unit/test_lean.py).
if __name__ == "__main__" or os.path.basename(sys.argv[0]) == "omdiscd":
    for _name in ("ssl", "_hashlib", "bz2", "lzma"):
        sys.modules.setdefault(_name, None)  # type: ignore[arg-type]

import asyncio
import contextlib
import logging
import random
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omdisc import __version__
from omdisc.cli import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK, build_parser
from omdisc.core import events
from omdisc.core.auth import Authenticator, KeyFileError, key_id
from omdisc.core.config import DEFAULT_PATH, Config, ConfigError, dump
from omdisc.core.detection.timers import ProbeSettings
from omdisc.core.engine import Engine, Outgoing, Settings
from omdisc.core.interface_plan import Addresses, Plan, StartupError, local_node, make_plan
from omdisc.core.nodeid import NodeIdError
from omdisc.core.protocol import IPAddress
from omdisc.core.ratelimit import LogLimiter
from omdisc.shell import incarnation, interfaces, keyfile
from omdisc.shell.configfiles import drop_ins, load
from omdisc.shell.detach import Detacher
from omdisc.shell.handlers import Runner
from omdisc.shell.journal import LogControl, choose_target, notify, under_systemd, watchdog_seconds
from omdisc.shell.keyfile import gen_key
from omdisc.shell.mapwriter import FIRST_MAP_WAIT, MapWriter
from omdisc.shell.netlink import LinkMonitor
from omdisc.shell.pidfile import PidFile, PidFileError
from omdisc.shell.sinks import AlphaSink, LiveSink, SinkError, choose_sink, proc_hpc
from omdisc.shell.sockets import Links, Wanted
from omdisc.shell.transport import MulticastHandler

log = logging.getLogger("omdisc")

RESCAN_DELAY = 0.1  # after a link event: let a burst of netlink messages settle, then look once
# "Stop for a restart": exit as on SIGTERM but without LEAVE, so the peers keep this node until its
# next life announces itself. The unit's RestartKillSignal= and the init script's restart send it.
RESTART_SIGNAL = signal.SIGUSR2
# Each signal and the Daemon method it calls (omdiscd(8), SIGNALS, documents every one).
SIGNALS = {signal.SIGTERM: "stop", signal.SIGINT: "stop", signal.SIGHUP: "reload",
           signal.SIGUSR1: "toggle_debug", RESTART_SIGNAL: "stop_for_restart"}
ADDRESS_ERRORS = (StartupError, NodeIdError, interfaces.InterfaceError)


def settings_for(cfg: Config) -> Settings:
    probe = None
    if cfg.probe_interval:
        wait = min(0.5, cfg.probe_interval / 2)  # for an ACK, direct then through helpers
        probe = ProbeSettings(cfg.probe_interval, ack_timeout=wait, helper_timeout=wait,
                              suspicion=cfg.suspicion_timeout, resend=cfg.suspicion_timeout / 3)
    return Settings(cfg.announce_interval, cfg.dead_interval, cfg.remove_on_leave, max_nodes=cfg.max_nodes,
                    probe=probe)


class Daemon:
    def __init__(self, cfg: Config, cfg_path: Path | None, overrides: dict[str, Any], logctl: LogControl,
                 plan: Plan, sink: AlphaSink | LiveSink) -> None:
        self.cfg = cfg
        self.cfg_path = cfg_path
        self.overrides = overrides
        self.logctl = logctl
        self.plan = plan
        self.sink = sink
        # what `kernel: auto` could see (showmap --json): "hidden" under a /proc that shows processes only
        self.kernel = {"mode": cfg.kernel, "map": sink.description, "proc_hpc": proc_hpc()}
        self.clock = time.monotonic
        self.pidfile = PidFile(cfg.pid_file)
        addrs = local_node(cfg, plan)
        self._lived_before = incarnation.kept(cfg.state_dir)
        life = incarnation.next_incarnation(cfg.state_dir, time.time_ns() // 1000)
        keyring, self.key_path = keyfile.load(cfg)
        auth = Authenticator(keyring, time.time, cfg.max_clock_skew, time.monotonic) if keyring else None
        self.engine = Engine(addrs.node, life, settings_for(cfg), random.Random(), wall=time.time, auth=auth)
        self.engine.route_between = plan.route_between
        self.stats = self.engine.stats
        self._kept_incarnation = life
        self._left_out: tuple[IPAddress, ...] = ()
        self._report_left_out(addrs)
        self.links = Links(self.stats, self._watch, self._unwatch)
        self.writer = MapWriter(sink, cfg.alpha_dir, self.stats, self._extra_state, self._on_map_written,
                                on_event=self.engine.events.add, metrics_file=cfg.metrics_file,
                                gauges=self._gauges)
        self.handlers = Runner(self.stats, self._map_document)
        self._document: tuple[int, float, bytes] | None = None  # (map version, when, JSON): reused briefly
        self.monitor: LinkMonitor | None = None
        self._said = LogLimiter()
        self._flush_pending = False
        self._wake = asyncio.Event()
        self._asleep_until = float("-inf")  # the deadline the loop sleeps until; -inf: it is not asleep
        self._stopping = False
        self._leave = True  # on the way out: LEAVE, unless stopping for a restart
        self._next_address_check = 0.0
        self._rescan_at = float("inf")
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
        self.links.replace_all(Wanted.of(self.cfg, self.plan))
        self._open_monitor()
        self._configure_handlers(self.cfg)
        for sig, method in SIGNALS.items():
            loop.add_signal_handler(sig, getattr(self, method))
        self.logctl.set_field("OMDISC_NODE_ID", self.engine.local.node_id)
        now = self.clock()
        self._ready_at = time.time()
        self._send(self.engine.start(now))
        # a last life's map to keep meanwhile; none (alpha files wiped with /run): write at once
        if self._lived_before and self.sink.holds_map():
            self.writer.hold_until = now + FIRST_MAP_WAIT
        self.writer.flush(self.engine, now)
        local = self.engine.local
        events.log_event(log, events.STARTED, "omdiscd %s started: node #%d at %s on %s (%s), map to %s",
                         __version__, local.node_id, ", ".join(map(str, local.addresses)),
                         ",".join(self.plan.announce_on), self._mode(), self.sink.description)
        self._say_key()
        notify(f"READY=1\nMAINPID={os.getpid()}\nSTATUS={self.status()}")
        self._next_address_check = now + self.cfg.announce_interval / 2
        if self._watchdog:
            self._next_watchdog = now

    def _say_key(self) -> None:
        auth = self.engine.auth
        if auth is None:
            log.warning("no cluster key: announcements are not authenticated, any host on the network can join "
                        "the map; make a key with 'omdiscd --gen-key' (see AUTHENTICATION in omdiscd(8))")
        else:
            log.info("cluster key from %s: %d key(s), ids %s; signing with %s", self.key_path, len(auth.keyring.keys),
                     auth.keyring.describe(), auth.keyring.describe().split(",")[0])

    def _reload_keys(self, cfg: Config) -> None:
        """SIGHUP re-reads the key file: the three steps of a rotation (docs/protocol.md) are reloads."""
        keyring, path = keyfile.load(cfg)
        engine = self.engine
        if keyring is None:
            engine.auth = None
        elif engine.auth is None:
            engine.auth = Authenticator(keyring, time.time, cfg.max_clock_skew, time.monotonic)
        else:  # same replay state: a reload is no restart
            engine.auth.keyring = keyring
            engine.auth.max_skew = cfg.max_clock_skew
        self.key_path = path
        self._say_key()

    def _open_monitor(self) -> None:
        try:
            self.monitor = LinkMonitor()
        except OSError as e:  # still correct without it: the address poll finds the same, later
            log.warning("cannot watch interface changes through netlink (%s); polling every %gs", e.strerror or e,
                        self.cfg.announce_interval / 2)
            return
        asyncio.get_running_loop().add_reader(self.monitor.fileno(), self._on_link_event)

    def _shutdown(self) -> None:
        notify("STOPPING=1")
        self._keep_incarnation()  # the next life starts above this one's, whatever the clock says
        if self.links:  # we had joined
            self._send(self.farewell())
            events.log_event(log, events.STOPPED, "omdiscd stopped (left the cluster)" if self._leave
                             else "omdiscd stopped for a restart (no LEAVE sent)")
        self.links.close_all()
        self.handlers.close()
        if self.monitor is not None:
            asyncio.get_running_loop().remove_reader(self.monitor.fileno())
            self.monitor.close()
        self.pidfile.release()

    def _deadline(self) -> float:
        """When the loop next has something to do: a timer, a check, a throttled write."""
        return min(self.engine.next_deadline(), self._next_address_check, self._next_watchdog, self._rescan_at,
                   self.writer.next_due(self.engine))

    async def _loop(self) -> None:
        while not self._stopping:
            self._asleep_until = self._deadline()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.0, self._asleep_until - self.clock()))
            self._asleep_until = float("-inf")  # awake: nothing to wake it for
            now = self.clock()
            self._guarded("timer", self._tick, now)
            if now >= self._next_address_check or now >= self._rescan_at:
                self._guarded("interfaces", self._check_interfaces, now)
            if now >= self._next_watchdog:
                notify("WATCHDOG=1")
                self._next_watchdog = now + (self._watchdog or 0)
            self._flush()

    def _tick(self, now: float) -> None:
        self._send(self.engine.tick(now))

    def _receive(self, data: bytes, now: float, handler: MulticastHandler, source: IPAddress) -> None:
        self._send(self.engine.receive(data, now, interface=handler.ifname, source=source))

    def _guarded(self, what: str, step: Callable[..., None], *args: Any) -> None:
        """One datagram or one timer: nothing a peer sends may end the loop. Counted (tests fail on
        any), said once per kind and hour, with the traceback at debug level."""
        try:
            step(*args)
        except Exception as e:
            self.stats["internal_errors"] += 1
            kind = (what, type(e).__name__)
            if self._said.allow(kind, self.clock()) is not None:
                log.error("internal error while handling a %s (%s: %s); carrying on. Please report it with "
                          "the debug log (SIGUSR1)", what, type(e).__name__, e)
            log.debug("internal error while handling a %s", what, exc_info=True)

    def _mode(self) -> str:
        families = "+".join(f"IPv{f}" for f in self.plan.families)
        if self.plan.gateway:
            return f"{families}, gateway routing between {', '.join(self.plan.announce_on)}"
        return f"{families}, multicast TTL {self.plan.ttl}"

    def stop(self) -> None:
        """SIGTERM, SIGINT: leave the cluster (the peers drop us at once) and exit."""
        log.info("stopping: announcing LEAVE")
        self._leave = True
        self._stopping = True
        self._wake.set()

    def farewell(self) -> list[Outgoing]:
        """What goes out on the way out: LEAVE after a stop; after a stop for a restart, an ANNOUNCE
        flagged RESTART, so the peers' probes leave us alone until the next life is up."""
        return self.engine.shutdown() if self._leave else self.engine.restarting()

    def stop_for_restart(self) -> None:
        """SIGUSR2: exit without LEAVE. The next life (a newer incarnation, state_dir) is taken by
        the peers as the same node back, so a restart never drops us from any map; if no next life
        comes within RESTART_GRACE (15 s), the peers' probes then find us gone, as a crashed node."""
        log.info("stopping for a restart: no LEAVE, the peers keep this node until it is back")
        self._leave = False
        self._stopping = True
        self._wake.set()

    def status(self) -> str:
        n = len(self.engine.membership) + 1
        return (f"node #{self.engine.local.node_id} on {','.join(self.plan.announce_on)}: "
                f"{n} node{'s' * (n != 1)} in the map")

    # --- sockets -----------------------------------------------------------------------------

    def _watch(self, h: MulticastHandler) -> None:
        asyncio.get_running_loop().add_reader(h.fileno(), self._on_readable, h)

    def _unwatch(self, h: MulticastHandler) -> None:
        asyncio.get_running_loop().remove_reader(h.fileno())

    def _on_readable(self, handler: MulticastHandler) -> None:
        batch = handler.receive_batch()
        if not batch:
            return
        self.stats["batches"] += 1
        now = self.clock()
        for data, source in batch:
            self._guarded("datagram", self._receive, data, now, handler, source)
        self._gauge_max("slowest_batch_us", now)
        self.writer.touch()
        if not self._flush_pending:  # once per loop pass, whatever the number of interfaces
            self._flush_pending = True
            asyncio.get_running_loop().call_soon(self._flush)
        if self._deadline() < self._asleep_until:  # a JOIN may have scheduled an answer, a write be due
            self._wake.set()  # (only then: a pass of the loop per datagram was most of an idle daemon's CPU)

    def _send(self, out: list[Outgoing]) -> None:
        if out:  # most datagrams received send nothing: no work for them here
            self.links.send(out, frozenset(a.version for a in self.engine.local.addresses))
            self.writer.touch()

    def _on_link_event(self) -> None:
        assert self.monitor is not None
        try:
            changed = self.monitor.changed()
        except OSError as e:
            self.stats["netlink_errors"] += 1
            log.debug("netlink: %s", e)
            return
        if changed and self._rescan_at == float("inf"):
            self._rescan_at = self.clock() + RESCAN_DELAY
            self._wake.set()

    # --- the map -----------------------------------------------------------------------------

    def _flush(self) -> None:
        self._flush_pending = False
        self._keep_incarnation()
        started = self.clock()
        self.writer.flush(self.engine, started)
        self._gauge_max("slowest_flush_us", started)
        if len(self.engine.events):
            self.handlers.submit(self.engine.events.drain())

    def _gauge_max(self, name: str, started: float) -> None:
        """The slowest of something so far, in microseconds (make bench reads it)."""
        self.stats[name] = max(self.stats[name], int((self.clock() - started) * 1e6))

    def _keep_incarnation(self) -> None:
        """A refutation or a rejoin took a new incarnation: the next life must start above it."""
        if self.engine.incarnation != self._kept_incarnation:
            self._kept_incarnation = self.engine.incarnation
            incarnation.save(self.cfg.state_dir, self._kept_incarnation)

    def _on_map_written(self) -> None:
        notify(f"STATUS={self.status()}")
        self._document = None  # its entries are the table written: a new one now
        local = self.engine.local
        self.engine.events.add("map", local.node_id, local.addresses)

    def _gauges(self) -> dict[str, float]:
        written = self.writer.written
        return {"members": len(self.engine.membership) + 1,
                "map_entries": len(written.entries) if written else 0,
                "collisions": len(written.collisions) if written else 0}

    def _map_document(self) -> bytes:
        """What a handler reads on stdin: showmap --json of the map now. Made at most once per map
        version and second, however many handlers start."""
        now = self.clock()
        version = self.engine.map_version
        if self._document is not None and self._document[0] == version and now - self._document[1] < 1.0:
            return self._document[2]
        state = self.engine.state(now)
        state.update(self._extra_state())
        written = self.writer.written
        table = written if written is not None else self.engine.table()
        node_id = self.writer.written_id if written is not None else self.engine.local.node_id
        from omdisc.showmap import as_json  # only when a handler runs: showmap's imports cost 0.4 MB

        data = (as_json(node_id, list(table.entries), state) + "\n").encode()
        self._document = (version, now, data)
        return data

    def _configure_handlers(self, cfg: Config) -> None:
        self.handlers.configure(cfg.handlers, cfg.handler_timeout)
        self.engine.events.wanted = frozenset(k for spec in cfg.handlers for k in events.KINDS if spec.wants(k))
        if not self.handlers.wanted:
            self.engine.events.drain()
        for spec in cfg.handlers:
            if not os.access(spec.run, os.X_OK):
                log.warning("handler %s is not an executable file: its events will fail", spec.run)

    def _extra_state(self) -> dict[str, Any]:
        auth = self.engine.auth
        keys = None if auth is None else {"signing": key_id(auth.keyring.keys[0]).hex(),
                                          "accepted": [key_id(k).hex() for k in auth.keyring.keys]}
        return {"ready_at": self._ready_at,  # wall clock: benchmarks time convergence from it
                "interfaces": list(self.plan.announce_on), "gateway": self.plan.gateway,
                "pid": os.getpid(), "keys": keys,  # key ids (what playbooks/rotate_key.yml checks), never keys
                "kernel": self.kernel}

    # --- changes while running ----------------------------------------------------------------

    def _check_interfaces(self, now: float) -> None:
        """Link events (netlink) and the poll twice per announce interval: sockets for interfaces
        that were re-created or came back, and our addresses (a DHCP renewal)."""
        self._next_address_check = now + self.cfg.announce_interval / 2
        self._rescan_at = float("inf")
        reopened = self.links.sync()
        changed = self._check_addresses()
        if changed or reopened:
            self.engine.renew()
            self._send(self.engine.rejoin(now))
            self._wake.set()

    def _check_addresses(self) -> bool:
        """Our addresses as they are now; True if they changed (then we are someone else)."""
        try:
            addrs = local_node(self.cfg, self.plan)
        except ADDRESS_ERRORS as e:
            self.stats["address_problems"] += 1
            if self.stats["address_problems"] == 1:
                log.warning("%s; keeping the addresses announced so far", e)
            return False
        self.stats.pop("address_problems", None)
        self._report_left_out(addrs)
        if addrs.node == self.engine.local:
            return False
        self._send(self.engine.set_local(addrs.node))
        self.logctl.set_field("OMDISC_NODE_ID", addrs.node.node_id)
        return True

    def _report_left_out(self, addrs: Addresses) -> None:
        if addrs.left_out and addrs.left_out != self._left_out:
            log.warning("this node has %d addresses; the protocol carries 16: announcing %s; left out %s",
                        len(addrs.node.addresses) + len(addrs.left_out), ", ".join(map(str, addrs.node.addresses)),
                        ", ".join(map(str, addrs.left_out)))
        self._left_out = addrs.left_out

    def toggle_debug(self) -> None:
        full = self.logctl.toggle_full()
        log.warning("SIGUSR1: debug messages %s", "all on" if full else "back to the configured categories")

    def reload(self) -> None:
        """SIGHUP. The key file first and on its own: a rotation step must not wait on anything else
        in the configuration (a bad drop-in, an interface away for the moment)."""
        notify(f"RELOADING=1\nMONOTONIC_USEC={time.monotonic_ns() // 1000}")
        try:
            cfg: Config | None = load(self.cfg_path)[0].overridden(**self.overrides)
        except ConfigError as e:
            log.error("reload failed, the running configuration stays: %s", e)
            cfg = None
        try:
            self._reload_keys(cfg or self.cfg)
        except KeyFileError as e:
            log.error("reload of the key file failed, the keys in force stay: %s", e)
        if cfg is not None:
            try:
                self._reload(cfg)
            except ADDRESS_ERRORS as e:
                log.error("reload failed, the running configuration stays: %s", e)
            except Exception as e:  # a bug must not end the daemon either
                self.stats["internal_errors"] += 1
                log.error("reload failed (internal error %s: %s), the running configuration stays",
                          type(e).__name__, e)
                log.debug("reload failed", exc_info=True)
        notify(f"READY=1\nSTATUS={self.status()}")

    def _reload(self, cfg: Config) -> None:
        """New settings; the sockets are always opened anew (new ones first: if one cannot be
        opened, everything stays as it was; the old ones drained before they close), and we rejoin
        with a new incarnation."""
        plan = make_plan(cfg)
        addrs = local_node(cfg, plan)
        for key in ("kernel", "alpha_dir", "pid_file", "state_dir"):
            if getattr(cfg, key) != getattr(self.cfg, key):
                log.warning("reload: a new %s takes effect only at restart", key)
        now = self.clock()
        old_links = (self.plan.announce_on, self.plan.families)
        wanted = Wanted.of(cfg, plan)
        made = self.links.make(wanted)
        self._send(self.engine.set_local(addrs.node))  # on the old sockets: where the old identity was known
        self.links.install(wanted, made, drain=self._on_readable)
        self.cfg, self.plan = cfg, plan
        self.logctl.set_categories(cfg.debug)
        self._configure_handlers(cfg)
        self.writer.metrics_file = cfg.metrics_file
        self.engine.reconfigure(settings_for(cfg), now)
        self.engine.route_between = plan.route_between
        self._report_left_out(addrs)
        if (plan.announce_on, plan.families) != old_links:
            self.engine.forget_interfaces(frozenset(plan.announce_on))
        self.engine.renew()
        self._send(self.engine.rejoin(now))  # introduce ourselves where we now are
        self.logctl.set_field("OMDISC_NODE_ID", addrs.node.node_id)
        log.info("configuration reloaded from %s; %d nodes kept", self.cfg_path or "built-in defaults",
                 len(self.engine.membership))
        self._wake.set()


# --- start-up ------------------------------------------------------------------------------------

STARTUP_ERRORS = (interfaces.InterfaceError, StartupError, NodeIdError, SinkError, PidFileError, KeyFileError)


def in_force(cfg: Config) -> str:
    """What the configuration means on this host now: what the defaults turn into."""
    try:
        plan = make_plan(cfg)
        node = local_node(cfg, plan).node
    except STARTUP_ERRORS as e:
        return f"cannot tell ({e})"
    where = "" if cfg.interfaces else " (the default route's)"
    source = "node_id" if cfg.node_id else f"from {node.primary}"
    return f"interfaces {', '.join(plan.announce_on)}{where}; node #{node.node_id} ({source}); " \
           f"addresses {', '.join(map(str, node.addresses))}"


def _key_command(args: Any, cfg: Config) -> int:
    """--gen-key and --stage-key: print or hand over a key, and exit."""
    if args.gen_key:
        sys.stdout.write(gen_key() + "\n")
        return EXIT_OK
    try:
        sys.stdout.write(f"omdiscd: {keyfile.stage(cfg)}\n")
    except KeyFileError as e:
        sys.stderr.write(f"omdiscd: {e}\n")
        return EXIT_CONFIG
    except OSError as e:
        sys.stderr.write(f"omdiscd: cannot hand the key to the service: {e.strerror or e}\n")
        return EXIT_FAILURE
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    overrides = {"interfaces": args.interfaces, "multicast_ttl": args.multicast_ttl, "debug": args.debug,
                 "family": args.family, "route": args.route}
    try:
        cfg, cfg_path = load(Path(args.config) if args.config is not None else None)
        cfg = cfg.overridden(**overrides)
    except ConfigError as e:
        sys.stderr.write(f"omdiscd: {e}\n")
        return EXIT_CONFIG
    if args.gen_key or args.stage_key:
        return _key_command(args, cfg)
    try:
        keyring, key_path = keyfile.load(cfg)
    except KeyFileError as e:
        sys.stderr.write(f"omdiscd: {e}\n")
        return EXIT_CONFIG
    if args.check_config:
        main_file = cfg_path or "none: built-in defaults"
        keys = (f"{len(keyring.keys)} key(s) in {key_path}, ids {keyring.describe()}" if keyring
                else "none: announcements are not authenticated")
        sys.stdout.write(f"# main file: {main_file}; drop-ins: "
                         f"{', '.join(map(str, drop_ins(cfg_path or DEFAULT_PATH))) or 'none'}\n"
                         f"# cluster key: {keys}\n# in force here: {in_force(cfg)}\n{dump(cfg)}")
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
    detacher = Detacher()
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
