"""showmap as a user runs it, against alpha files and a state.json written here: the members table,
a stale map (exit 3), and --watch redrawing through a pipe and in a real terminal (tmux)."""

from __future__ import annotations

import os
import re
import select
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest

from omdisc.core.table import Entry, Table
from omdisc.shell.sinks import AlphaSink
from omdisc.shell.statefile import write_state
from tests.lab.netlab import REPO, wait_for

ENV = {**os.environ, "PYTHONPATH": str(REPO)}
SHOWMAP = [sys.executable, "-m", "omdisc.showmap"]
NODE1 = Entry(1, IPv4Address("198.18.0.1"))
NODE266 = Entry(266, IPv4Address("198.18.1.10"))


def write_map(directory: Path, *entries: Entry, node_id: int = 1) -> None:
    """As the daemon does: om_config, then om_mospe, each by temp file + rename."""
    AlphaSink(directory).write(node_id, Table(entries))


def member(node_id: int, *addresses: str, age: float = 1.0, via: str | None = None, gateway: bool = False,
           leaving: bool = False, state: str | None = None) -> dict[str, Any]:
    m = {"id": node_id, "addresses": list(addresses), "incarnation": 1, "age": age, "via": via,
         "gateway": gateway, "leaving": leaving, "firsthand": via is None}
    if state is not None:  # what a version 2 daemon adds
        m.update(state=state, heard="gateway" if via else "direct")
    return m


def write_members(directory: Path, pid: int | None, *members: dict[str, Any]) -> None:
    state: dict[str, Any] = {"node_id": 1, "addresses": ["198.18.0.1"], "members": list(members),
                             "gateways": [], "stats": {}, "ready_at": time.time()}
    if pid is not None:
        state["pid"] = pid
    write_state(directory, state)


def showmap(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SHOWMAP, "--alpha-dir", str(directory), *args], capture_output=True, text=True,
                          cwd=REPO, env=ENV, timeout=20)


@pytest.fixture
def omdiscd_pid() -> Iterator[int]:
    """A live process whose command line says omdisc, standing in for the daemon."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "omdisc-fake"])
    yield proc.pid
    proc.kill()
    proc.wait()


@pytest.fixture
def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", ""])
    proc.wait()  # reaped: no process has this pid now
    return proc.pid


@pytest.fixture
def alpha(tmp_path: Path, omdiscd_pid: int) -> Path:
    """A live daemon's directory: a map and a state.json whose pid is running."""
    directory = tmp_path / "alpha"
    directory.mkdir()
    write_map(directory, NODE1)
    write_members(directory, omdiscd_pid)
    return directory


# --- --members ---------------------------------------------------------------------------------


def test_members_is_an_aligned_table_of_what_state_json_says(alpha: Path, omdiscd_pid: int) -> None:
    write_members(alpha, omdiscd_pid,
                  member(2, "198.18.0.2", "2001:db8::2", age=1.2, gateway=True),
                  member(266, "198.18.1.10", age=12.0, via="198.18.0.2", leaving=True),
                  member(3, "198.18.0.3", age=1.5, state="suspect"))
    r = showmap(alpha, "--members")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert [line.split() for line in lines[1:]] == [
        ["2", "198.18.0.2,2001:db8::2", "alive", lines[1].split()[3], "ago", "-", "-", "yes"],
        ["266", "198.18.1.10", "leaving", lines[2].split()[3], "ago", "-", "198.18.0.2", "no"],
        ["3", "198.18.0.3", "suspect", lines[3].split()[3], "ago", "direct", "-", "no"],
    ]
    assert re.fullmatch(r"ID +ADDRESSES +STATE +LAST HEARD +HOW HEARD +VIA +GATEWAY", lines[0])
    starts = [[m.start() for m in re.finditer(r"(?:^|(?<=  ))\S", line)] for line in lines]
    assert starts[0] == starts[1] == starts[2] == starts[3], r.stdout  # every column starts under its heading
    assert re.fullmatch(r"[12]s", lines[1].split()[3]) and re.fullmatch(r"1[23]s", lines[2].split()[3])


def test_last_heard_counts_the_time_since_state_json_was_written(alpha: Path, omdiscd_pid: int) -> None:
    write_members(alpha, omdiscd_pid, member(2, "198.18.0.2", age=2.0))
    then = time.time() - 60
    os.utime(alpha / "state.json", (then, then))
    r = showmap(alpha, "--members")
    assert r.returncode == 0 and re.search(r" 6[23]s ago ", r.stdout), r.stdout


def test_members_without_state_json_or_with_a_corrupt_one_is_status_1(tmp_path: Path) -> None:
    r = showmap(tmp_path, "--members")
    assert r.returncode == 1 and "no member list at" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "state.json").write_text('{"members": [{"id": 2}]}\n')
    r = showmap(tmp_path, "--members")
    assert r.returncode == 1 and "state.json is corrupt" in r.stderr and "Traceback" not in r.stderr


def test_members_and_json_together_is_a_bad_command_line(alpha: Path) -> None:
    assert showmap(alpha, "--members", "--json").returncode == 2


# --- a stale map -------------------------------------------------------------------------------


def test_a_map_whose_daemon_is_gone_is_said_plainly_and_status_3(alpha: Path, dead_pid: int) -> None:
    write_members(alpha, dead_pid)
    for args in ((), ("--json",), ("--members",)):
        r = showmap(alpha, *args)
        assert r.returncode == 3, (args, r.stderr)
        assert r.stderr == (f"showmap: the map in {alpha} was written by omdiscd pid {dead_pid}, "
                            "which is not running: it may be stale\n")
    assert showmap(alpha).stdout == "# this is openMosix node #1\n1 198.18.0.1 1\n"  # still shown


def test_a_running_omdiscd_makes_the_map_live(alpha: Path) -> None:
    r = showmap(alpha)
    assert (r.returncode, r.stdout, r.stderr) == (0, "# this is openMosix node #1\n1 198.18.0.1 1\n", "")


def test_a_pid_now_held_by_another_program_is_stale(alpha: Path) -> None:
    other = subprocess.Popen(["sleep", "60"])
    try:
        write_members(alpha, other.pid)
        assert showmap(alpha).returncode == 3
    finally:
        other.kill()
        other.wait()


def test_without_state_json_or_its_pid_staleness_is_unknown_not_stale(alpha: Path) -> None:
    write_members(alpha, None)
    assert showmap(alpha).returncode == 0
    (alpha / "state.json").unlink()
    assert showmap(alpha).returncode == 0


def test_json_output_is_unchanged_by_the_liveness_check(alpha: Path, omdiscd_pid: int) -> None:
    import json

    r = showmap(alpha, "--json")
    assert r.returncode == 0
    doc = json.loads(r.stdout)
    assert set(doc) == {"node_id", "entries", "addresses", "members", "gateways", "stats"}
    assert doc["entries"] == [{"id": 1, "ip": "198.18.0.1", "count": 1}]


# --- --watch through a pipe --------------------------------------------------------------------


class Reader:
    """What a process has written to a pipe so far, read as it arrives (select, never a fixed sleep)."""

    def __init__(self, stream: Any) -> None:
        self.fd = stream.fileno()
        os.set_blocking(self.fd, False)
        self.text = ""

    def pump(self) -> str:
        while select.select([self.fd], [], [], 0.05)[0]:
            chunk = os.read(self.fd, 65536)
            if not chunk:
                break
            self.text += chunk.decode()
        return self.text

    def wait_for(self, needle: str, timeout: float = 10) -> str:
        return str(wait_for(lambda: needle in self.pump() and self.text, timeout, what=repr(needle)))


@pytest.fixture
def watcher(alpha: Path) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([*SHOWMAP, "--alpha-dir", str(alpha), "--watch"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=REPO, env=ENV)
    yield proc
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def inotify_watches(pid: int) -> set[int]:
    """Inode numbers the process watches through inotify (/proc/PID/fdinfo)."""
    inodes: set[int] = set()
    for info in Path(f"/proc/{pid}/fdinfo").iterdir():
        with_watch = re.findall(r"^inotify wd:\S+ ino:([0-9a-f]+)", info.read_text(), flags=re.M)
        inodes.update(int(i, 16) for i in with_watch)
    return inodes


def stop_with_ctrl_c(proc: subprocess.Popen[bytes]) -> str:
    proc.send_signal(signal.SIGINT)
    assert proc.wait(10) == 0
    assert proc.stderr is not None
    return proc.stderr.read().decode()


def test_watch_prints_each_new_map_after_a_blank_line_and_ctrl_c_exits_0(
        alpha: Path, omdiscd_pid: int, watcher: subprocess.Popen[bytes]) -> None:
    out = Reader(watcher.stdout)
    out.wait_for("1 198.18.0.1 1\n")
    assert alpha.stat().st_ino in inotify_watches(watcher.pid)  # it waits on inotify, it does not poll
    write_members(alpha, omdiscd_pid)  # state.json rewritten, the map the same: nothing new to print
    write_map(alpha, NODE1, NODE266)
    text = out.wait_for("266 198.18.1.10 1\n")
    assert text == ("# this is openMosix node #1\n1 198.18.0.1 1\n\n"
                    "# this is openMosix node #1\n1 198.18.0.1 1\n266 198.18.1.10 1\n")
    assert stop_with_ctrl_c(watcher) == ""  # no traceback, nothing at all


def test_watch_follows_the_directory_removed_and_made_again(
        alpha: Path, omdiscd_pid: int, watcher: subprocess.Popen[bytes]) -> None:
    out, err = Reader(watcher.stdout), Reader(watcher.stderr)
    out.wait_for("1 198.18.0.1 1\n")
    shutil.rmtree(alpha)  # systemd removes the runtime directory when the daemon stops
    err.wait_for(f"showmap: no map at {alpha}/om_mospe")
    alpha.mkdir()
    write_map(alpha, NODE266, node_id=266)
    write_members(alpha, omdiscd_pid)
    out.wait_for("# this is openMosix node #266\n266 198.18.1.10 1\n")
    watcher.send_signal(signal.SIGINT)
    assert watcher.wait(10) == 0
    assert "Traceback" not in err.pump()


def test_watch_says_when_the_map_goes_stale(alpha: Path, dead_pid: int, watcher: subprocess.Popen[bytes]) -> None:
    err = Reader(watcher.stderr)
    Reader(watcher.stdout).wait_for("1 198.18.0.1 1\n")
    write_members(alpha, dead_pid)
    err.wait_for(f"omdiscd pid {dead_pid}, which is not running: it may be stale\n")
    watcher.send_signal(signal.SIGINT)
    assert watcher.wait(10) == 0


def test_watch_is_not_for_the_live_kernel_interface() -> None:
    r = subprocess.run([*SHOWMAP, "--watch", "--live"], capture_output=True, text=True, cwd=REPO, env=ENV,
                       timeout=20)
    assert r.returncode == 2 and "says nothing when it changes" in r.stderr


# --- --watch in a terminal ---------------------------------------------------------------------


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[list[str]]:
    """A tmux server of our own (its socket in tmp_path), removed after the test."""
    if shutil.which("tmux") is None:
        pytest.fail("tmux is missing: tools/setup.sh installs it")
    cmd = ["tmux", "-S", str(tmp_path / "tmux.sock")]
    yield cmd
    subprocess.run([*cmd, "kill-server"], capture_output=True)


def test_watch_in_a_terminal_redraws_the_screen_and_leaves_on_ctrl_c(
        alpha: Path, tmux: list[str], tmp_path: Path) -> None:
    env = {**ENV, "TERM": os.environ.get("TERM") or "xterm"}
    status = tmp_path / "status"
    # bash goes on after a child that handled Ctrl-C itself, and writes down its exit status (tmux's
    # own pane_dead_status is not reliable: tmux 3.3a does not always reap the pane's process)
    command = f"{shlex.join([*SHOWMAP, '--alpha-dir', str(alpha), '--watch'])}; echo $? > {shlex.quote(str(status))}"
    subprocess.run([*tmux, "new-session", "-d", "-s", "w", "-x", "200", "-y", "30", "-c", str(REPO),
                    "bash", "-c", command, ";", "set-option", "-t", "w", "remain-on-exit", "on"],
                   check=True, env=env, timeout=20)

    def screen() -> str:
        return subprocess.run([*tmux, "capture-pane", "-p", "-t", "w"], capture_output=True, text=True,
                              check=True, timeout=20).stdout

    wait_for(lambda: "1 198.18.0.1 1" in screen(), 10, what="the first map on the screen")
    write_map(alpha, NODE1, NODE266)
    shown = wait_for(lambda: "266 198.18.1.10 1" in (s := screen()) and s, 10, what="the new node on the screen")
    assert shown.count("# this is openMosix node #1") == 1, shown  # redrawn in place, not appended
    assert shown.splitlines()[0].startswith(f"showmap --watch: {alpha}, ")
    subprocess.run([*tmux, "send-keys", "-t", "w", "C-c"], check=True, timeout=20)
    wait_for(lambda: status.exists() and status.read_text().endswith("\n"), 10, what="showmap to exit")
    assert status.read_text() == "0\n"
    assert "Traceback" not in screen()


def test_watch_notices_a_daemon_that_died_though_no_file_changed(tmp_path: Path) -> None:
    daemon = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "omdisc-fake"])
    directory = tmp_path / "alpha"
    directory.mkdir()
    write_map(directory, NODE1)
    write_members(directory, daemon.pid)
    proc = subprocess.Popen([*SHOWMAP, "--alpha-dir", str(directory), "--watch"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=REPO, env=ENV)
    try:
        Reader(proc.stdout).wait_for("1 198.18.0.1 1\n")
        daemon.kill()  # no file changes: only a look now and then can tell
        daemon.wait()
        Reader(proc.stderr).wait_for(f"omdiscd pid {daemon.pid}, which is not running", timeout=15)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0
    finally:
        for p in (proc, daemon):
            if p.poll() is None:
                p.kill()
                p.wait()
