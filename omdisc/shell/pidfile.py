"""The pid file: one daemon per file, a stale one (its process gone) taken over, removed on exit.

A lock held on the open file is the proof of life: the kernel drops it when the process dies, so
a pid file left by `kill -9` is never mistaken for a running daemon.
"""

from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path

log = logging.getLogger("omdisc")


class PidFileError(RuntimeError):
    pass


class PidFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def _holder(self, fd: int) -> str:
        os.lseek(fd, 0, os.SEEK_SET)
        return os.read(fd, 32).decode(errors="replace").strip() or "?"

    def _lock(self) -> int:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise PidFileError(f"cannot open pid file {self.path}: {e.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._holder(fd)
            os.close(fd)
            raise PidFileError(f"omdiscd is already running (pid {holder}, pid file {self.path})") from None
        return fd

    def acquire(self) -> None:
        fd = self._lock()
        old = self._holder(fd)
        if old not in ("?", str(os.getpid())):
            log.info("took over stale pid file %s (pid %s is gone)", self.path, old)
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def check(self) -> None:
        """Fail now (before detaching) if another daemon holds the file; change nothing."""
        existed = self.path.exists()
        os.close(self._lock())
        if not existed:
            self.path.unlink(missing_ok=True)

    def release(self, unlink: bool = True) -> None:
        if self._fd is None:
            return
        if unlink:
            self.path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None
