from __future__ import annotations

import os
import threading
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from omdisc.core.table import Entry, Table, decode_config, decode_mospe, encode_config
from omdisc.shell.sinks import AlphaSink, LiveSink, SinkError, choose_sink, proc_hpc


def table(n: int) -> Table:
    return Table(tuple(Entry(i * 256 + 1, IPv4Address(f"198.18.{i}.1")) for i in range(1, n + 1)))


def test_auto_is_live_only_where_the_openmosix_interface_exists(tmp_path: Path) -> None:
    assert isinstance(choose_sink("auto", tmp_path / "alpha", admin=tmp_path / "no-such"), AlphaSink)
    (tmp_path / "admin").mkdir()
    assert isinstance(choose_sink("auto", tmp_path / "alpha", admin=tmp_path / "admin"), LiveSink)
    assert isinstance(choose_sink("alpha", tmp_path / "alpha", admin=tmp_path / "admin"), AlphaSink)


def test_live_mode_without_openmosix_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SinkError, match="does not exist"):
        LiveSink(tmp_path / "hpc" / "admin").prepare()


def test_live_mode_that_cannot_write_the_kernel_files_is_a_clear_error_at_start(tmp_path: Path) -> None:
    (tmp_path / "mospe").write_bytes(b"")  # no config: cannot be written (as root too, who may write any file)
    with pytest.raises(SinkError, match=r"/config cannot be written: live mode runs as root .*live-kernel.conf"):
        LiveSink(tmp_path).prepare()


# /proc/self/mountinfo lines: systemd's ProcSubset=pid mounts a procfs with subset=pid over /proc
HOST_PROC = "22 1 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw\n"
UNIT_PROC = "301 280 0:88 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw,hidepid=invisible,subset=pid\n"
OTHER = "30 22 0:26 / /proc/sys/fs/binfmt_misc rw,relatime - autofs systemd-1 rw,fd=30\n"


@pytest.mark.parametrize(("admin", "mounts", "seen"), [
    (True, HOST_PROC + UNIT_PROC, "present"),  # /proc/hpc bound or shown: seen whatever the rest
    (False, HOST_PROC + OTHER, "absent"),  # a full /proc: no openMosix kernel here
    (False, HOST_PROC + OTHER + UNIT_PROC, "hidden"),  # the last /proc mounted is the one seen
    (False, UNIT_PROC + HOST_PROC, "absent"),
    (False, "", "absent"),
])
def test_what_kernel_auto_could_see(tmp_path: Path, admin: bool, mounts: str, seen: str) -> None:
    if admin:
        (tmp_path / "admin").mkdir()
    (tmp_path / "mountinfo").write_text(mounts)
    assert proc_hpc(tmp_path / "admin", tmp_path / "mountinfo") == seen


def test_live_sink_writes_the_proc_files_in_place(tmp_path: Path) -> None:
    for name in ("mospe", "config"):
        (tmp_path / name).write_bytes(b"")
    LiveSink(tmp_path).write(257, table(2))
    assert (tmp_path / "mospe").read_bytes() == b"257\n"  # as `echo 257 > /proc/hpc/admin/mospe`
    config = (tmp_path / "config").read_bytes()
    assert len(config) == 24 and decode_config(config) == list(table(2).entries)
    alpha = AlphaSink(tmp_path / "alpha")
    alpha.prepare()
    alpha.write(257, table(2))  # alpha mode keeps the seed's binary files
    assert decode_mospe((tmp_path / "alpha" / "om_mospe").read_bytes()) == 257


def test_alpha_files_are_replaced_atomically_a_reader_never_sees_half(tmp_path: Path) -> None:
    sink = AlphaSink(tmp_path / "alpha")
    sink.prepare()
    sink.write(1, table(1))
    stop = threading.Event()
    sizes: set[int] = set()

    def reader() -> None:
        while not stop.is_set():
            sizes.add(len(decode_config((tmp_path / "alpha" / "om_config").read_bytes())))

    t = threading.Thread(target=reader)
    t.start()
    for i in range(300):
        sink.write(1, table(1 + i % 200))
    stop.set()
    t.join()
    assert sizes and all(1 <= s <= 200 for s in sizes)  # decode_config raises on a torn file
    assert [p.name for p in (tmp_path / "alpha").iterdir() if p.name.startswith(".")] == []  # no temp left
    assert oct(os.stat(tmp_path / "alpha" / "om_config").st_mode & 0o777) == "0o644"


def test_the_map_a_sink_holds_is_read_back_as_the_other_nodes_ids(tmp_path: Path) -> None:
    """What a restarted node's first map waits for (MapWriter.hold_first_map): range lines expanded,
    aliases and this node (its mospe then) left out; None for no map, no ids for one not readable."""
    alpha = AlphaSink(tmp_path / "alpha")
    alpha.prepare()
    assert alpha.last_map() is None
    entries = [Entry(1, IPv4Address("198.18.0.1"), 3), Entry(9, IPv4Address("198.18.1.9")),
               Entry(1, IPv4Address("198.18.2.1"), alias=True)]
    alpha.write(2, Table(tuple(entries)))
    assert alpha.last_map() == {1, 3, 9}
    alpha.write(2, Table(()))
    assert alpha.last_map() is None  # an empty table: nothing to keep
    config = tmp_path / "alpha" / "om_config"
    for damaged in (b"\x01\x02\x03",  # not a whole record
                    b"1 10.0.0.1 1",  # text, read as one record of 824 million nodes: never expanded
                    encode_config([Entry(65000, IPv4Address("198.18.0.1"), 1000)])):  # ids past 65535
        config.write_bytes(damaged)
        assert alpha.last_map() == frozenset(), damaged
    (tmp_path / "config").write_bytes(encode_config(entries))
    (tmp_path / "mospe").write_bytes(b"9\n")  # the kernel's takes text
    assert LiveSink(tmp_path).last_map() == {1, 2, 3}
    (tmp_path / "config").write_bytes(b"")
    assert LiveSink(tmp_path).last_map() is None  # after a boot
