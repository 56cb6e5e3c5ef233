"""SIGHUP reads the configuration files again, in a short-lived child (omdisc/shell/configfiles.py):
a broken file is told in the one line the user saw before, with file and line, and the running
configuration stays. A real Daemon on the loopback interface, built but never run: a reload that
fails opens and sends nothing (a good reload opens sockets: tests/integration/test_discovery.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from omdisc.core.config import ConfigError
from omdisc.daemon import Daemon
from omdisc.shell.addresses import make_plan
from omdisc.shell.configfiles import ConfigSource, load
from omdisc.shell.journal import LogControl
from omdisc.shell.sinks import AlphaSink

BROKEN = [
    ("announce_interval: 5\n\ninterfaces: [lo\n", None, ":3: YAML syntax error"),
    ("port: 7727\nmulticast_ttl: lots\n", None, ":2: multicast_ttl: expected an integer 1..255, got 'lots'"),
    ("announce_interval: 10\ndead_interval: 5\n", None, ":2: dead_interval (5) must be longer than"),
    ("port: 9000\n", "port: 0\n", "conf.d/50-site.yaml:1: port: 0 is out of range 1..65535"),
]


@pytest.mark.parametrize(("main_text", "drop_in", "said"), BROKEN)
def test_a_broken_file_at_reload_is_the_same_one_line_and_the_running_config_stays(
        tmp_path: Path, omdisc_logger: None, capsys: pytest.CaptureFixture[str],
        main_text: str, drop_in: str | None, said: str) -> None:
    path = tmp_path / "omdiscd.yaml"
    path.write_text(f"interfaces: [lo]\nkernel: alpha\nalpha_dir: {tmp_path / 'run'}\n"
                    f"pid_file: {tmp_path / 'run' / 'pid'}\nstate_dir: {tmp_path / 'state'}\ndebug: net\n")
    source = ConfigSource(path, {"multicast_ttl": None})
    cfg = source.reread()
    daemon = Daemon(cfg, source, LogControl("stderr", cfg.debug), make_plan(cfg), AlphaSink(tmp_path / "run"))
    path.write_text(main_text)
    if drop_in is not None:
        (tmp_path / "conf.d").mkdir()
        (tmp_path / "conf.d" / "50-site.yaml").write_text(drop_in)
    with pytest.raises(ConfigError) as in_process:  # what omdiscd -c says of these files, and showmap
        load(path)
    capsys.readouterr()
    daemon.reload()
    err = capsys.readouterr().err
    failed = [line for line in err.splitlines() if "reload failed" in line]
    assert len(failed) == 1 and "Traceback" not in err, err
    assert failed[0].endswith(f"reload failed, the running configuration stays: {in_process.value}")
    assert said in failed[0] and str(tmp_path) in failed[0]
    assert daemon.cfg is cfg and daemon.cfg.debug == ("net",)
