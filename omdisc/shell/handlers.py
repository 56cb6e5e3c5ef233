"""Event handlers: a program of the operator's run for each join, leave, expire, update, collision
or map write, with the event in its environment and the whole map (showmap --json) on stdin.

They never slow discovery: the loop only hands events over (submit(), no waiting); each handler
has its own backlog, worked through in order by one task at a time, and at most PARALLEL programs
run at once over all handlers. A program that outlives handler_timeout is killed with its whole
process group. When a handler falls behind, its backlog (QUEUED events) coalesces:
- a `map` event waiting already stands for a new one (the map on stdin is read when it starts);
- when the backlog is full, a new event is merged into the latest waiting event about the same
  node if that is of the same kind (the newer addresses win); otherwise it is dropped, counted
  (handler_events_dropped) and said at most once a minute per handler.
Since every run gets the whole current map on stdin, a handler that rebuilds its output from
stdin is right again at its next run whatever was merged or dropped.

Pure: Backlog, environment(), excerpt(). The shell: Runner (asyncio subprocesses).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from omdisc.core.config import HandlerSpec
from omdisc.core.events import KINDS, Event
from omdisc.core.ratelimit import LogLimiter

log = logging.getLogger("omdisc.handlers")
mainlog = logging.getLogger("omdisc")  # what the configuration gets wrong: with the daemon's own (category main)

PARALLEL = 4  # programs running at once, over all handlers
QUEUED = 64  # events waiting per handler
OUTPUT_KEPT = 2048  # bytes of stdout and of stderr kept for the log; the rest is read and counted
DROPS_SAID = 60.0  # seconds between two log lines about one handler's dropped events
OUTPUT_GRACE = 0.5  # seconds to read what a program wrote, once it has exited
KILL_AFTER = 1.0  # seconds between SIGTERM and SIGKILL when a program runs past the timeout


# --- pure ---------------------------------------------------------------------------------------


class Backlog:
    """One handler's waiting events, in order, at most `limit` (see the module's docstring)."""

    def __init__(self, limit: int = QUEUED) -> None:
        self.limit = limit
        self._events: deque[Event] = deque()

    def __len__(self) -> int:
        return len(self._events)

    def put(self, event: Event) -> str:
        """'queued', 'merged' or 'dropped'."""
        q = self._events
        if event.kind == "map":
            for i, e in enumerate(q):
                if e.kind == "map":
                    q[i] = event
                    return "merged"
        if len(q) < self.limit:
            q.append(event)
            return "queued"
        if event.kind != "map":
            for i in range(len(q) - 1, -1, -1):
                e = q[i]
                if e.kind != "map" and e.node_id == event.node_id:
                    if e.kind != event.kind:
                        break  # the node's latest news is another kind: merging would reorder them
                    q[i] = event
                    return "merged"
        return "dropped"

    def pop(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def clear(self) -> int:
        n = len(self._events)
        self._events.clear()
        return n


SYSTEMD_ONLY = ("NOTIFY_SOCKET", "WATCHDOG_PID", "WATCHDOG_USEC", "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")


def environment(event: Event, base: Mapping[str, str]) -> dict[str, str]:
    """The handler's environment: the daemon's (an operator's OMDISC_HOSTS_FILE, say, from a unit
    drop-in), less what systemd meant for the daemon alone, with the event's three variables."""
    env = {k: v for k, v in base.items() if k not in SYSTEMD_ONLY}
    env.update(OMDISC_EVENT=event.kind, OMDISC_NODE_ID=str(event.node_id),
               OMDISC_NODE_ADDRESSES=" ".join(map(str, event.addresses)))
    return env


@dataclass
class Capture:
    """What a program wrote to one stream: the first `keep` bytes, and how many more there were."""

    keep: int = OUTPUT_KEPT
    data: bytearray = field(default_factory=bytearray)
    more: int = 0

    def add(self, chunk: bytes) -> None:
        room = max(0, self.keep - len(self.data))
        self.data += chunk[:room]
        self.more += max(0, len(chunk) - room)


def excerpt(name: str, capture: Capture) -> str:
    """A stream for the log: '' when empty, else a line per line written, the cut said."""
    text = capture.data.decode("utf-8", errors="replace").rstrip()
    if not text and not capture.more:
        return ""
    cut = f"\n{name}: ... ({capture.more} bytes more, not shown)" if capture.more else ""
    return "".join(f"\n{name}: {line}" for line in text.splitlines()) + cut


def outcome(returncode: int | None, timed_out: bool, timeout: float) -> tuple[bool, str]:
    """(success, how it ended, in words)."""
    if timed_out:
        return False, f"did not finish within {timeout:g}s: killed"
    if returncode == 0:
        return True, "exited 0"
    if returncode is not None and returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return False, f"was killed by {name}"
    return False, f"exited {returncode}"


# --- the shell ----------------------------------------------------------------------------------


@dataclass
class _Slot:
    spec: HandlerSpec
    backlog: Backlog
    task: asyncio.Task[None] | None = None
    retired: bool = False


class Runner:
    """Runs the configured handlers outside the loop's way. `document()` gives the map as JSON
    bytes (what showmap --json prints), read when a program starts; counters go to `stats`."""

    def __init__(self, stats: Counter[str], document: Callable[[], bytes], parallel: int = PARALLEL,
                 queued: int = QUEUED, clock: Callable[[], float] = time.monotonic,
                 base_env: Mapping[str, str] | None = None) -> None:
        self.stats = stats
        self.document = document
        self.queued = queued
        self.clock = clock
        self.base_env = dict(os.environ if base_env is None else base_env)
        self.timeout = 10.0
        self.running = 0
        self.peak = 0  # the most programs ever running at once (tests read it)
        self._slots: list[_Slot] = []
        self._sem = asyncio.Semaphore(parallel)
        self._procs: set[asyncio.subprocess.Process] = set()
        self._said = LogLimiter(DROPS_SAID)

    @property
    def wanted(self) -> bool:
        return bool(self._slots)

    @property
    def kinds(self) -> frozenset[str]:
        """The kinds of event some handler wants: the engine records only these."""
        return frozenset(k for s in self._slots for k in KINDS if s.spec.wants(k))

    def configure(self, specs: Iterable[HandlerSpec], timeout: float) -> None:
        """The handlers in force (start, SIGHUP). One kept from before keeps its backlog; one no
        longer configured finishes what runs and forgets what waits."""
        self.timeout = timeout
        old = list(self._slots)
        slots = []
        for spec in specs:
            # the same program is the same handler, whatever its events now: one queue, one worker,
            # never two copies of it at once, nothing waiting lost
            same = next((s for s in old if s.spec.run == spec.run), None)
            if same is not None:
                old.remove(same)
                same.spec = spec
                slots.append(same)
            else:
                slots.append(_Slot(spec, Backlog(self.queued)))
        for s in old:
            s.retired = True
            forgotten = s.backlog.clear()
            if forgotten:
                self.stats["handler_events_dropped"] += forgotten
                log.warning("handler %s is no longer configured: %d events it had not run yet dropped", s.spec.run,
                            forgotten)
        self._slots = slots
        for slot in slots:
            if not os.access(slot.spec.run, os.X_OK):
                mainlog.warning("handler %s is not an executable file: its events will fail", slot.spec.run)

    def submit(self, events: Iterable[Event]) -> None:
        """From the loop: never waits."""
        for event in events:
            for slot in self._slots:
                if not slot.spec.wants(event.kind):
                    continue
                verdict = slot.backlog.put(event)
                if verdict == "merged":
                    self.stats["handler_events_merged"] += 1
                elif verdict == "dropped":
                    self.stats["handler_events_dropped"] += 1
                    muted = self._said.allow(slot.spec.run, self.clock())
                    if muted is not None:
                        log.warning("handler %s is %d events behind: %s event of #%d dropped%s (counted as "
                                    "handler_events_dropped; the next run still gets the whole map)",
                                    slot.spec.run, len(slot.backlog), event.kind, event.node_id,
                                    f", and {muted} more since this was last said" if muted else "")
                if slot.task is None and slot.backlog:
                    slot.task = asyncio.get_running_loop().create_task(self._work(slot))

    async def idle(self) -> None:
        """Until nothing waits and nothing runs (tests, shutdown)."""
        while any(s.task is not None for s in self._slots) or self.running:
            await asyncio.sleep(0.01)

    def close(self) -> None:
        """At exit: what waits is forgotten, what runs is killed."""
        for s in self._slots:
            s.retired = True
            s.backlog.clear()
            if s.task is not None:
                s.task.cancel()
        for proc in list(self._procs):
            _kill(proc)

    async def _work(self, slot: _Slot) -> None:
        try:
            while slot.backlog and not slot.retired:
                async with self._sem:
                    event = slot.backlog.pop()
                    if event is None or slot.retired:
                        break
                    await self._guarded_run(slot.spec, event)
        finally:
            slot.task = None

    async def _guarded_run(self, spec: HandlerSpec, event: Event) -> None:
        try:
            await self._run(spec, event)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a handler's trouble must never end the worker, nor the daemon
            self.stats["handler_failures"] += 1
            log.error("handler %s for %s of #%d: internal error %s: %s", spec.run, event.kind, event.node_id,
                      type(e).__name__, e)

    async def _run(self, spec: HandlerSpec, event: Event) -> None:
        self.stats["handler_runs"] += 1
        fields = {"OMDISC_HANDLER": str(spec.run), "OMDISC_EVENT": event.kind, "OMDISC_PEER_ID": str(event.node_id)}
        try:
            data = self.document()
            proc = await asyncio.create_subprocess_exec(
                str(spec.run), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, env=environment(event, self.base_env), cwd="/",
                start_new_session=True)  # its own process group: a timeout kills what it started too
        except OSError as e:
            self.stats["handler_failures"] += 1
            log.warning("handler %s for %s of #%d could not start: %s", spec.run, event.kind, event.node_id,
                        e.strerror or e, extra={"journal": fields})
            return
        self.running += 1
        self.peak = max(self.peak, self.running)
        self._procs.add(proc)
        started = self.clock()
        out, err = Capture(), Capture()
        io = [asyncio.create_task(c)
              for c in (_feed(proc, data), _drain(proc.stdout, out), _drain(proc.stderr, err))]
        try:
            # The end is the program's exit, not its pipes closing: a child it leaves running may
            # hold them open for ever
            timed_out = not await _exited(proc, self.timeout)
            if timed_out:
                await _stop(proc)
            await asyncio.wait(io, timeout=OUTPUT_GRACE)  # what it wrote before it ended
        finally:
            for task in io:
                task.cancel()
            _close_pipes(proc)
            self.running -= 1
            self._procs.discard(proc)
            if proc.returncode is None:  # cancelled (shutdown): nothing is left running
                _kill(proc)
        ok, how = outcome(proc.returncode, timed_out, self.timeout)
        if timed_out:
            self.stats["handler_timeouts"] += 1
        if not ok:
            self.stats["handler_failures"] += 1
        log.log(logging.INFO if ok else logging.WARNING, "handler %s for %s of #%d %s after %.2fs%s%s",
                spec.run, event.kind, event.node_id, how, self.clock() - started, excerpt("stdout", out),
                excerpt("stderr", err),
                extra={"journal": {**fields, "OMDISC_EXIT_STATUS": str(proc.returncode)}})


def _kill(proc: asyncio.subprocess.Process, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)  # the group: a shell's children too


async def _exited(proc: asyncio.subprocess.Process, timeout: float) -> bool:
    """Whether the program exited within `timeout` (its pidfd becomes readable), and then its
    status known to asyncio's child watcher."""
    loop = asyncio.get_running_loop()
    try:
        fd = os.pidfd_open(proc.pid)
    except ProcessLookupError:  # gone and reaped already
        return await _reaped(proc)
    done = loop.create_future()
    def readable() -> None:
        if not done.done():
            done.set_result(None)

    loop.add_reader(fd, readable)
    try:
        await asyncio.wait_for(done, timeout)
    except TimeoutError:
        return False
    finally:
        loop.remove_reader(fd)
        os.close(fd)
    return await _reaped(proc)


async def _reaped(proc: asyncio.subprocess.Process) -> bool:
    """Its exit status, which asyncio's child watcher takes a moment after the exit."""
    for _ in range(400):
        if proc.returncode is not None:
            break
        await asyncio.sleep(0.005)
    return True


async def _stop(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM to its group, so it may clean up (temporary files); SIGKILL a second later."""
    _kill(proc, signal.SIGTERM)
    if not await _exited(proc, KILL_AFTER):
        _kill(proc)
        await _exited(proc, KILL_AFTER)


def _close_pipes(proc: asyncio.subprocess.Process) -> None:
    """Our ends of its pipes, whoever else still holds theirs (no descriptor kept per run)."""
    transport = getattr(proc, "_transport", None)
    if transport is not None:
        transport.close()


async def _feed(proc: asyncio.subprocess.Process, data: bytes) -> None:
    """The map on stdin; a program that does not read it is no error."""
    assert proc.stdin is not None
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        proc.stdin.write(data)
        await proc.stdin.drain()
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        proc.stdin.close()


async def _drain(stream: asyncio.StreamReader | None, capture: Capture) -> None:
    """Read a stream to its end (a program blocked on a full pipe would never finish), keep a part."""
    assert stream is not None
    while chunk := await stream.read(65536):
        capture.add(chunk)
