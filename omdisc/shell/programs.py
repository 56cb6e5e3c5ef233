"""One program run under the loop, never waited for: its stdin fed, its stdout and stderr read as
they come (the first part kept), its exit learnt from a pidfd, and past its time SIGTERM to its
process group, SIGKILL a while later. shell/handlers.py decides what runs and when."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Callable, Mapping

from omdisc.core.records import field, record
from omdisc.shell.loop import Loop, Timer

TYPE_CHECKING = False  # typing is mypy's only: never loaded at run time (docs/architecture.md)
if TYPE_CHECKING:
    from typing import IO

OUTPUT_KEPT = 2048  # bytes of stdout and of stderr kept for the log; the rest is read and counted
OUTPUT_GRACE = 0.5  # seconds to read what a program wrote, once it has exited
KILL_AFTER = 1.0  # seconds between SIGTERM and SIGKILL when a program runs past the timeout
REAP_EVERY = 0.005  # seconds between looks at an exit status the pidfd announced but waitpid has not
POLL_EVERY = 0.05  # seconds between looks for its exit where no pidfd can be had
READ_SIZE = 65536


@record
class Capture:
    """What a program wrote to one stream: the first `keep` bytes, and how many more there were."""

    keep: int = OUTPUT_KEPT
    data: bytearray = field(default_factory=bytearray)
    more: int = 0

    def add(self, chunk: bytes) -> None:
        room = max(0, self.keep - len(self.data))
        self.data += chunk[:room]
        self.more += max(0, len(chunk) - room)


class Program:
    """Started at once (OSError: it could not be); `ended(self)` is called once, from the loop, when
    it has exited and what it wrote was read (or OUTPUT_GRACE passed), or when it was killed and
    KILL_AFTER passed twice. The end is the program's exit, not its pipes closing: a child it leaves
    running may hold them open for ever."""

    def __init__(self, loop: Loop, argv: list[str], env: Mapping[str, str], stdin: bytes, timeout: float,
                 ended: Callable[[Program], None]) -> None:
        self.loop = loop
        self.ended = ended
        self.out, self.err = Capture(), Capture()
        self.timed_out = False
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=env, cwd="/", start_new_session=True)  # a group: a timeout kills it all
        self.started = loop.clock()
        self._over = False  # ended() was called: only the exit status is still awaited
        self._grace = False  # it has ended (or is given up on): what it wrote is read a last while
        self._pipes: dict[int, IO[bytes]] = {}
        self._left = memoryview(stdin)
        assert self.proc.stdin is not None and self.proc.stdout is not None and self.proc.stderr is not None
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            os.set_blocking(pipe.fileno(), False)
            self._pipes[pipe.fileno()] = pipe
        loop.add_writer(self.proc.stdin.fileno(), self._feed)
        loop.add_reader(self.proc.stdout.fileno(), lambda: self._read(self.proc.stdout, self.out))
        loop.add_reader(self.proc.stderr.fileno(), lambda: self._read(self.proc.stderr, self.err))
        self._pidfd = self._open_pidfd()
        self._timer: Timer | None = loop.call_later(timeout, self._time_up)

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    def kill(self, sig: int = signal.SIGKILL) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)  # the group: a shell's children too

    def abandon(self) -> None:
        """At exit: killed, its descriptors closed, ended() never called."""
        self.kill()
        self._over = True
        self._finish_io()
        if self._pidfd is not None:
            self.loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None

    # --- its exit ------------------------------------------------------------------------------------

    def _open_pidfd(self) -> int | None:
        try:
            fd = os.pidfd_open(self.proc.pid)
        except OSError:  # no pidfds here (an old kernel, a seccomp filter): its status is looked at
            self.loop.call_later(POLL_EVERY, self._look)
            return None
        self.loop.add_reader(fd, self._pidfd_readable)
        return fd

    def _pidfd_readable(self) -> None:
        """It has exited; its status is waitpid's, which may lag the pidfd a moment."""
        if self._pidfd is not None:
            self.loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None
        self._look(REAP_EVERY)

    def _look(self, again: float = POLL_EVERY) -> None:
        if self.proc.poll() is None:  # waitpid(WNOHANG): never waits
            self.loop.call_later(again, lambda: self._look(again))
        elif not self._over:
            self._exited()

    def _exited(self) -> None:
        if not self._grace:
            self._grace = True
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self.loop.call_later(OUTPUT_GRACE, self._end)  # what it wrote before it ended
        self._end_if_read()

    def _time_up(self) -> None:
        """SIGTERM to its group, so it may clean up (temporary files); SIGKILL KILL_AFTER later."""
        self.timed_out = True
        self.kill(signal.SIGTERM)
        self._timer = self.loop.call_later(KILL_AFTER, self._kill_now)

    def _kill_now(self) -> None:
        self.kill()
        self._timer = self.loop.call_later(KILL_AFTER, self._exited)  # no exit seen even so: end anyway

    # --- its pipes -----------------------------------------------------------------------------------

    def _feed(self) -> None:
        """The map on stdin; a program that does not read it is no error."""
        assert self.proc.stdin is not None
        fd = self.proc.stdin.fileno()
        try:
            self._left = self._left[os.write(fd, self._left):]
        except BlockingIOError:
            return
        except OSError:  # EPIPE: it stopped reading (or never did), which is its right
            self._left = self._left[:0]
        if not self._left:
            self._close(fd)

    def _read(self, pipe: IO[bytes] | None, capture: Capture) -> None:
        """Read a stream to its end (a program blocked on a full pipe would never finish), keep a part."""
        assert pipe is not None
        fd = pipe.fileno()
        try:
            chunk = os.read(fd, READ_SIZE)
        except BlockingIOError:
            return
        except OSError:  # as good as its end: a descriptor that stays ready would spin the loop
            chunk = b""
        if chunk:
            capture.add(chunk)
        else:
            self._close(fd)

    def _close(self, fd: int) -> None:
        self.loop.remove_reader(fd)
        self.loop.remove_writer(fd)
        self._pipes.pop(fd).close()
        self._end_if_read()

    def _end_if_read(self) -> None:
        if not self._pipes and self.proc.returncode is not None and not self._over:
            self._end()

    def _end(self) -> None:
        if self._over:
            return
        self._over = True
        self._finish_io()
        if self.timed_out or self.proc.returncode is None:
            # a group whose leader went at SIGTERM may keep others that ignore it; or gone past
            # SIGKILL's wait: killed again, reaped when it goes
            self.kill()
        self.ended(self)

    def _finish_io(self) -> None:
        """Our ends of its pipes, whoever else still holds theirs (no descriptor kept per run)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for fd in list(self._pipes):
            self.loop.remove_reader(fd)
            self.loop.remove_writer(fd)
            self._pipes.pop(fd).close()
