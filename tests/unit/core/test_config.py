from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path

import pytest

from omdisc.core.config import Config, ConfigError
from omdisc.core.yamlconfig import dump_defaults, parse
from omdisc.shell.configfiles import load


def test_empty_file_is_the_defaults() -> None:
    assert parse("") == Config()
    assert parse("# only a comment\n") == Config()


def test_every_key() -> None:
    cfg = parse(
        "interfaces: eth1, eth0\nmulticast_ttl: 4\ngroup: 239.1.2.3\nport: 9000\nkernel: alpha\n"
        "alpha_dir: /tmp/a\npid_file: /tmp/p.pid\nannounce_interval: 0.5\ndead_interval: 2\n"
        "remove_on_leave: false\nnode_id: 77\ndebug: [net, kernel]\n"
    )
    assert cfg.interfaces == ("eth1", "eth0") and cfg.multicast_ttl == 4
    assert cfg.group == IPv4Address("239.1.2.3") and cfg.port == 9000 and cfg.kernel == "alpha"
    assert cfg.alpha_dir == Path("/tmp/a") and cfg.pid_file == Path("/tmp/p.pid")
    assert cfg.announce_interval == 0.5 and cfg.dead_interval == 2.0
    assert not cfg.remove_on_leave and cfg.node_id == 77 and cfg.debug == ("net", "kernel")
    assert parse("debug: all\n").debug == ("net", "membership", "kernel", "config", "gateway")


def test_default_group_is_administratively_scoped_and_no_well_known_one() -> None:
    group = Config().group
    assert group in __import__("ipaddress").ip_network("239.0.0.0/8")
    assert str(group) not in ("224.0.0.251", "239.255.255.250", "239.2.11.71")


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("port: 1\nport: 2\n", 2, "given twice"),
        ("node_id: 0\n", 1, "out of range 1..65535"),
        ("node_id: true\n", 1, "expected an integer"),
        ("kernel: on\n", 1, "expected one of auto, live, alpha"),
        ("alpha_dir: run/x\n", 1, "absolute path"),
        ("announce_interval: soon\n", 1, "number of seconds"),
        ("interfaces: [eth0, 'a b']\n", 1, "not a valid interface name"),
        ("\n\nbad: x: y\n", 3, "YAML syntax error: mapping values are not allowed"),
    ],
)
def test_errors_name_the_line(text: str, line: int, words: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse(text, "/etc/omdiscd/omdiscd.yaml")
    assert str(e.value).startswith(f"/etc/omdiscd/omdiscd.yaml:{line}: ")
    assert words in str(e.value)
    assert "\n" not in str(e.value)


def test_command_line_overrides_file() -> None:
    cfg = parse("interfaces: [eth0]\nmulticast_ttl: 3\n").overridden(interfaces=("eth9",), multicast_ttl=None)
    assert cfg.interfaces == ("eth9",) and cfg.multicast_ttl == 3


def test_default_file_may_be_absent_a_named_one_may_not(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load(tmp_path / "absent.yaml")
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="cannot read"):
        load(tmp_path / "bin.yaml")


def test_dumped_defaults_parse_back_to_the_defaults() -> None:
    assert parse(dump_defaults()) == Config()


def test_conf_d_drop_ins_override_in_name_order_and_errors_name_the_drop_in(tmp_path: Path) -> None:
    main = tmp_path / "omdiscd.yaml"
    main.write_text("announce_interval: 5\ndebug: net\n")
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "50-ansible.yaml").write_text("announce_interval: 2\ninterfaces: [eth1]\n")
    (tmp_path / "conf.d" / "10-early.yaml").write_text("announce_interval: 9\nport: 9000\n")
    (tmp_path / "conf.d" / "README").write_text("not yaml: ignored")
    cfg, found = load(main)
    assert found == main
    assert (cfg.announce_interval, cfg.port, cfg.interfaces, cfg.debug) == (2.0, 9000, ("eth1",), ("net",))
    (tmp_path / "conf.d" / "60-bad.yaml").write_text("\nport: http\n")
    with pytest.raises(ConfigError, match=r"60-bad.yaml:2: port: expected an integer"):
        load(main)


def test_drop_ins_apply_without_a_main_file(tmp_path: Path) -> None:
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "50-ansible.yaml").write_text("dead_interval: 3\n")
    with pytest.raises(ConfigError, match=r"50-ansible.yaml:1: dead_interval \(3\) must be longer"):
        load(None, default=tmp_path / "omdiscd.yaml")
    (tmp_path / "conf.d" / "50-ansible.yaml").write_text("dead_interval: 60\n")
    cfg, found = load(None, default=tmp_path / "omdiscd.yaml")
    assert found is None and cfg.dead_interval == 60
