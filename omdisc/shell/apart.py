"""Work done in a short-lived child of the daemon, so that what the work loads and leaves behind
never weighs on the daemon: its command line and configuration files (omdisc.front) at start, the
files again at each SIGHUP (shell/configfiles.py), and with them argparse and PyYAML.

The child is a fork: it has every module the daemon has so far, loads what the work needs, and
answers once in JSON on a pipe: the work's value, or the one line of the error it raised, or what
went wrong otherwise. It is born with every signal blocked, so a signal meant for the daemon
(SIGTERM to the whole service, SIGINT to the terminal's process group) neither reaches the daemon's
handlers twice nor cuts the child short; it ends with os._exit, so nothing of the daemon's (atexit,
finally blocks) runs twice. What it prints (argparse's --help) is flushed before it ends, and the
daemon's own output is flushed before the fork, so nothing is printed twice either.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from collections.abc import Callable

TYPE_CHECKING = False  # typing is mypy's only: never loaded at run time (docs/architecture.md)
if TYPE_CHECKING:
    from typing import Any


class ChildFailed(Exception):
    """The child gave no answer of the work's own: it raised something else, or ended without a word."""


class Child:
    """A child doing one piece of work; its answer is read once."""

    def __init__(self, pid: int, answers: int, error: type[Exception]) -> None:
        self.pid = pid
        self.answers = answers  # the pipe's read end
        self.error = error

    @classmethod
    def start(cls, work: Callable[[], Any], error: type[Exception]) -> Child:
        """work() begun in a child: its value (JSON's types) is answer()'s. `error`, made from a
        message alone, is the kind of exception the work may raise for the caller to see."""
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        try:
            pid = _fork_with_signals_held()
        except BaseException:
            os.close(read_end)
            os.close(write_end)
            raise
        if pid == 0:
            os.close(read_end)
            _answer(work, error, write_end)  # never returns
        os.close(write_end)
        return cls(pid, read_end, error)

    def answer(self) -> Any:
        """The work's value; its `error` raised here with the same message; anything else as ChildFailed."""
        try:
            data = _read_all(self.answers)
        finally:
            os.close(self.answers)
        status = os.waitpid(self.pid, 0)[1]
        if not data:
            raise ChildFailed(f"it ended without an answer ({_ended(status)})")
        answer = json.loads(data)
        if "error" in answer:
            raise self.error(answer["error"])
        if "failed" in answer:
            raise ChildFailed(answer["failed"])
        return answer["value"]


def in_child(work: Callable[[], Any], error: type[Exception]) -> Any:
    """work()'s value, computed in a child (Child.start, then its answer)."""
    return Child.start(work, error).answer()


def _fork_with_signals_held() -> int:
    """os.fork(), the child's signals blocked from its first instruction on; the parent's as they were."""
    for stream in (sys.stdout, sys.stderr):
        _flush(stream)
    held = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
    pid = -1
    try:
        pid = os.fork()
    except OSError as e:
        raise ChildFailed(f"cannot start it: {e.strerror or e}") from None
    finally:
        if pid != 0:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
    return pid


def _answer(work: Callable[[], Any], error: type[Exception], fd: int) -> None:
    """In the child: do the work, write the answer, and end, whatever happens."""
    status = 0
    try:
        try:
            answer = json.dumps({"value": work()})
        except error as e:
            answer = json.dumps({"error": str(e)})
        except BaseException as e:  # the parent is told; the child never goes back into the daemon's code
            answer = json.dumps({"failed": f"{type(e).__name__}: {e}"})
        view = memoryview(answer.encode())
        while view:
            view = view[os.write(fd, view):]
    except BaseException:
        status = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            _flush(stream)
        os._exit(status)


def _flush(stream: Any) -> None:
    with contextlib.suppress(OSError, ValueError, AttributeError):  # closed, gone, or None
        stream.flush()


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks)


def _ended(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"
