"""sd_notify as systemd sees it, from a real daemon: READY, STATUS, RELOADING, WATCHDOG, STOPPING.
With python3-systemd, and without it (the small pure fallback)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.lab.netlab import REPO, Lab, wait_for

HIDE_SYSTEMD = "import sys, runpy; sys.modules['systemd'] = None; sys.argv[0] = 'omdiscd'; " \
               "runpy.run_module('omdisc.daemon', run_name='__main__')"


def notifications(sock: socket.socket) -> list[str]:
    out = []
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except BlockingIOError:
            return out


@pytest.mark.parametrize("python_systemd", [True, False], ids=["python3-systemd", "pure-fallback"])
def test_notify_protocol(lab: Lab, tmp_path: Path, python_systemd: bool) -> None:
    node = lab.node("x", lab.lan(), "198.18.0.1/24")
    sock_path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.setblocking(False)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"alpha_dir: {tmp_path}/alpha\npid_file: {tmp_path}/pid\nkernel: alpha\n"
                   f"state_dir: {tmp_path}/state\n")
    code = ["-m", "omdisc.daemon"] if python_systemd else ["-c", HIDE_SYSTEMD]
    env = {**os.environ, "PYTHONPATH": str(REPO), "NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "400000"}
    proc = subprocess.Popen(["ip", "netns", "exec", node.ns, sys.executable, *code, "-c", str(cfg)],
                            env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        got: list[str] = []
        wait_for(lambda: got.extend(notifications(sock)) or any("READY=1" in m for m in got), 10, what="READY")
        ready = next(m for m in got if "READY=1" in m)
        assert "STATUS=node #1 on eth0: 1 node in the map" in ready
        assert f"MAINPID={proc.pid}" in ready  # under systemd it must not fork
        time.sleep(0.5)
        got += notifications(sock)
        assert sum("WATCHDOG=1" in m for m in got) >= 2  # every 0.2 s from the event loop
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: got.extend(notifications(sock)) or any("RELOADING=1" in m for m in got), 5)
        reloading = next(m for m in got if "RELOADING=1" in m)
        assert "MONOTONIC_USEC=" in reloading
        wait_for(lambda: got.extend(notifications(sock)) or "READY=1" in "".join(got[got.index(reloading):]), 5)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        got += notifications(sock)
        assert any("STOPPING=1" in m for m in got)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sock.close()
    assert b"Traceback" not in (proc.stdout.read() if proc.stdout else b"")
