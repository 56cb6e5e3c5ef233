from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path

import pytest

from omdisc.config import Config, ConfigError, dump_defaults, load, parse


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
