"""Event handlers: the config key, what the engine records, the backlog's coalescing (pure), and
real programs run by the Runner: environment and stdin, a timeout that kills, a burst bounded."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections import Counter
from ipaddress import ip_address
from pathlib import Path

import pytest

from omdisc.core.config import Config, ConfigError, HandlerSpec
from omdisc.core.engine import Settings
from omdisc.core.events import Event, Recorder
from omdisc.core.yamlconfig import dump, parse
from omdisc.shell.handlers import PARALLEL, Backlog, Capture, Runner, environment, excerpt
from omdisc.shell.loop import Loop
from tests.unit.sim import SimLan

A, B = ip_address("198.18.0.1"), ip_address("198.18.0.2")


# --- configuration ------------------------------------------------------------------------------


def test_handlers_key_parses_and_dumps_back() -> None:
    cfg = parse("handlers:\n  - events: [join, leave]\n    run: /usr/local/sbin/hosts\n"
                "  - {events: map, run: /bin/true}\nhandler_timeout: 2.5\n")
    assert cfg.handlers == (HandlerSpec(("join", "leave"), Path("/usr/local/sbin/hosts")),
                            HandlerSpec(("map",), Path("/bin/true")))
    assert cfg.handler_timeout == 2.5
    assert parse(dump(cfg)) == cfg
    assert Config().handlers == () and Config().handler_timeout == 10.0 and Config().metrics_file is None


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("handlers: /bin/true\n", 1, "expected a list"),
        ("handlers:\n  - events: [join]\n    run: /bin/true\n  - events: [joined]\n    run: /x\n", 4,
         "entry 2: unknown event 'joined'"),
        ("handlers:\n  - events: [join]\n    run: bin/true\n", 2, "entry 1: run: expected an absolute path"),
        ("handlers:\n  - run: /bin/true\n", 2, "'events' is missing"),
        ("handlers:\n  - events: []\n    run: /bin/true\n", 2, "none given"),
        ("handlers:\n  - events: [join]\n    run: /bin/true\n    shell: yes\n", 2, "unknown key 'shell'"),
        ("handlers:\n  - /bin/true\n", 2, "expected a mapping"),
        ("handler_timeout: 0\n", 1, "out of range 0.1..3600"),
        ("metrics_file: omdisc.prom\n", 1, "absolute path"),
    ],
)
def test_handler_errors_name_the_line_of_the_bad_entry(text: str, line: int, words: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse(text, "/etc/omdiscd/omdiscd.yaml")
    assert str(e.value).startswith(f"/etc/omdiscd/omdiscd.yaml:{line}: "), str(e.value)
    assert words in str(e.value) and "\n" not in str(e.value)


# --- what the engine records -----------------------------------------------------------------------


def test_the_engine_records_join_leave_and_expire_only_when_asked() -> None:
    lan = SimLan(Settings(announce_interval=1.0, dead_interval=3.0))
    a = lan.add("198.18.0.1", start=False)
    b = lan.add("198.18.0.2", start=False)
    c = lan.add("198.18.0.3", start=False)
    a.events.wanted = frozenset({"join", "leave", "expire", "update"})
    for i in range(3):
        lan.start(i)
    lan.run_until(2.0)
    assert len(b.events) == 0  # not enabled: nothing kept
    got = [e for e in a.events.drain() if e.kind != "update"]  # new incarnations at start: updates
    assert sorted((e.kind, e.node_id) for e in got) == [("join", b.local.node_id), ("join", c.local.node_id)]
    assert {e.addresses for e in got} == {(b.local.primary,), (c.local.primary,)}
    lan.stop(1)
    lan.run_until(2.5)
    assert [(e.kind, e.node_id) for e in a.events.drain() if e.kind != "update"] == [("leave", b.local.node_id)]
    lan.crash(2)  # c falls silent
    lan.run_until(10.0)
    assert [(e.kind, e.node_id) for e in a.events.drain()] == [("expire", c.local.node_id)]


def test_the_recorder_is_bounded_and_counts_what_it_cannot_keep() -> None:
    stats: Counter[str] = Counter()
    r = Recorder(stats, limit=3)
    r.add("join", 1, (A,))
    assert len(r) == 0
    r.wanted = frozenset({"join", "map"})
    r.add("leave", 9, (A,))  # a kind no handler runs for: not kept
    for i in range(5):
        r.add("join", i, (A,))
    assert len(r) == 3 and stats["handler_events_dropped"] == 2
    r.add("map", 1, (A,))
    r.add("map", 1, (A,))  # the newest map stands for all, and always finds room
    assert [(e.kind, e.node_id) for e in r.drain()] == [("join", 0), ("join", 1), ("join", 2), ("map", 1)]
    assert len(r) == 0


# --- the backlog (pure) -----------------------------------------------------------------------------


def ev(kind: str, node: int, addr: str = "198.18.0.9") -> Event:
    return Event(kind, node, (ip_address(addr),))


def test_a_waiting_map_event_stands_for_the_next() -> None:
    b = Backlog(limit=4)
    assert b.put(ev("map", 1)) == "queued"
    assert b.put(ev("join", 2)) == "queued"
    assert b.put(ev("map", 1, "198.18.0.1")) == "merged"
    assert len(b) == 2


def test_a_full_backlog_merges_the_same_news_of_a_node_and_drops_the_rest() -> None:
    b = Backlog(limit=3)
    assert [b.put(ev("join", n)) for n in (1, 2, 3)] == ["queued"] * 3
    assert b.put(ev("join", 1, "198.18.0.1")) == "merged"  # the newer addresses win
    assert b.put(ev("leave", 2)) == "dropped"  # would reorder the node's news: dropped, counted
    assert b.put(ev("join", 4)) == "dropped"  # nothing about that node waits
    assert b.put(ev("map", 1)) == "dropped"
    assert [(e.kind, e.node_id, str(e.addresses[0])) for e in (b.pop(), b.pop(), b.pop())] == [
        ("join", 1, "198.18.0.1"), ("join", 2, "198.18.0.9"), ("join", 3, "198.18.0.9")]
    assert b.pop() is None


def test_environment_and_output_excerpts() -> None:
    base = {"PATH": "/bin", "OMDISC_HOSTS_FILE": "/run/h", "OMDISC_EVENT": "stale", "NOTIFY_SOCKET": "/run/n"}
    env = environment(Event("join", 266, (A, ip_address("2001:db8::1"))), base)
    assert env == {"PATH": "/bin", "OMDISC_HOSTS_FILE": "/run/h", "OMDISC_EVENT": "join", "OMDISC_NODE_ID": "266",
                   "OMDISC_NODE_ADDRESSES": "198.18.0.1 2001:db8::1"}  # the operator's kept; systemd's not
    c = Capture(keep=8)
    c.add(b"one\ntwo\nthree")
    assert excerpt("stdout", c).splitlines() == ["", "stdout: one", "stdout: two", "stdout: ... (5 bytes more, "
                                                 "not shown)"]
    assert excerpt("stderr", Capture()) == ""


# --- real programs --------------------------------------------------------------------------------


def running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


DOC = {"node_id": 1, "entries": [{"id": 1, "ip": "198.18.0.1", "count": 2}], "members": []}


def run(runner_events: list[Event], specs: list[HandlerSpec], timeout: float = 5.0, queued: int = 64,
        stats: Counter[str] | None = None) -> tuple[Runner, Counter[str]]:
    stats = Counter() if stats is None else stats
    loop = Loop()
    runner = Runner(stats, lambda: json.dumps(DOC).encode(), loop, queued=queued, base_env={"PATH": os.defpath})
    runner.configure(specs, timeout)
    runner.submit(runner_events)
    assert loop.run_until(lambda: not runner.busy, timeout=60)
    loop.close()
    return runner, stats


def test_a_handler_gets_the_event_in_its_environment_and_the_map_on_stdin(tmp_path: Path,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "out"
    h = script(tmp_path / "h", f'env | grep ^OMDISC_ | sort > {out}.$OMDISC_NODE_ID.env\n'
               f'cat > {out}.$OMDISC_NODE_ID.json\necho "hello from $OMDISC_EVENT"\n')
    caplog.set_level(logging.INFO, "omdisc")
    _, stats = run([ev("join", 266, "198.18.1.10"), ev("update", 7), Event("leave", 267, (B, A))],
                   [HandlerSpec(("join", "leave"), h)])
    assert stats["handler_runs"] == 2 and stats["handler_failures"] == 0
    assert (tmp_path / "out.266.env").read_text().splitlines() == [
        "OMDISC_EVENT=join", "OMDISC_NODE_ADDRESSES=198.18.1.10", "OMDISC_NODE_ID=266"]
    assert (tmp_path / "out.267.env").read_text().splitlines() == [
        "OMDISC_EVENT=leave", "OMDISC_NODE_ADDRESSES=198.18.0.2 198.18.0.1", "OMDISC_NODE_ID=267"]
    assert json.loads((tmp_path / "out.266.json").read_text()) == DOC
    assert not (tmp_path / "out.7.env").exists()  # update: not asked for
    assert "for join of #266 exited 0" in caplog.text and "stdout: hello from join" in caplog.text


def test_a_failing_or_missing_handler_is_counted_and_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    bad = script(tmp_path / "bad", "echo oops >&2\nexit 3\n")
    caplog.set_level(logging.INFO, "omdisc")
    _, stats = run([ev("join", 1)], [HandlerSpec(("join",), bad), HandlerSpec(("join",), tmp_path / "none")])
    assert stats["handler_runs"] == 2 and stats["handler_failures"] == 2
    assert "exited 3" in caplog.text and "stderr: oops" in caplog.text
    assert "could not start" in caplog.text


def test_a_handler_past_its_timeout_is_killed_with_what_it_started(tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    pid_file = tmp_path / "child"
    slow = script(tmp_path / "slow", f"sleep 30 &\necho $! > {pid_file}\necho started\nwait\n")
    caplog.set_level(logging.INFO, "omdisc")
    loop_free = []
    stats: Counter[str] = Counter()
    loop = Loop()
    runner = Runner(stats, lambda: b"{}", loop, base_env={"PATH": os.defpath})
    runner.configure([HandlerSpec(("join",), slow)], 0.5)
    started = loop.clock()
    runner.submit([ev("join", 1)])
    while runner.running or not pid_file.exists():  # the loop keeps turning meanwhile
        loop_free.append(loop.clock() - started)
        sleep_started = loop.clock()
        loop.run_until(lambda: False, timeout=0.05)
        assert loop.clock() - sleep_started < 0.5  # no pass held the loop up
    assert loop.run_until(lambda: not runner.busy, timeout=60)
    loop.close()
    assert stats["handler_timeouts"] == 1 and stats["handler_failures"] == 1
    assert "did not finish within 0.5s: killed" in caplog.text and "stdout: started" in caplog.text
    assert len(loop_free) >= 5  # the loop was never held up while the handler hung
    child = int(pid_file.read_text())
    for _ in range(100):  # its child is gone too (the process group was killed): no more, or a zombie
        if not running(child):
            break
        time.sleep(0.02)
    assert not running(child)


def test_a_burst_of_200_events_never_runs_more_than_4_programs_and_counts_merges_and_drops(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    h = script(tmp_path / "h", f"mkdir {runs}/now.$$\nls {runs} | grep -c '^now' >> {tmp_path}/counts\n"
               f"sleep 0.05\nrmdir {runs}/now.$$\n")
    specs = [HandlerSpec(("join",), h) for _ in range(6)]
    burst = [ev("join", n % 100, "198.18.0.9") for n in range(200)]  # 100 nodes, each twice
    runner, stats = run(burst, specs, queued=16)
    # per handler: 16 wait, the later join of those 16 nodes is merged, the other 168 are dropped
    assert stats["handler_events_merged"] == 6 * 16
    assert stats["handler_events_dropped"] == 6 * 168
    assert stats["handler_runs"] == 6 * 16 and stats["handler_failures"] == 0
    counts = [int(n) for n in (tmp_path / "counts").read_text().split()]
    assert len(counts) == 96
    assert max(counts) <= PARALLEL and runner.peak <= PARALLEL
    assert runner.peak >= 2  # they do run side by side


def test_reconfigure_keeps_a_handler_and_forgets_a_removed_ones_backlog(tmp_path: Path) -> None:
    h = script(tmp_path / "h", "exit 0\n")

    stats: Counter[str] = Counter()
    loop = Loop()
    runner = Runner(stats, lambda: b"{}", loop, parallel=1, base_env={})
    keep, drop = HandlerSpec(("join",), h), HandlerSpec(("leave",), h)
    runner.configure([keep, drop], 5.0)
    runner.submit([ev("join", 1), ev("leave", 1), ev("leave", 2)])
    runner.configure([keep], 5.0)  # before anything ran: the leaves are forgotten
    assert loop.run_until(lambda: not runner.busy, timeout=30)
    loop.close()
    assert stats["handler_runs"] == 1


def test_a_handler_that_leaves_a_child_running_has_ended_when_it_exits(tmp_path: Path) -> None:
    """The end of a run is the program's exit, not its pipes closing: a child it leaves running,
    even in a session of its own, neither makes it a timeout nor keeps descriptors open here."""
    script = tmp_path / "bg"
    pids = tmp_path / "children"
    script.write_text(f"#!/bin/sh\nsetsid sleep 30 &\necho $! >> {pids}\necho started\nexit 0\n")
    script.chmod(0o755)

    stats: Counter[str] = Counter()
    loop = Loop()
    runner = Runner(stats, lambda: b"{}", loop)
    runner.configure([HandlerSpec(("join",), script)], 2.0)
    before = len(os.listdir("/proc/self/fd"))
    for i in range(10):
        runner.submit([Event("join", i + 1, (A,))])
    assert loop.run_until(lambda: not runner.busy, timeout=30)
    after = len(os.listdir("/proc/self/fd"))
    loop.close()
    for pid in pids.read_text().split():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), 9)
    assert stats["handler_runs"] == 10 and stats["handler_timeouts"] == 0 and stats["handler_failures"] == 0
    assert after <= before + 2


def test_close_kills_what_runs_a_retired_handlers_program_too(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    # what it writes is a pass of the loop: the condition is looked at again then
    slow = [script(tmp_path / name, f"echo $$ >> {pids}\necho started\nexec sleep 30\n") for name in ("old", "new")]
    loop = Loop()
    runner = Runner(Counter(), lambda: b"{}", loop, base_env={"PATH": os.defpath})
    runner.configure([HandlerSpec(("join",), slow[0])], 60.0)
    runner.submit([ev("join", 1)])
    assert loop.run_until(lambda: runner.running == 1 and pids.exists(), timeout=30)
    runner.configure([HandlerSpec(("join",), slow[1])], 60.0)  # the old one runs on, retired
    runner.submit([ev("join", 2)])
    assert loop.run_until(lambda: runner.running == 2 and len(pids.read_text().split()) == 2, timeout=30)
    runner.close()
    loop.close()
    for pid in map(int, pids.read_text().split()):
        for _ in range(100):  # killed: gone, or a zombie until this process exits
            if not running(pid):
                break
            time.sleep(0.02)
        assert not running(pid)
    assert runner.running == 0


def test_a_timed_out_handler_whose_leader_obeys_sigterm_leaves_no_one_of_its_group(tmp_path: Path) -> None:
    """The leader ends at SIGTERM; a child that ignores SIGTERM must not outlive the run."""
    pid_file = tmp_path / "child"
    stubborn = script(tmp_path / "stubborn", f"sh -c 'trap \"\" TERM; echo $$ > {pid_file}; exec sleep 30' &\n"
                      "exec sleep 30\n")
    _, stats = run([ev("join", 1)], [HandlerSpec(("join",), stubborn)], timeout=0.3)
    assert stats["handler_timeouts"] == 1
    child = int(pid_file.read_text())
    for _ in range(100):  # SIGKILL to the group at the end of the run: gone, or a zombie
        if not running(child):
            break
        time.sleep(0.02)
    assert not running(child)
