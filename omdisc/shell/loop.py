"""The daemon's event loop, on `selectors`: every descriptor it waits on (the sockets, netlink, the
handlers' pipes and pidfds), timers on a heap, callbacks for the end of this pass, and signals.

asyncio did this before; it was the slowest of the daemon's imports, for a few of its features. The
daemon's own pace (sleep until the next deadline unless woken) is shell/pace.py's, a pass of this
loop at a time.

Signals are taken as asyncio takes them: `signal.set_wakeup_fd` on a socketpair, so that the C
handler writes each signal's number there and select() returns; Python's handler does nothing. The
callbacks run in the loop, outside any signal handler, in the order the signals came. Nothing
here blocks: a callback must read and write without waiting (non-blocking descriptors).
"""

from __future__ import annotations

import heapq
import logging
import selectors
import signal
import socket
import time
from collections import deque
from collections.abc import Callable, Mapping
from types import FrameType

log = logging.getLogger("omdisc")

Callback = Callable[[], None]
LONGEST_WAIT = 24 * 3600.0  # seconds one select() may wait: a deadline at infinity is no number to it


class Timer:
    """A callback due at `when` (the loop's clock); cancel() before then and it never runs."""

    __slots__ = ("_on_cancel", "callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callback, on_cancel: Callback) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False
        self._on_cancel = on_cancel

    def cancel(self) -> None:
        """Never run; what the callback holds (a finished program, its map document) is let go now,
        not when the heap reaches this timer."""
        if not self.cancelled:
            self.cancelled = True
            self.callback = _nothing
            self._on_cancel()


def _nothing() -> None:
    pass


def _noted(signum: int, frame: FrameType | None) -> None:
    """Python's half of a signal: nothing. Its number is on the wakeup socket already."""


class Loop:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._selector = selectors.DefaultSelector()
        self._readers: dict[int, Callback] = {}
        self._writers: dict[int, Callback] = {}
        self._soon: deque[Callback] = deque()
        self._timers: list[tuple[float, int, Timer]] = []
        self._made = 0  # timers made so far: equal times keep their order on the heap
        self._cancelled = 0  # cancelled timers still on the heap
        self._wakeup: tuple[socket.socket, socket.socket] | None = None
        self._old_wakeup_fd = -1
        self._old_handlers: dict[int, Callable[[int, FrameType | None], object] | int | None] = {}
        self._on_signal: dict[int, Callback] = {}

    # --- descriptors --------------------------------------------------------------------------

    def add_reader(self, fd: int, callback: Callback) -> None:
        self._watch(self._readers, fd, callback)

    def remove_reader(self, fd: int) -> None:
        self._watch(self._readers, fd, None)

    def add_writer(self, fd: int, callback: Callback) -> None:
        self._watch(self._writers, fd, callback)

    def remove_writer(self, fd: int) -> None:
        self._watch(self._writers, fd, None)

    def _watch(self, table: dict[int, Callback], fd: int, callback: Callback | None) -> None:
        """Set (or, with None, clear) the callback for `fd` in the readers' or the writers' table."""
        if callback is not None:
            table[fd] = callback
        elif table.pop(fd, None) is None:
            return
        self._update(fd)

    def _update(self, fd: int) -> None:
        events = (selectors.EVENT_READ if fd in self._readers else 0) | (
            selectors.EVENT_WRITE if fd in self._writers else 0)
        try:
            key: selectors.SelectorKey | None = self._selector.get_key(fd)
        except KeyError:
            key = None
        if key is None:
            if events:
                self._selector.register(fd, events)
        elif not events:
            self._selector.unregister(fd)
        elif key.events != events:
            self._selector.modify(fd, events)

    # --- callbacks and timers -------------------------------------------------------------------

    def call_soon(self, callback: Callback) -> None:
        """At the end of this pass (or of the next, if called by a callback of this pass's end)."""
        self._soon.append(callback)

    def call_at(self, when: float, callback: Callback) -> Timer:
        timer = Timer(when, callback, self._one_cancelled)
        self._made += 1
        heapq.heappush(self._timers, (when, self._made, timer))
        return timer

    def _one_cancelled(self) -> None:
        """A long timer at the top would keep the cancelled ones under it: past half the heap, the
        heap is made again without them (what asyncio does too)."""
        self._cancelled += 1
        if self._cancelled > 32 and self._cancelled * 2 > len(self._timers):
            self._timers = [entry for entry in self._timers if not entry[2].cancelled]
            heapq.heapify(self._timers)
            self._cancelled = 0

    def call_later(self, delay: float, callback: Callback) -> Timer:
        return self.call_at(self.clock() + delay, callback)

    # --- running ----------------------------------------------------------------------------------

    def run_once(self, timeout: float | None) -> None:
        """One pass: wait until a descriptor is ready, the next timer is due or `timeout` seconds
        passed (None: no limit), then run what is ready, what is due and what was called soon."""
        timers = self._timers
        while timers and timers[0][2].cancelled:
            heapq.heappop(timers)
            self._cancelled -= 1
        if self._soon:
            timeout = 0.0
        elif timers:
            due = max(0.0, timers[0][0] - self.clock())
            timeout = due if timeout is None else min(timeout, due)
        if timeout is not None:
            timeout = min(timeout, LONGEST_WAIT)
        for key, events in self._selector.select(timeout):
            if events & selectors.EVENT_READ:
                self._run(self._readers.get(key.fd))
            if events & selectors.EVENT_WRITE:
                self._run(self._writers.get(key.fd))
        now = self.clock()
        while timers and timers[0][0] <= now:
            timer = heapq.heappop(timers)[2]
            if timer.cancelled:
                self._cancelled -= 1
            else:
                self._soon.append(timer.callback)
        for _ in range(len(self._soon)):  # what these call soon waits for the next pass
            self._run(self._soon.popleft())

    def run_until(self, done: Callable[[], bool], timeout: float | None = None) -> bool:
        """Passes until `done()` (True), or until `timeout` seconds have passed (False)."""
        end = None if timeout is None else self.clock() + timeout
        while not done():
            left = None if end is None else end - self.clock()
            if left is not None and left <= 0:
                return False
            self.run_once(left)
        return True

    @staticmethod
    def _run(callback: Callback | None) -> None:
        """A callback's exception is a bug, said with its traceback; the loop goes on (as asyncio's did)."""
        if callback is None:  # its descriptor was let go earlier in this pass
            return
        try:
            callback()
        except Exception:
            log.exception("internal error in %r", callback)

    # --- signals ---------------------------------------------------------------------------------

    def handle_signals(self, callbacks: Mapping[int, Callback]) -> None:
        """From now until close(), each of these signals calls its callback in the loop."""
        if self._wakeup is None:
            pair = socket.socketpair()
            for s in pair:
                s.setblocking(False)
            self._wakeup = pair
            self._old_wakeup_fd = signal.set_wakeup_fd(pair[1].fileno(), warn_on_full_buffer=False)
            self.add_reader(pair[0].fileno(), self._signalled)
        for signum, callback in callbacks.items():
            self._old_handlers.setdefault(signum, signal.getsignal(signum))
            self._on_signal[signum] = callback
            signal.signal(signum, _noted)

    def _signalled(self) -> None:
        assert self._wakeup is not None
        try:
            said = self._wakeup[0].recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        for signum in said:
            self._run(self._on_signal.get(signum))

    def close(self) -> None:
        """The signals' dispositions and wakeup descriptor as they were; the selector closed (the
        descriptors it watched are their owners' to close)."""
        for signum, old in self._old_handlers.items():
            signal.signal(signum, old if old is not None else signal.SIG_DFL)
        self._old_handlers.clear()
        self._on_signal.clear()
        if self._wakeup is not None:
            signal.set_wakeup_fd(self._old_wakeup_fd)
            self.remove_reader(self._wakeup[0].fileno())
            for s in self._wakeup:
                s.close()
            self._wakeup = None
        self._selector.close()
