"""Event handlers: a program of the operator's run for each join, leave, expire, update, collision
or map write, with the event in its environment and the whole map (showmap --json) on stdin.

They never slow discovery: the loop only hands events over (submit(), no waiting); each handler
has its own backlog, worked through in order, one program of it at a time, and at most PARALLEL
programs run at once over all handlers, the handlers taking turns. A program that outlives
handler_timeout is killed with its whole process group. When a handler falls behind, its backlog
(QUEUED events) coalesces:
- a `map` event waiting already stands for a new one (the map on stdin is read when it starts);
- when the backlog is full, a new event is merged into the latest waiting event about the same
  node if that is of the same kind (the newer addresses win); otherwise it is dropped, counted
  (handler_events_dropped) and said at most once a minute per handler.
Since every run gets the whole current map on stdin, a handler that rebuilds its output from
stdin is right again at its next run whatever was merged or dropped.

Pure: Backlog, environment(), excerpt(). The shell: Runner (each run a shell/programs.py Program).
"""

from __future__ import annotations

import logging
import os
import signal
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping

from omdisc.core.config import HandlerSpec
from omdisc.core.events import KINDS, Event
from omdisc.core.ratelimit import LogLimiter
from omdisc.core.records import record
from omdisc.shell.loop import Loop
from omdisc.shell.programs import Capture, Program

log = logging.getLogger("omdisc.handlers")
mainlog = logging.getLogger("omdisc")  # what the configuration gets wrong: with the daemon's own (category main)

PARALLEL = 4  # programs running at once, over all handlers
QUEUED = 64  # events waiting per handler
DROPS_SAID = 60.0  # seconds between two log lines about one handler's dropped events


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


@record
class _Slot:
    """One configured handler: its backlog and what of it runs now."""

    spec: HandlerSpec
    backlog: Backlog
    program: Program | None = None  # what runs now: never two of one handler at once
    queued: bool = False  # waiting for its turn in the runner's queue
    retired: bool = False


class Runner:
    """Runs the configured handlers outside the loop's way. `document()` gives the map as JSON
    bytes (what showmap --json prints), read when a program starts; counters go to `stats`."""

    def __init__(self, stats: Counter[str], document: Callable[[], bytes], loop: Loop, parallel: int = PARALLEL,
                 queued: int = QUEUED, base_env: Mapping[str, str] | None = None) -> None:
        self.stats = stats
        self.document = document
        self.loop = loop
        self.clock = loop.clock
        self.parallel = parallel
        self.queued = queued
        self.base_env = dict(os.environ if base_env is None else base_env)
        self.timeout = 10.0
        self.peak = 0  # the most programs ever running at once (tests read it)
        self._programs: set[Program] = set()  # running, a retired handler's too
        self._slots: list[_Slot] = []
        self._turns: deque[_Slot] = deque()  # handlers with events waiting, in the order they came
        self._start_due = False  # a start is called soon: events submitted in one pass all queue first
        self._said = LogLimiter(DROPS_SAID)

    @property
    def wanted(self) -> bool:
        return bool(self._slots)

    @property
    def kinds(self) -> frozenset[str]:
        """The kinds of event some handler wants: the engine records only these."""
        return frozenset(k for s in self._slots for k in KINDS if s.spec.wants(k))

    @property
    def running(self) -> int:
        return len(self._programs)

    @property
    def busy(self) -> bool:
        """Something runs or waits for its turn (tests run the loop until it is not)."""
        return bool(self.running or self._turns or self._start_due)

    def configure(self, specs: Iterable[HandlerSpec], timeout: float) -> None:
        """The handlers in force (start, SIGHUP). One kept from before keeps its backlog; one no
        longer configured finishes what runs and forgets what waits."""
        self.timeout = timeout
        old = list(self._slots)
        slots = []
        for spec in specs:
            # the same program is the same handler, whatever its events now: one queue, one program
            # at a time, nothing waiting lost
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
        """From the loop: never waits. The programs start at the end of the pass."""
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
                self._queue(slot)
        if self._turns and not self._start_due:
            self._start_due = True
            self.loop.call_soon(self._start_turns)

    def close(self) -> None:
        """At exit: what waits is forgotten, what runs is killed."""
        self._turns.clear()
        for s in self._slots:
            s.retired = True
            s.backlog.clear()
            s.program = None
        for program in self._programs:
            program.abandon()
        self._programs.clear()

    def _queue(self, slot: _Slot) -> None:
        if slot.backlog and slot.program is None and not slot.queued and not slot.retired:
            slot.queued = True
            self._turns.append(slot)

    def _start_turns(self) -> None:
        self._start_due = False
        while self._turns and self.running < self.parallel:
            slot = self._turns.popleft()
            slot.queued = False
            event = slot.backlog.pop()
            if event is not None and not slot.retired:
                self._start(slot, event)
                self._queue(slot)  # a program that could not start: the next event takes its turn

    def _start(self, slot: _Slot, event: Event) -> None:
        spec = slot.spec
        self.stats["handler_runs"] += 1
        try:
            data = self.document()
            program = Program(self.loop, [str(spec.run)], environment(event, self.base_env), data, self.timeout,
                              lambda p: self._ended(slot, event, p))
        except OSError as e:
            self.stats["handler_failures"] += 1
            log.warning("handler %s for %s of #%d could not start: %s", spec.run, event.kind, event.node_id,
                        e.strerror or e, extra={"journal": _fields(spec, event)})
            return
        except Exception as e:  # a handler's trouble must never end the loop, nor the daemon
            self.stats["handler_failures"] += 1
            log.error("handler %s for %s of #%d: internal error %s: %s", spec.run, event.kind, event.node_id,
                      type(e).__name__, e)
            return
        slot.program = program
        self._programs.add(program)
        self.peak = max(self.peak, self.running)

    def _ended(self, slot: _Slot, event: Event, program: Program) -> None:
        slot.program = None
        self._programs.discard(program)
        ok, how = outcome(program.returncode, program.timed_out, self.timeout)
        if program.timed_out:
            self.stats["handler_timeouts"] += 1
        if not ok:
            self.stats["handler_failures"] += 1
        log.log(logging.INFO if ok else logging.WARNING, "handler %s for %s of #%d %s after %.2fs%s%s",
                slot.spec.run, event.kind, event.node_id, how, self.clock() - program.started,
                excerpt("stdout", program.out), excerpt("stderr", program.err),
                extra={"journal": {**_fields(slot.spec, event), "OMDISC_EXIT_STATUS": str(program.returncode)}})
        self._queue(slot)
        self._start_turns()


def _fields(spec: HandlerSpec, event: Event) -> dict[str, str]:
    return {"OMDISC_HANDLER": str(spec.run), "OMDISC_EVENT": event.kind, "OMDISC_PEER_ID": str(event.node_id)}
