"""The ctypes inotify binding: events parsed from the kernel's layout, and a real rename seen."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from omdisc.shell.files import write_atomic
from omdisc.shell.inotify import IN_CLOSE_WRITE, IN_MOVED_TO, IN_ONLYDIR, Inotify, InotifyEvent, parse_events


def test_events_are_parsed_with_their_padded_names() -> None:
    data = (struct.pack("=iIII", 1, IN_MOVED_TO, 7, 16) + b"om_mospe\0\0\0\0\0\0\0\0"
            + struct.pack("=iIII", 2, IN_CLOSE_WRITE, 0, 0))
    assert parse_events(data) == [InotifyEvent(1, IN_MOVED_TO, "om_mospe"), InotifyEvent(2, IN_CLOSE_WRITE, "")]


def test_a_file_replaced_by_rename_is_seen_and_nothing_else_waits(tmp_path: Path) -> None:
    with Inotify() as inotify:
        wd = inotify.add_watch(tmp_path, IN_MOVED_TO | IN_ONLYDIR)
        assert inotify.read(0) == []
        write_atomic(tmp_path / "om_config", b"x")
        assert InotifyEvent(wd, IN_MOVED_TO, "om_config") in inotify.read(10)


def test_watching_what_does_not_exist_is_an_oserror_naming_it(tmp_path: Path) -> None:
    with Inotify() as inotify, pytest.raises(FileNotFoundError, match="nope"):
        inotify.add_watch(tmp_path / "nope", IN_MOVED_TO)
