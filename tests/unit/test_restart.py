"""A stop for a restart (SIGUSR2) is no stop: no LEAVE, the incarnation kept for a newer next life;
and the unit, the init script and the man page send and document the same signal. A second omdiscd
started while one runs fails before it writes anything of the running one's.

A real Daemon on the loopback interface, built but never run: no socket is opened, nothing sent
(the datagrams it would send are what farewell() returns). The namespaces test the sending:
tests/integration/test_discovery.py."""

from __future__ import annotations

import os
import re
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from omdisc.core.config import Config
from omdisc.core.protocol import FLAG_RESTART, Message, MsgType, decode, encode
from omdisc.core.table import Entry, Table, node_ids
from omdisc.daemon import RESTART_SIGNAL, SIGNALS, Daemon, main
from omdisc.shell import keyfile
from omdisc.shell.addresses import make_plan
from omdisc.shell.configfiles import ConfigSource
from omdisc.shell.exits import EXIT_FAILURE
from omdisc.shell.journal import LogControl
from omdisc.shell.mapwriter import first_map_wait
from omdisc.shell.pidfile import PidFile
from omdisc.shell.sinks import AlphaSink

ROOT = Path(__file__).resolve().parents[2]


def daemon(tmp: Path) -> Daemon:
    cfg = Config(interfaces=("lo",), kernel="alpha", alpha_dir=tmp / "run", pid_file=tmp / "run" / "pid",
                 state_dir=tmp / "state", key_file=None)
    return Daemon(cfg, ConfigSource(None), LogControl("stderr", ()), make_plan(cfg), AlphaSink(tmp / "run"))


def test_sigusr2_sends_no_leave_and_the_next_life_is_newer(tmp_path: Path, omdisc_logger: None,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    first = daemon(tmp_path)
    first.stop_for_restart()
    farewell = [decode(o.data) for o in first.farewell()]
    assert [(m.type, bool(m.flags & FLAG_RESTART)) for m in farewell] == [(MsgType.ANNOUNCE, True)]  # no LEAVE
    assert "stopping for a restart: no LEAVE" in capsys.readouterr().err
    kept = int((tmp_path / "state" / "incarnation").read_text())
    assert kept == first.engine.incarnation
    second = daemon(tmp_path)  # the same state_dir: the next life
    assert second.engine.incarnation > kept


def test_a_next_life_keeps_the_last_map_until_it_knows_its_nodes_again(tmp_path: Path, omdisc_logger: None) -> None:
    first = daemon(tmp_path)
    me = first.engine.local.node_id
    first.sink.prepare()
    first.sink.write(me, Table((Entry(me, IPv4Address("127.0.0.1")), Entry(7, IPv4Address("198.18.0.7"), 2))))
    first.stop_for_restart()
    first._shutdown()
    second = daemon(tmp_path)
    second._keep_last_map(0.0)
    for node_id, now in ((None, 0.0), (7, 0.01), (8, 0.02)):
        if node_id is not None:
            peer = IPv4Address(f"198.18.0.{node_id}")
            second.engine.receive(encode(Message(MsgType.ANNOUNCE, node_id, 1, 1, (peer,))), now, source=peer)
        second.writer.flush(second.engine, now)
        if node_id != 8:  # held: the last map (#7 and #8) stays for readers
            assert second.writer.written is None and second.writer.next_due(second.engine) == \
                first_map_wait(second.engine.settings, 3)
    assert second.writer.written is not None  # #7 and #8 back: written at once
    assert node_ids(second.writer.written.entries) == {me, 7, 8}
    fresh = daemon(tmp_path / "fresh")  # no last life: nothing to keep
    fresh.sink.prepare()
    fresh._keep_last_map(0.0)
    fresh.writer.flush(fresh.engine, 0.0)
    assert fresh.writer.written is not None


def test_sigterm_still_sends_leave_even_after_a_restart_was_asked(tmp_path: Path, omdisc_logger: None) -> None:
    d = daemon(tmp_path)
    d.stop_for_restart()
    d.stop()  # systemctl stop while a restart is pending: a stop wins
    out = d.farewell()
    assert [decode(o.data).type for o in out] == [MsgType.LEAVE]
    assert decode(out[0].data).incarnation == d.engine.incarnation


def test_the_restart_signal_is_the_one_the_unit_and_init_script_send_and_every_signal_is_documented() -> None:
    assert SIGNALS[RESTART_SIGNAL] == "stop_for_restart"
    assert all(callable(getattr(Daemon, method)) for method in SIGNALS.values())
    unit = (ROOT / "systemd" / "omdiscd.service").read_text()
    assert re.findall(r"^RestartKillSignal=(\S+)$", unit, flags=re.M) == [RESTART_SIGNAL.name]
    assert re.search(r"^KillSignal=", unit, flags=re.M) is None  # a stop is SIGTERM: LEAVE
    init = (ROOT / "debian" / "omdiscd.init").read_text()
    restart = init.split("\n  restart)\n", 1)[1].split(";;", 1)[0]
    assert f"--retry {RESTART_SIGNAL.name.removeprefix('SIG')}/" in restart
    page = (ROOT / "man" / "omdiscd.8").read_text()
    section = page.split("\n.SH SIGNALS\n", 1)[1].split("\n.SH ", 1)[0]
    headed = {s for line in re.findall(r"^\.TP\n\.BR? (.+)$", section, flags=re.M)
              for s in re.findall(r"SIG[A-Z0-9]+", line)}
    assert headed == {s.name for s in SIGNALS}


@pytest.mark.parametrize("checked_first", [True, False], ids=["checked before detaching", "taken just after the check"])
def test_a_second_omdiscd_fails_on_the_pid_file_and_leaves_the_running_ones_incarnation(
        tmp_path: Path, omdisc_logger: None, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        checked_first: bool) -> None:
    for name in ("JOURNAL_STREAM", "NOTIFY_SOCKET", "RUNTIME_DIRECTORY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(keyfile, "DEFAULT_KEY_FILE", tmp_path / "no.key")
    state, pid = tmp_path / "state", tmp_path / "run" / "omdiscd.pid"
    state.mkdir()
    (state / "incarnation").write_text("1700000000000000\n")  # the running one's life
    (tmp_path / "omdiscd.yaml").write_text(f"interfaces: lo\nkernel: alpha\nalpha_dir: {tmp_path / 'run'}\n"
                                           f"pid_file: {pid}\nstate_dir: {state}\n")
    running = PidFile(pid)
    running.acquire()  # the omdiscd that runs: the lock is on its open file, as in another process
    if not checked_first:  # it took the pid file between our check and our start
        monkeypatch.setattr(PidFile, "check", lambda self: None)
    try:
        assert main(["-n", "-c", str(tmp_path / "omdiscd.yaml")]) == EXIT_FAILURE
    finally:
        running.release()
    assert f"omdiscd is already running (pid {os.getpid()}, pid file {pid})" in capsys.readouterr().err
    assert (state / "incarnation").read_text() == "1700000000000000\n"
    assert sorted(p.name for p in state.iterdir()) == ["incarnation"]
