"""The loop's pace: it sleeps until its next deadline unless something wakes it sooner, and it sends
systemd's watchdog keep-alives when the unit asks for them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from omdisc.shell.journal import notify, watchdog_seconds


class Sleep:
    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self._event = asyncio.Event()
        self.until = float("-inf")  # the deadline the loop sleeps until; -inf: it is not asleep

    async def sleep(self, deadline: float) -> None:
        self.until = deadline
        self._event.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), max(0.0, deadline - self.clock()))
        self.until = float("-inf")  # awake: nothing to wake it for

    def wake(self) -> None:
        self._event.set()

    def wake_before(self, deadline: float) -> None:
        """Wake the loop only if it sleeps past `deadline` (a pass of the loop per datagram was most
        of an idle daemon's CPU)."""
        if deadline < self.until:
            self._event.set()


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
