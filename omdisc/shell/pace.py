"""The loop's pace: it sleeps until its next deadline unless something wakes it sooner, and it sends
systemd's watchdog keep-alives when the unit asks for them."""

from __future__ import annotations

from omdisc.shell.journal import notify, watchdog_seconds
from omdisc.shell.loop import Loop


class Sleep:
    """The daemon's wait between two passes: the loop runs what comes (datagrams, signals, the
    handlers' pipes) until the deadline, or until one of them calls wake()."""

    def __init__(self, loop: Loop) -> None:
        self.loop = loop
        self._woken = False
        self.until = float("-inf")  # the deadline the loop sleeps until; -inf: it is not asleep

    def sleep(self, deadline: float) -> None:
        self.until = deadline
        self._woken = False  # a wake() during the daemon's own pass is for that pass: done
        clock = self.loop.clock
        while True:  # one pass at least, due or not: what is ready is read even when timers are late
            self.loop.run_once(max(0.0, deadline - clock()))
            if self._woken or clock() >= deadline:
                break
        self.until = float("-inf")  # awake: nothing to wake it for

    def wake(self) -> None:
        self._woken = True

    def wake_before(self, deadline: float) -> None:
        """Wake the loop only if it sleeps past `deadline` (a pass of the loop per datagram was most
        of an idle daemon's CPU)."""
        if deadline < self.until:
            self._woken = True


class Watchdog:
    def __init__(self) -> None:
        self.every = watchdog_seconds()  # None: systemd asks for no keep-alives
        self.due = float("inf")

    def start(self, now: float) -> None:
        if self.every:
            self.due = now

    def tend(self, now: float) -> None:
        if now >= self.due:
            notify("WATCHDOG=1")
            self.due = now + (self.every or 0)
