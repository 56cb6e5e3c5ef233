"""Detaching (the seed's classic daemon mode). The parent waits until the child says it is up, or
has failed, so a start-up error still reaches the user's terminal and exit status, and a child
that dies without a word is a failure too: the parent never exits 0 for a daemon that is not
running."""

from __future__ import annotations

import os
import sys

from omdisc.shell.exits import EXIT_FAILURE, EXIT_OK

_UP = b"\x06"  # ACK: the child is running


class Detacher:
    def __init__(self) -> None:
        self.fd: int | None = None

    def detach(self) -> None:
        r, w = os.pipe()
        if os.fork():
            os.close(w)
            with os.fdopen(r, "rb") as f:
                said = f.read()
            os._exit(self._verdict(said))
        os.close(r)
        os.setsid()
        if os.fork():
            os._exit(EXIT_OK)
        os.chdir("/")
        os.umask(0o022)
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        os.close(devnull)
        self.fd = w

    @staticmethod
    def _verdict(said: bytes) -> int:
        if said.startswith(_UP):
            return EXIT_OK
        message = said.decode(errors="replace") or "omdiscd: the daemon exited during start-up (see the system log)\n"
        sys.stderr.write(message)
        return EXIT_FAILURE

    def up(self) -> None:
        if self.fd is not None:
            os.write(self.fd, _UP)
            os.close(self.fd)
            self.fd = None

    def fail(self, message: str) -> None:
        if self.fd is not None:
            os.write(self.fd, f"omdiscd: {message}\n".encode())
            os.close(self.fd)
            self.fd = None
        else:
            sys.stderr.write(f"omdiscd: {message}\n")
