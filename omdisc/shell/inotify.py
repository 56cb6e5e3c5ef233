"""Linux inotify through libc (ctypes), so that showmap --watch sleeps until a file changes instead of
polling: the standard library has no binding, and one more dependency is not worth three calls."""

from __future__ import annotations

import ctypes
import os
import select
import struct
from pathlib import Path

from omdisc.core.records import record

TYPE_CHECKING = False  # typing is mypy's only: never loaded at run time (docs/architecture.md)
if TYPE_CHECKING:
    from typing import NoReturn

# <sys/inotify.h>
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_IGNORED = 0x00008000  # the watch is gone (its directory was removed)
IN_ONLYDIR = 0x01000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

# struct inotify_event: int wd; uint32_t mask, cookie, len; char name[len] (NUL padded)
_EVENT = struct.Struct("=iIII")
_READ_SIZE = 64 * 1024  # many events per read(); one event is at most 16 + NAME_MAX + 1 bytes


@record(frozen=True)
class InotifyEvent:
    """One event read from the inotify descriptor."""

    wd: int
    mask: int
    name: str  # the file's name within the watched directory; "" for the directory itself


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)  # the process's own symbols: Python is linked with libc
    libc.inotify_init1.argtypes = [ctypes.c_int]
    libc.inotify_init1.restype = ctypes.c_int
    libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
    libc.inotify_add_watch.restype = ctypes.c_int
    return libc


def _raise_errno(path: Path | None = None) -> NoReturn:
    code = ctypes.get_errno()
    raise OSError(code, os.strerror(code), *((str(path),) if path is not None else ()))


def parse_events(data: bytes) -> list[InotifyEvent]:
    """The events in one read(): fixed headers, each followed by its NUL-padded name."""
    events, offset = [], 0
    while offset + _EVENT.size <= len(data):
        wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
        offset += _EVENT.size
        raw = data[offset:offset + length]
        offset += length
        events.append(InotifyEvent(wd, mask, os.fsdecode(raw.split(b"\0", 1)[0])))
    return events


class Inotify:
    """One inotify instance: watches added by path, events read with a timeout."""

    def __init__(self) -> None:
        self._libc = _libc()
        fd = self._libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            _raise_errno()
        self._fd: int = fd

    def fileno(self) -> int:
        return self._fd

    def add_watch(self, path: Path, mask: int) -> int:
        """Watch `path` for `mask`; a path already watched keeps its descriptor and takes the new mask."""
        wd: int = self._libc.inotify_add_watch(self._fd, os.fsencode(path), mask)
        if wd < 0:
            _raise_errno(path)
        return wd

    def read(self, timeout: float | None) -> list[InotifyEvent]:
        """The events that arrive within `timeout` seconds (None: wait for one); [] if none did."""
        ready, _, _ = select.select([self._fd], [], [], timeout)
        if not ready:
            return []
        try:
            return parse_events(os.read(self._fd, _READ_SIZE))
        except BlockingIOError:  # nonblocking: another reader took them (select said ready)
            return []

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> Inotify:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
