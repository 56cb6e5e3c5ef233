"""The metrics file: render() (pure), written by the map writer with state.json, and served by
Debian's real prometheus-node-exporter (textfile collector, on 127.0.0.1 only)."""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time
import urllib.request
from collections import Counter
from ipaddress import ip_address
from pathlib import Path

import pytest

from omdisc.core.engine import Engine, LocalNode, Settings
from omdisc.core.metrics import escape_label, render
from omdisc.shell.mapwriter import MapWriter
from omdisc.shell.sinks import AlphaSink

STATS = Counter({"received": 12, "sent": 5, "sent:ANNOUNCE": 4, "sent:LEAVE": 1, "malformed": 2,
                 "malformed:short": 2, "rejected": 1, "rejected:foreign": 1, "auth:replay": 3, "stale": 1,
                 "forwarded": 7, "map_writes": 2, "handler_runs": 9, "handler_failures": 1})
GAUGES = {"members": 3, "map_entries": 2, "collisions": 0}


def samples(text: str) -> dict[str, str]:
    return dict(line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))


def test_render_names_counters_and_gauges_the_prometheus_way() -> None:
    text = render(STATS, GAUGES)
    got = samples(text)
    assert got["omdisc_received_total"] == "12"
    assert got['omdisc_sent_total{type="announce"}'] == "4" and got['omdisc_sent_total{type="snapshot"}'] == "0"
    assert got['omdisc_malformed_total{reason="short"}'] == "2"
    assert got['omdisc_rejected_total{reason="foreign"}'] == "1"
    assert got['omdisc_auth_dropped_total{reason="replay"}'] == "3"
    assert got["omdisc_stale_total"] == "1" and got["omdisc_forwarded_total"] == "7"
    assert got["omdisc_map_writes_total"] == "2" and got["omdisc_internal_errors_total"] == "0"
    assert got["omdisc_handler_runs_total"] == "9" and got["omdisc_handler_failures_total"] == "1"
    assert got["omdisc_members"] == "3" and got["omdisc_map_entries"] == "2" and got["omdisc_collisions"] == "0"
    assert "omdisc_malformed_total" not in got and "omdisc_sent_total" not in got  # no unlabelled sums
    families = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")]
    assert len(families) == len(set(families))
    for name in families:  # HELP then TYPE, before the family's samples
        lines = text.splitlines()
        i = lines.index(next(x for x in lines if x.startswith(f"# HELP {name} ")))
        assert lines[i + 1].startswith(f"# TYPE {name} ")
        assert lines[i + 1].endswith("counter" if name.endswith("_total") else "gauge")
    assert text.endswith("\n")


def test_label_values_are_escaped() -> None:
    assert escape_label('a"b\\c\nd') == 'a\\"b\\\\c\\nd'
    assert 'omdisc_rejected_total{reason="we\\"ird\\\\"} 1' in render({"rejected:we\"ird\\": 1}, {})
    assert "# TYPE omdisc_auth_dropped_total counter" in render({}, {})  # no reason seen yet: described, no sample
    assert "omdisc_auth_dropped_total{" not in render({}, {})


def test_the_map_writer_writes_the_metrics_file_with_state_json(tmp_path: Path) -> None:
    stats: Counter[str] = Counter()
    e = Engine(LocalNode(1, (ip_address("198.18.0.1"),)), 1, Settings(), random.Random(1), wall=lambda: 1.0)
    out = tmp_path / "omdisc.prom"
    writer = MapWriter(AlphaSink(tmp_path), tmp_path, stats, dict, lambda: None, metrics_file=out,
                       gauges=lambda: {"members": 1, "map_entries": 1})
    writer.flush(e, 0.0)
    assert samples(out.read_text())["omdisc_map_writes_total"] == "1"
    assert out.stat().st_mode & 0o777 == 0o644
    writer.metrics_file = tmp_path / "no" / "such" / "dir.prom"
    writer.touch()
    writer.flush(e, 5.0)  # cannot be written: counted, the daemon goes on
    assert stats["metrics_write_errors"] == 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_node_exporter_serves_the_omdisc_series_from_our_file(tmp_path: Path) -> None:
    exporter = shutil.which("prometheus-node-exporter")
    if exporter is None:
        pytest.fail("prometheus-node-exporter is not installed: run tools/setup.sh (make setup) first")
    textfiles = tmp_path / "textfile"
    textfiles.mkdir()
    textfiles.chmod(0o755)
    stats = Counter(STATS)
    stats["rejected:we\"ird\\"] = 1  # our escaping, as node_exporter's parser reads it
    e = Engine(LocalNode(1, (ip_address("198.18.0.1"),)), 1, Settings(), random.Random(1), wall=lambda: 1.0)
    writer = MapWriter(AlphaSink(tmp_path), tmp_path, stats, dict, lambda: None,
                       metrics_file=textfiles / "omdisc.prom", gauges=lambda: GAUGES)
    writer.flush(e, 0.0)
    port = free_port()
    proc = subprocess.Popen([exporter, "--collector.disable-defaults", "--collector.textfile",
                             f"--collector.textfile.directory={textfiles}", "--web.disable-exporter-metrics",
                             f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        body = ""
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                    body = r.read().decode()
                break
            except OSError:
                assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
                time.sleep(0.1)
        got = samples(body)
        assert got.get("node_textfile_scrape_error") == "0", body
        assert got["omdisc_received_total"] == "12"
        assert got["omdisc_map_writes_total"] == "3"  # 2 before, and this write
        assert got['omdisc_sent_total{type="announce"}'] == "4"
        assert got['omdisc_auth_dropped_total{reason="replay"}'] == "3"
        assert got['omdisc_rejected_total{reason="we\\"ird\\\\"}'] == "1"
        assert got["omdisc_members"] == "3"
        assert "# TYPE omdisc_received_total counter" in body and "# TYPE omdisc_members gauge" in body
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
