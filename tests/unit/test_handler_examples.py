"""The example handlers (examples/handlers): omdisc-hosts writes a hosts file as dnsmasq's
addn-hosts reads it; omdisc-file-sd a targets file in Prometheus' documented file_sd format.
Both run as programs, as omdiscd runs them: the map (showmap --json) on stdin. (The hosts file
is also served by a real dnsmasq in tests/integration/test_handler_examples.py.)"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
HOSTS = ROOT / "examples" / "handlers" / "omdisc-hosts"
FILE_SD = ROOT / "examples" / "handlers" / "omdisc-file-sd"

# what showmap --json prints (trimmed): this node 267, a gateway 268 with both families, a node
# without an id, one leaving, one with a link-local address only besides its IPv6 one
MAP: dict[str, Any] = {
    "node_id": 267,
    "entries": [{"id": 267, "ip": "198.18.1.11", "count": 2}],
    "addresses": ["198.18.1.11"],
    "members": [
        {"id": 268, "addresses": ["198.18.1.12", "2001:db8::c"], "incarnation": 3, "age": 0.5, "via": None,
         "gateway": True, "leaving": False, "firsthand": True},
        {"id": 0, "addresses": ["2001:db8::6"], "incarnation": 1, "age": 1.0, "via": None, "gateway": False,
         "leaving": False, "firsthand": True},
        {"id": 300, "addresses": ["198.18.1.44"], "incarnation": 1, "age": 1.0, "via": None, "gateway": False,
         "leaving": True, "firsthand": True},
        {"id": 301, "addresses": ["fe80::1%eth0", "2001:db8::2d"], "incarnation": 1, "age": 1.0, "via": None,
         "gateway": False, "leaving": False, "firsthand": True},
    ],
    "gateways": [], "interfaces": ["eth0"], "gateway": False, "keys": [], "stats": {"received": 5},
}

LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
TARGET = re.compile(r"(?:\[[0-9a-fA-F:.]+\]|[^\[\]:/\s]+):[0-9]{1,5}")


def run(program: Path, stdin: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("OMDISC_")}
    return subprocess.run([str(program)], input=stdin, capture_output=True, text=True, timeout=30,
                          env={**base, **env}, check=False)


def host_lines(path: Path) -> list[tuple[str, str]]:
    lines = [line.split() for line in path.read_text().splitlines() if line and not line.startswith("#")]
    assert all(len(fields) == 2 for fields in lines), lines
    return [(a, n) for a, n in lines]


# --- omdisc-hosts -------------------------------------------------------------------------------


def test_hosts_has_every_address_of_every_node_and_this_one(tmp_path: Path) -> None:
    out = tmp_path / "hosts"
    r = run(HOSTS, json.dumps(MAP), {"OMDISC_HOSTS_FILE": str(out)})
    assert (r.returncode, r.stderr) == (0, "")
    assert sorted(host_lines(out)) == sorted([
        ("198.18.1.11", "node267"),
        ("198.18.1.12", "node268"), ("2001:db8::c", "node268"),
        ("2001:db8::6", "node-2001-db8--6"),  # no id: named by its address
        ("2001:db8::2d", "node301"),  # the link-local address left out
    ])  # 300 announced it leaves: gone
    assert out.stat().st_mode & 0o777 == 0o644  # dnsmasq reads it after dropping root
    assert [p.name for p in tmp_path.iterdir()] == ["hosts"]  # no temporary file left


def test_hosts_replaces_the_file_atomically_and_only_when_it_changes(tmp_path: Path) -> None:
    out = tmp_path / "hosts"
    out.write_text("198.18.9.9 stale\n")
    before = out.stat().st_ino
    assert run(HOSTS, json.dumps(MAP), {"OMDISC_HOSTS_FILE": str(out)}).returncode == 0
    first = out.stat()
    assert first.st_ino != before  # a new file renamed over the old one, never rewritten in place
    assert ("198.18.9.9", "stale") not in host_lines(out)
    assert run(HOSTS, json.dumps(MAP), {"OMDISC_HOSTS_FILE": str(out)}).returncode == 0
    assert out.stat().st_ino == first.st_ino  # the same map: the file is left alone
    fewer = {**MAP, "members": MAP["members"][:1]}
    assert run(HOSTS, json.dumps(fewer), {"OMDISC_HOSTS_FILE": str(out)}).returncode == 0
    assert out.stat().st_ino != first.st_ino
    assert {n for _, n in host_lines(out)} == {"node267", "node268"}


def test_hosts_without_members_names_this_node_only(tmp_path: Path) -> None:
    out = tmp_path / "hosts"
    assert run(HOSTS, json.dumps({"node_id": 0, "addresses": ["198.18.1.11"]}),
               {"OMDISC_HOSTS_FILE": str(out)}).returncode == 0
    assert host_lines(out) == [("198.18.1.11", "node-198-18-1-11")]


@pytest.mark.parametrize(("stdin", "says"), [
    ("{not json", "not JSON"),
    ("", "not JSON"),
    ("[1, 2]", "not a JSON object"),
    ('{"entries": []}', "no node_id"),
    ('{"node_id": "x"}', "not a node id"),
    ('{"node_id": 1, "members": {}}', "members is not a list"),
    ('{"node_id": 1, "members": [{"id": 2, "addresses": ["nowhere"]}]}', "not an IP address"),
])
def test_hosts_bad_input_is_one_line_and_exit_1_and_the_file_is_kept(tmp_path: Path, stdin: str, says: str) -> None:
    out = tmp_path / "hosts"
    out.write_text("198.18.1.11 node267\n")
    r = run(HOSTS, stdin, {"OMDISC_HOSTS_FILE": str(out)})
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.startswith("omdisc-hosts: bad input: ") and says in r.stderr
    assert r.stderr.count("\n") == 1
    assert out.read_text() == "198.18.1.11 node267\n"


def test_hosts_unwritable_directory_is_one_line_and_exit_1(tmp_path: Path) -> None:
    r = run(HOSTS, json.dumps(MAP), {"OMDISC_HOSTS_FILE": str(tmp_path / "missing" / "hosts")})
    assert r.returncode == 1 and r.stderr.startswith("omdisc-hosts: cannot write ") and r.stderr.count("\n") == 1


def test_hosts_signals_dnsmasq_only_when_the_pid_file_names_one(tmp_path: Path) -> None:
    """A stale pid file (another program has the number, or none) gets no SIGHUP; a process
    named dnsmasq does, and only when the file changed."""
    fake = tmp_path / "dnsmasq"  # a stand-in called dnsmasq (comm) that counts its SIGHUPs
    hups = tmp_path / "hups"
    fake.write_text("#!/bin/sh\ntrap 'echo hup >> " + str(hups) + "' HUP\n"
                    "while :; do sleep 0.05; done\n")
    fake.chmod(0o755)
    other = subprocess.Popen(["sleep", "30"])
    proc = subprocess.Popen([str(fake)])
    pidfile = tmp_path / "dnsmasq.pid"
    out = tmp_path / "hosts"
    env = {"OMDISC_HOSTS_FILE": str(out), "OMDISC_DNSMASQ_PIDFILE": str(pidfile)}
    try:
        assert run(HOSTS, json.dumps(MAP), env).returncode == 0  # no pid file yet: no signal, no error
        pidfile.write_text(f"{other.pid}\n")
        out.unlink()
        assert run(HOSTS, json.dumps(MAP), env).returncode == 0
        assert other.poll() is None  # `sleep` is not dnsmasq: not signalled (SIGHUP would end it)
        pidfile.write_text(f"{proc.pid}\n")
        out.unlink()
        assert run(HOSTS, json.dumps(MAP), env).returncode == 0

        def count() -> int:
            return len(hups.read_text().splitlines()) if hups.exists() else 0

        deadline = 50
        while count() < 1 and deadline:
            subprocess.run(["sleep", "0.1"], check=True)
            deadline -= 1
        assert count() == 1
        assert run(HOSTS, json.dumps(MAP), env).returncode == 0  # unchanged: no reload
        subprocess.run(["sleep", "0.3"], check=True)
        assert count() == 1
    finally:
        for p in (other, proc):
            p.kill()
            p.wait()


# --- omdisc-file-sd -----------------------------------------------------------------------------


def check_file_sd(data: Any) -> None:
    """Prometheus' file_sd format (docs: configuration, <file_sd_config>): a list of static
    configs, each exactly "targets" (a list of host:port strings) and optionally "labels" (label
    names as in the data model, not reserved "__", to string values)."""
    assert isinstance(data, list)
    for group in data:
        assert isinstance(group, dict) and set(group) <= {"targets", "labels"} and "targets" in group
        assert isinstance(group["targets"], list)
        for t in group["targets"]:
            assert isinstance(t, str) and TARGET.fullmatch(t), t
            assert 1 <= int(t.rsplit(":", 1)[1]) <= 65535
        labels = group.get("labels", {})
        assert isinstance(labels, dict)
        for k, v in labels.items():
            assert LABEL_NAME.fullmatch(k) and not k.startswith("__"), k
            assert isinstance(v, str)


def test_file_sd_is_one_group_per_node_in_prometheus_format(tmp_path: Path) -> None:
    out = tmp_path / "file_sd.json"
    r = run(FILE_SD, json.dumps(MAP), {"OMDISC_FILE_SD_FILE": str(out)})
    assert (r.returncode, r.stderr) == (0, "")
    data = json.loads(out.read_text())
    check_file_sd(data)
    assert data == [
        {"targets": ["[2001:db8::6]:9100"], "labels": {"omdisc_node_id": "0", "omdisc_gateway": "false"}},
        {"targets": ["198.18.1.11:9100"], "labels": {"omdisc_node_id": "267", "omdisc_gateway": "false"}},
        {"targets": ["198.18.1.12:9100"], "labels": {"omdisc_node_id": "268", "omdisc_gateway": "true"}},
        {"targets": ["[2001:db8::2d]:9100"], "labels": {"omdisc_node_id": "301", "omdisc_gateway": "false"}},
    ]
    assert out.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["file_sd.json"]


def test_file_sd_port_from_the_environment_and_atomic_replacement(tmp_path: Path) -> None:
    out = tmp_path / "file_sd.json"
    out.write_text("[]\n")
    before = out.stat().st_ino
    r = run(FILE_SD, json.dumps(MAP), {"OMDISC_FILE_SD_FILE": str(out), "OMDISC_FILE_SD_PORT": "9273"})
    assert r.returncode == 0
    assert out.stat().st_ino != before
    data = json.loads(out.read_text())
    check_file_sd(data)
    assert {t.rsplit(":", 1)[1] for g in data for t in g["targets"]} == {"9273"}
    r = run(FILE_SD, json.dumps(MAP), {"OMDISC_FILE_SD_FILE": str(out), "OMDISC_FILE_SD_PORT": "0"})
    assert r.returncode == 1 and "OMDISC_FILE_SD_PORT" in r.stderr and r.stderr.count("\n") == 1


@pytest.mark.parametrize("stdin", ["{not json", "[]", '{"node_id": 1, "members": [{"id": 2, "addresses": [7]}]}'])
def test_file_sd_bad_input_is_one_line_and_exit_1(tmp_path: Path, stdin: str) -> None:
    out = tmp_path / "file_sd.json"
    r = run(FILE_SD, stdin, {"OMDISC_FILE_SD_FILE": str(out)})
    assert r.returncode == 1 and r.stderr.startswith("omdisc-file-sd: bad input: ") and r.stderr.count("\n") == 1
    assert not out.exists()


def test_file_sd_passes_promtool(tmp_path: Path) -> None:
    """Prometheus' own tool: a configuration using the file, checked by promtool (which reads and
    validates the file_sd files it names)."""
    if not shutil.which("promtool"):
        pytest.fail("promtool is not installed: run tools/setup.sh (make setup) first (Debian: prometheus)")
    out = tmp_path / "file_sd.json"
    assert run(FILE_SD, json.dumps(MAP), {"OMDISC_FILE_SD_FILE": str(out)}).returncode == 0
    config = tmp_path / "prometheus.yml"
    config.write_text(f"scrape_configs:\n  - job_name: omdisc\n    file_sd_configs:\n      - files: [{out}]\n")
    r = subprocess.run(["promtool", "check", "config", str(config)], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
