"""What a user typing omdiscd / showmap sees when something is wrong: one line, the right status."""

from __future__ import annotations

import base64
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.lab.netlab import REPO, Lab, wait_for


def omdiscd(*args: str, ns: str | None = None) -> subprocess.CompletedProcess[str]:
    cmd = (["ip", "netns", "exec", ns] if ns else []) + [sys.executable, "-m", "omdisc.daemon", *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=20,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


def one_line(r: subprocess.CompletedProcess[str]) -> str:
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-i", "a,b,c,d,e,f,g"], "at most 6 interfaces"),
        (["-i", "eth0,eth0"], "'eth0' is listed twice"),
        (["-i", ""], "at least one interface"),
        (["-m", "0"], "out of range 1..255"),
        (["-m", "x"], "expected an integer"),
        (["-d", "nett"], "unknown debug category 'nett'"),
        (["--frobnicate"], "unrecognized arguments"),
        (["-c", ""], "expected a path, got ''"),
    ],
)
def test_bad_command_line_is_one_line_and_status_2(args: list[str], message: str) -> None:
    r = omdiscd(*args)
    assert r.returncode == 2
    assert message in one_line(r)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("interfaces: [eth0]\nmulticast_tll: 3\n", ":2: unknown key 'multicast_tll'"),
        ("port: 7727\nmulticast_ttl: lots\n", ":2: multicast_ttl: expected an integer 1..255, got 'lots'"),
        ("group: 10.1.2.3\n", ":1: group: expected an IPv4 multicast address"),
        ("announce_interval: 5\n\ninterfaces: [eth0\n", ":3: YAML syntax error"),
        ("announce_interval: 10\ndead_interval: 5\n", "dead_interval (5) must be longer than announce_interval"),
        ("- just\n- a list\n", ":1: expected a mapping"),
        ("remove_on_leave: 1\n", ":1: remove_on_leave: expected true or false, got 1"),
        ('alpha_dir: "/run/om\\0x"\n', ":1: alpha_dir: a path cannot contain a NUL byte"),
        ('pid_file: "/run/\\0"\n', ":1: pid_file: a path cannot contain a NUL byte"),
        ("max_nodes: 3\n", ":1: max_nodes: 3 is out of range 16..1000000"),
    ],
)
def test_bad_config_file_is_one_line_naming_file_and_line_status_78(tmp_path: Path, text: str, message: str) -> None:
    cfg = tmp_path / "omdiscd.yaml"
    cfg.write_text(text)
    r = omdiscd("-n", "-c", str(cfg))
    assert r.returncode == 78
    line = one_line(r)
    assert line.startswith(f"omdiscd: {cfg}") and message in line


def test_a_key_file_others_may_read_is_refused_and_keys_are_made_by_gen_key(tmp_path: Path) -> None:
    key = omdiscd("--gen-key").stdout.strip()
    assert len(base64.b64decode(key)) == 32 and omdiscd("--gen-key").stdout.strip() != key
    path = tmp_path / "cluster.key"
    path.write_text(key + "\n")
    path.chmod(0o644)
    cfg = tmp_path / "omdiscd.yaml"
    cfg.write_text(f"key_file: {path}\n")
    for args in (["-n", "-c", str(cfg)], ["--check-config", "-c", str(cfg)]):
        r = omdiscd(*args)
        assert r.returncode == 78 and f"chmod 600 {path}" in one_line(r)
    path.chmod(0o600)
    r = omdiscd("--check-config", "-c", str(cfg))
    assert r.returncode == 0 and "# cluster key: 1 key(s)" in r.stdout and key not in r.stdout


def test_missing_named_config_is_an_error(tmp_path: Path) -> None:
    r = omdiscd("-n", "-c", str(tmp_path / "nope.yaml"))
    assert r.returncode == 78
    assert "no such file" in one_line(r)


def test_help_wraps_at_one_width_whatever_the_terminal() -> None:
    for columns in ("40", "80", "200"):
        out = subprocess.run([sys.executable, "-m", "omdisc.daemon", "-h"], capture_output=True, text=True, cwd=REPO,
                             env={**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": columns}).stdout
        assert max(map(len, out.splitlines())) <= 79, columns
        files = [line for line in out.split("files:\n")[1].split("\n\n")[0].splitlines()]
        starts = {m.start(1) for line in files if (m := re.search(r"\S {2,}(\S)", line))}
        assert len(starts) == 1 and len(files) >= 5  # one column for what they are


def test_help_and_version() -> None:
    r = omdiscd("--help")
    assert r.returncode == 0
    for opt in ("--interface", "--multicast-ttl", "--nodaemon", "--config", "--debug", "--version", "SIGUSR1"):
        assert opt in r.stdout
    assert omdiscd("--version").stdout.startswith("omdiscd ")


def _cfg(tmp: Path) -> Path:
    cfg = tmp / "c.yaml"
    cfg.write_text(f"alpha_dir: {tmp}/alpha\npid_file: {tmp}/pid\nkernel: alpha\nstate_dir: {tmp}/state\n")
    return cfg


def test_no_default_route_is_the_seeds_error(lab: Lab, tmp_path: Path) -> None:
    node = lab.node("lonely")
    r = omdiscd("-n", "-c", str(_cfg(tmp_path)), ns=node.ns)
    assert r.returncode == 1
    assert "Unable to determine address of default interface" in one_line(r)


def test_check_config_says_what_the_defaults_mean_on_this_host(lab: Lab, tmp_path: Path) -> None:
    node = lab.node("x", lab.lan(), "198.18.1.11/15")
    r = subprocess.run(["ip", "netns", "exec", node.ns, sys.executable, "-m", "omdisc.daemon", "--check-config",
                        "-c", str(_cfg(tmp_path))], capture_output=True, text=True, cwd=REPO, timeout=20)
    assert r.returncode == 0, r.stderr
    assert ("# in force here: interfaces eth0 (the default route's); node #267 (from 198.18.1.11); "
            "addresses 198.18.1.11") in r.stdout


def test_interface_that_does_not_exist(lab: Lab, tmp_path: Path) -> None:
    node = lab.node("x", lab.lan(), "198.18.0.1/24")
    r = omdiscd("-n", "-c", str(_cfg(tmp_path)), "-i", "eth0,wlan7", ns=node.ns)
    assert r.returncode == 1
    assert "interface 'wlan7' does not exist" in one_line(r)


def test_second_instance_is_refused_and_pid_file_removed_on_exit(lab: Lab, tmp_path: Path) -> None:
    node = lab.node("x", lab.lan(), "198.18.0.1/24")
    d = node.start()
    pid_file = Path(d.config["pid_file"])
    assert pid_file.read_text().strip().isdigit()
    r = omdiscd("-n", "-c", str(d.dir / "omdiscd.yaml"), ns=node.ns)
    assert r.returncode == 1
    assert "already running" in one_line(r) and str(pid_file) in r.stderr
    assert d.stop() == 0
    assert not pid_file.exists()


def test_daemon_mode_detaches_writes_pid_file_and_stops_on_sigterm(lab: Lab, tmp_path: Path) -> None:
    node = lab.node("x", lab.lan(), "198.18.0.1/24")
    cfg = _cfg(tmp_path)
    r = omdiscd("-c", str(cfg), ns=node.ns)  # no -n: the seed's classic daemon
    assert r.returncode == 0, r.stderr
    pid = int(wait_for(lambda: (tmp_path / "pid").exists() and (tmp_path / "pid").read_text().strip(), 5))
    assert (tmp_path / "alpha" / "om_config").exists()
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not (tmp_path / "pid").exists(), 5, what="pid file removed at exit")


def showmap(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "omdisc.showmap", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=20)


def test_showmap_missing_and_corrupt_files(tmp_path: Path) -> None:
    r = showmap("--alpha-dir", str(tmp_path))
    assert r.returncode == 1 and "no map at" in one_line(r)
    (tmp_path / "om_mospe").write_bytes((5).to_bytes(4, sys.byteorder))
    (tmp_path / "om_config").write_bytes(b"\x01" * 13)
    r = showmap("--alpha-dir", str(tmp_path))
    assert r.returncode == 1 and "om_config is corrupt" in one_line(r)


def test_showmap_bad_paths_are_one_line(tmp_path: Path) -> None:
    r = showmap("-c", "")
    assert r.returncode == 2 and "expected a path" in one_line(r)
    cfg = tmp_path / "nul.yaml"
    cfg.write_text('alpha_dir: "/run/\\0x"\n')  # a NUL byte, as YAML writes it
    r = showmap("-c", str(cfg))
    assert r.returncode == 78 and "a path cannot contain a NUL byte" in one_line(r)


def test_showmap_live_without_an_openmosix_kernel() -> None:
    r = showmap("--live")
    assert r.returncode == 1 and "no openMosix interface" in one_line(r)


def test_showmap_finds_the_alpha_dir_from_the_daemon_config(tmp_path: Path) -> None:
    from ipaddress import IPv4Address

    from omdisc.core.table import Entry, encode_config, encode_mospe

    alpha = tmp_path / "alpha"
    alpha.mkdir()
    (alpha / "om_mospe").write_bytes(encode_mospe(267))
    (alpha / "om_config").write_bytes(encode_config([Entry(267, IPv4Address("198.18.1.11"), 2)]))
    r = showmap("-c", str(_cfg(tmp_path)))
    assert r.returncode == 0, r.stderr
    assert r.stdout == "# this is openMosix node #267\n267 198.18.1.11 2\n"
