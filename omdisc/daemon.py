"""omdiscd: the daemon shell around the engine. It conducts: the loop and the signals, and the rooms
it wires together (engine, sockets, address watch, cluster keys, map writer, handlers); it keeps
nothing a peer can grow.

The loop is our own (shell/loop.py: a selector, timers, signals through a wakeup descriptor), not
asyncio, which was the slowest of the daemon's imports. Each pass sleeps until the next deadline
(shell/pace.py) unless a link event or a signal wakes it sooner, or a datagram that made the next
deadline earlier; then it ticks the engine, looks at the interfaces when due, and flushes the map.
A socket's batch is handled as it arrives; the flush it makes due runs once at the end of that pass
of the loop, however many sockets were ready.

Data flows one way: socket -> engine (decode, checks, membership) -> throttled map -> sinks.
Timers and link events feed the same engine. Handling one datagram or one timer is a boundary
(shell/boundary.py): nothing a peer sends may end the loop.
"""

from __future__ import annotations

import gc
import os
import sys

# The omdiscd program (python -m omdisc.daemon, or the omdiscd script); whoever imports this module
# for its functions keeps what follows as it is (tests/unit/test_lean.py).
if __name__ == "__main__" or os.path.basename(sys.argv[0]) == "omdiscd":
    # No garbage collection while the program starts (until Daemon.run has sent the JOIN): it makes
    # only objects that live as long as it does (modules, classes, functions), which collections
    # would scan again and again for nothing; they are frozen then (gc.freeze), never scanned again.
    gc.disable()
    # Modules the daemon never uses but would load, kept out before anything imports them: a good
    # part of its RSS. ssl, should a library import it when it can (the daemon speaks no TLS);
    # hashlib and ssl load OpenSSL (the cluster key's HMAC-SHA256 is Python's own SHA-256 then, a
    # little slower); shutil, should anything import it (the daemon's own temporary files do
    # without: files.make_temp), imports bz2 and lzma to see which archives it could make. Deferred
    # to their first use (shell/lazy.py): inspect, should a library import it (our records are not
    # dataclasses: core/records.py); hashlib, hmac and base64, used only with a cluster key;
    # secrets, by --gen-key only; subprocess (and locale), at a handler's first run; traceback (and
    # linecache, tokenize, textwrap), which logging imports, at the first traceback logged; ntpath,
    # which pathlib imports for Windows paths.
    for _name in ("ssl", "_hashlib", "bz2", "lzma"):
        sys.modules.setdefault(_name, None)  # type: ignore[arg-type]
    from omdisc.shell.lazy import defer

    defer("inspect", "hashlib", "hmac", "secrets", "base64", "subprocess", "traceback", "ntpath")
    # The command line and the configuration files are read in a child (omdisc/front.py), begun now:
    # it works while this process imports the rest.
    from omdisc.front import start_early

    start_early(sys.argv[1:])

import logging
import random
import signal
import time
from collections.abc import Callable
from pathlib import Path

from omdisc import __version__
from omdisc.core import events
from omdisc.core.auth import KeyFileError
from omdisc.core.config import DEFAULT_PATH, Config, ConfigError
from omdisc.core.engine import Engine, Outgoing
from omdisc.core.interface_plan import Plan, StartupError
from omdisc.core.nodeid import NodeIdError
from omdisc.core.protocol import IPAddress
from omdisc.core.settings import restart_only, settings_for
from omdisc.front import take
from omdisc.shell import interfaces, keyfile
from omdisc.shell.addresses import ADDRESS_ERRORS, AddressWatch, links, local_node, make_plan
from omdisc.shell.boundary import Boundary
from omdisc.shell.configfiles import ConfigSource, drop_ins
from omdisc.shell.detach import Detacher
from omdisc.shell.exits import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK, fail
from omdisc.shell.feed import HandlerFeed
from omdisc.shell.journal import LogControl, choose_target, notify, under_systemd
from omdisc.shell.keyfile import gen_key
from omdisc.shell.keys import ClusterKeys
from omdisc.shell.life import Life
from omdisc.shell.loop import Loop
from omdisc.shell.mapwriter import MapWriter, first_map_wait
from omdisc.shell.pace import Sleep, Watchdog
from omdisc.shell.pidfile import PidFile, PidFileError
from omdisc.shell.sinks import AlphaSink, LiveSink, SinkError, choose_sink, proc_hpc
from omdisc.shell.sockets import Sockets, Wanted
from omdisc.shell.transport import MulticastSocket

TYPE_CHECKING = False  # typing is mypy's only: never loaded at run time (docs/architecture.md)
if TYPE_CHECKING:
    from typing import Any

log = logging.getLogger("omdisc")

# "Stop for a restart": exit as on SIGTERM but without LEAVE, so the peers keep this node until its
# next life announces itself. The unit's RestartKillSignal= and the init script's restart send it.
RESTART_SIGNAL = signal.SIGUSR2
# Each signal and the Daemon method it calls (omdiscd(8), SIGNALS, documents every one).
SIGNALS = {signal.SIGTERM: "stop", signal.SIGINT: "stop", signal.SIGHUP: "reload",
           signal.SIGUSR1: "toggle_debug", RESTART_SIGNAL: "stop_for_restart"}


class Daemon:
    """One life of this node. Made once the pid file is held: making it takes the next incarnation."""

    def __init__(self, cfg: Config, source: ConfigSource, logctl: LogControl, plan: Plan,
                 sink: AlphaSink | LiveSink) -> None:
        self.cfg = cfg
        self.source = source
        self.logctl = logctl
        self.plan = plan
        self.sink = sink
        # what `kernel: auto` could see (showmap --json): "hidden" under a /proc that shows processes only
        self.kernel = {"mode": cfg.kernel, "map": sink.description, "proc_hpc": proc_hpc()}
        self.clock = time.monotonic
        addrs = local_node(cfg, plan)
        self.life = Life(cfg.state_dir, time.time_ns() // 1000)
        self.keys = ClusterKeys(cfg)
        self.engine = Engine(addrs.node, self.life.incarnation, settings_for(cfg), random.Random(), wall=time.time,
                             auth=self.keys.auth)
        self.engine.route_between = plan.route_between
        self.engine.links = links(plan)
        self.stats = self.engine.stats
        self.loop = Loop(self.clock)
        self.sleep = Sleep(self.loop)
        self.watchdog = Watchdog()
        self.addresses = AddressWatch(self.stats, self.loop, self.sleep.wake)
        self.addresses.report_left_out(addrs)
        self.sockets = Sockets(self.stats, self.loop, self._on_readable)
        self.writer = MapWriter(sink, cfg.alpha_dir, self.stats, self._extra_state, self._on_map_written,
                                on_event=self.engine.events.add, metrics_file=cfg.metrics_file,
                                gauges=self._gauges)
        self.handlers = HandlerFeed(self.engine, self.writer, self._extra_state, self.loop)
        self.boundary = Boundary(self.stats, self.clock)  # around each datagram and each timer
        self._flush_pending = False
        self._stopping = False
        self._leave = True  # on the way out: LEAVE, unless stopping for a restart
        self._ready_at = 0.0

    # --- lifecycle ---------------------------------------------------------------------------

    def run(self, on_ready: Callable[[], None] = lambda: None) -> int:
        """The caller closes the loop (the signals' dispositions as they were) once the pid file is
        gone: a signal after that is the default's again."""
        # taken first: a SIGHUP (logrotate) or SIGTERM while the sockets open waits for the loop
        self.loop.handle_signals({sig: getattr(self, method) for sig, method in SIGNALS.items()})
        try:
            self._start()
            if not gc.isenabled():  # the program's start-up is over (the top of this module)
                gc.freeze()
                gc.enable()
            on_ready()
            self._loop()
        finally:
            self._shutdown()  # the signals still taken: a second SIGTERM does not cut it short
        return EXIT_OK

    def _start(self) -> None:
        self.sink.prepare()
        self.sockets.replace_all(Wanted.of(self.cfg, self.plan))
        self.addresses.open(self._poll_every())
        self.handlers.configure(self.cfg)
        self.logctl.set_field("OMDISC_NODE_ID", self.engine.local.node_id)
        now = self.clock()
        self._ready_at = time.time()
        self._send(self.engine.start(now))
        self._keep_last_map(now)
        self.writer.flush(self.engine, now)
        local = self.engine.local
        events.log_event(log, events.STARTED, "omdiscd %s started: node #%d at %s on %s (%s), map to %s",
                         __version__, local.node_id, ", ".join(map(str, local.addresses)),
                         ",".join(self.plan.announce_on), self.plan.mode, self.sink.description)
        self.keys.say()
        notify(f"READY=1\nMAINPID={os.getpid()}\nSTATUS={self.status()}")
        self.addresses.poll_from(now, self._poll_every())
        self.watchdog.start(now)

    def _keep_last_map(self, now: float) -> None:
        """A last life's map to keep until this life knows its nodes again; none (alpha files wiped
        with /run, an empty kernel table after a boot): the first map is written at once."""
        last = self.sink.last_map() if self.life.lived_before else None
        if last is not None:
            self.writer.hold_first_map(last, now + first_map_wait(self.engine.settings, len(last) + 1))

    def _shutdown(self) -> None:
        notify("STOPPING=1")
        self.life.keep(self.cfg.state_dir, self.engine.incarnation)  # the next life starts above this one's
        if self.sockets:  # we had joined
            self._send(self.farewell())
            events.log_event(log, events.STOPPED, "omdiscd stopped (left the cluster)" if self._leave
                             else "omdiscd stopped for a restart (no LEAVE sent)")
        self.sockets.close_all()
        self.handlers.close()
        self.addresses.close()

    def _deadline(self, engine_due: float | None = None) -> float:
        """When the loop next has something to do: a timer (`engine_due`, if the caller has it), a
        check, a throttled write."""
        return min(self.engine.next_deadline() if engine_due is None else engine_due,
                   self.addresses.next_due(), self.watchdog.due,
                   self.writer.next_due(self.engine))

    def _loop(self) -> None:
        while not self._stopping:
            self.sleep.sleep(self._deadline())
            now = self.clock()
            self.boundary.run("timer", self._tick, now)
            if now >= self.addresses.next_due():
                self.boundary.run("interfaces", self._check_interfaces, now)
            self.watchdog.tend(now)
            self._flush()

    def _tick(self, now: float) -> None:
        self._send(self.engine.tick(now))

    def _receive(self, data: bytes, now: float, sock: MulticastSocket, source: IPAddress) -> None:
        self._send(self.engine.receive(data, now, interface=sock.ifname, source=source))

    def _poll_every(self) -> float:
        return self.cfg.announce_interval / 2

    def stop(self) -> None:
        """SIGTERM, SIGINT: leave the cluster (the peers drop us at once) and exit."""
        log.info("stopping: announcing LEAVE")
        self._leave = True
        self._stopping = True
        self.sleep.wake()

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
        self.sleep.wake()

    def status(self) -> str:
        n = len(self.engine.membership) + 1
        return (f"node #{self.engine.local.node_id} on {','.join(self.plan.announce_on)}: "
                f"{n} node{'s' * (n != 1)} in the map")

    # --- sockets -----------------------------------------------------------------------------

    def _on_readable(self, sock: MulticastSocket) -> None:
        batch = sock.receive_batch()
        if not batch:
            return
        self.stats["batches"] += 1
        now = self.clock()
        for data, source in batch:
            self.boundary.run("datagram", self._receive, data, now, sock, source)
        self._gauge_max("slowest_batch_us", now)
        self.writer.touch()
        # once per loop pass, whatever the number of interfaces; but when something is due at once
        # (the answer to a JOIN that is ours to give first), the loop sends it, then writes the map
        engine_due = self.engine.next_deadline()  # once a batch: its cost grows with probes and suspects
        if not self._flush_pending and engine_due > now:
            self._flush_pending = True
            self.loop.call_soon(self._flush)
        self.sleep.wake_before(self._deadline(engine_due))  # a JOIN may have scheduled an answer, a write be due

    def _send(self, out: list[Outgoing]) -> None:
        if out:  # most datagrams received send nothing: no work for them here
            self.sockets.send(out, frozenset(a.version for a in self.engine.local.addresses))
            self.writer.touch()

    # --- the map -----------------------------------------------------------------------------

    def _flush(self) -> None:
        self._flush_pending = False
        self.life.keep(self.cfg.state_dir, self.engine.incarnation)
        started = self.clock()
        self.writer.flush(self.engine, started)
        self._gauge_max("slowest_flush_us", started)
        self.handlers.hand_over()

    def _gauge_max(self, name: str, started: float) -> None:
        """The slowest of something so far, in microseconds (make bench reads it)."""
        self.stats[name] = max(self.stats[name], int((self.clock() - started) * 1e6))

    def _on_map_written(self) -> None:
        notify(f"STATUS={self.status()}")
        self.handlers.map_written()

    def _gauges(self) -> dict[str, float]:
        written = self.writer.written
        return {"members": len(self.engine.membership) + 1,
                "map_entries": len(written.entries) if written else 0,
                "collisions": len(written.collisions) if written else 0}

    def _extra_state(self) -> dict[str, Any]:
        return {"ready_at": self._ready_at,  # wall clock: benchmarks time convergence from it
                "interfaces": list(self.plan.announce_on), "gateway": self.plan.gateway,
                "pid": os.getpid(), "keys": self.keys.ids(), "kernel": self.kernel}

    # --- changes while running ----------------------------------------------------------------

    def _check_interfaces(self, now: float) -> None:
        """Link events (netlink) and the poll twice per announce interval: sockets for interfaces
        that were re-created or came back, and our addresses (a DHCP renewal)."""
        self.addresses.looked(now, self._poll_every())
        self.engine.links = links(self.plan)  # a prefix may change without our addresses changing
        reopened = self.sockets.sync()
        if self.sockets.missing:  # we cannot probe them, nor hear them leave: not ours to judge, nor
            # to keep (its rejoin learns them again at once, none of them taken out by us meanwhile)
            self.engine.forget_interfaces(frozenset(self.plan.announce_on) - self.sockets.missing)
        moved = self.addresses.moved(self.cfg, self.plan, self.engine.local)
        if moved is not None:
            self._send(self.engine.set_local(moved))
            self.logctl.set_field("OMDISC_NODE_ID", moved.node_id)
        if moved is not None or reopened:
            self.engine.renew()
            self._send(self.engine.rejoin(now))
            self.sleep.wake()

    def toggle_debug(self) -> None:
        full = self.logctl.toggle_full()
        log.warning("SIGUSR1: debug messages %s", "all on" if full else "back to the configured categories")

    def reload(self) -> None:
        """SIGHUP. The key file first and on its own: a rotation step must not wait on anything else
        in the configuration (a bad drop-in, an interface away for the moment)."""
        notify(f"RELOADING=1\nMONOTONIC_USEC={time.monotonic_ns() // 1000}")
        try:
            cfg: Config | None = self.source.reread()
        except ConfigError as e:
            log.error("reload failed, the running configuration stays: %s", e)
            cfg = None
        self.keys.reload(cfg or self.cfg)
        self.engine.auth = self.keys.auth
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
        for key in restart_only(self.cfg, cfg):
            log.warning("reload: a new %s takes effect only at restart", key)
        now = self.clock()
        old_sockets = (self.plan.announce_on, self.plan.families)
        wanted = Wanted.of(cfg, plan)
        made = self.sockets.make(wanted)
        self._send(self.engine.set_local(addrs.node))  # on the old sockets: where the old identity was known
        self.sockets.install(wanted, made, drain=True)
        self.cfg, self.plan = cfg, plan
        self.logctl.set_categories(cfg.debug)
        self.handlers.configure(cfg)
        self.writer.metrics_file = cfg.metrics_file
        self.engine.reconfigure(settings_for(cfg), now)
        self.engine.route_between = plan.route_between
        self.engine.links = links(plan)
        self.addresses.report_left_out(addrs)
        if (plan.announce_on, plan.families) != old_sockets:
            self.engine.forget_interfaces(frozenset(plan.announce_on))
        self.engine.renew()
        self._send(self.engine.rejoin(now))  # introduce ourselves where we now are
        self.logctl.set_field("OMDISC_NODE_ID", addrs.node.node_id)
        log.info("configuration reloaded from %s; %d nodes kept", self.source.describe(),
                 len(self.engine.membership))
        self.sleep.wake()


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


def _key_command(command: str, cfg: Config) -> int:
    """--gen-key and --stage-key: print or hand over a key, and exit."""
    if command == "gen_key":
        sys.stdout.write(gen_key() + "\n")
        return EXIT_OK
    try:
        sys.stdout.write(f"omdiscd: {keyfile.stage(cfg)}\n")
    except KeyFileError as e:
        return fail("omdiscd", e, EXIT_CONFIG)
    except OSError as e:
        return fail("omdiscd", f"cannot hand the key to the service: {e.strerror or e}", EXIT_FAILURE)
    return EXIT_OK


def _check_config(cfg: Config, cfg_path: Path | None, as_yaml: str) -> int:
    """--check-config: the configuration (as_yaml: the front wrote it) and the cluster key as this
    host takes them, and exit."""
    try:
        keyring, key_path = keyfile.load(cfg)
    except KeyFileError as e:
        return fail("omdiscd", e, EXIT_CONFIG)
    main_file = cfg_path or "none: built-in defaults"
    keys = (f"{len(keyring.keys)} key(s) in {key_path}, ids {keyring.describe()}" if keyring
            else "none: announcements are not authenticated")
    sys.stdout.write(f"# main file: {main_file}; drop-ins: "
                     f"{', '.join(map(str, drop_ins(cfg_path or DEFAULT_PATH))) or 'none'}\n"
                     f"# cluster key: {keys}\n# in force here: {in_force(cfg)}\n{as_yaml}")
    return EXIT_OK


def _preflight(cfg: Config) -> tuple[Plan, AlphaSink | LiveSink]:
    """What can fail before detaching, so the user sees it: the interfaces, the map's sink, a daemon
    that runs already (checked only: the pid file is taken after detaching, with our own pid)."""
    plan = make_plan(cfg)
    local_node(cfg, plan)
    sink = choose_sink(cfg.kernel, cfg.alpha_dir)
    sink.prepare()
    PidFile(cfg.pid_file).check()
    return plan, sink


def serve(cfg: Config, source: ConfigSource, logctl: LogControl, plan: Plan, sink: AlphaSink | LiveSink,
          on_ready: Callable[[], None] = lambda: None) -> int:
    """Hold the pid file, then make this life and run it. The pid file comes first: a second omdiscd
    must fail before it writes anything of the one that runs (its incarnation file)."""
    pidfile = PidFile(cfg.pid_file)
    pidfile.acquire()
    daemon: Daemon | None = None
    try:
        daemon = Daemon(cfg, source, logctl, plan, sink)
        return daemon.run(on_ready=on_ready)
    finally:
        pidfile.release()
        if daemon is not None:
            daemon.loop.close()


def main(argv: list[str] | None = None) -> int:
    try:
        asked = take(argv)  # the command line and the configuration files, read by the front
    except ConfigError as e:
        return fail("omdiscd", e, EXIT_CONFIG)
    if isinstance(asked, int):
        return asked  # --help, --version, a bad command line: the front has said it
    cfg, source = asked.cfg, asked.source
    if asked.command in ("gen_key", "stage_key"):
        return _key_command(asked.command, cfg)
    if asked.command == "check_config":
        return _check_config(cfg, source.path, asked.check_yaml)
    try:
        keyfile.load(cfg)
    except KeyFileError as e:
        return fail("omdiscd", e, EXIT_CONFIG)
    try:
        plan, sink = _preflight(cfg)
    except STARTUP_ERRORS as e:
        return fail("omdiscd", e, EXIT_FAILURE)
    detacher = Detacher()
    detached = not asked.nodaemon and not under_systemd()
    if detached:
        detacher.detach()
    logctl = LogControl(choose_target(detached), cfg.debug)
    try:
        return serve(cfg, source, logctl, plan, sink, on_ready=detacher.up)
    except STARTUP_ERRORS as e:
        if detacher.fd is not None:
            detacher.fail(str(e))
        log.error("%s", e)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
