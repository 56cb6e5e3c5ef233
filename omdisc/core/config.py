"""The configuration: keys, types, defaults, validation. Pure, and free of PyYAML: the YAML text is
omdisc.core.yamlconfig's (with its file:line errors), reading the files omdisc.shell.configfiles's.

Every key is a field of Config with its default, and has its parser in PARSERS; the man page
omdiscd.yaml(5) and the shipped /etc/omdiscd/omdiscd.yaml list the same keys (a test checks they agree).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path

from omdisc.core.events import KINDS as EVENT_KINDS
from omdisc.core.protocol import MAX_NODE_ID
from omdisc.core.records import field, fields, record, replace

TYPE_CHECKING = False  # typing is mypy's only: never loaded at run time (docs/architecture.md)
if TYPE_CHECKING:
    from typing import Any

DEFAULT_PATH = Path("/etc/omdiscd/omdiscd.yaml")
DEFAULT_KEY_FILE = Path("/etc/omdiscd/cluster.key")  # used when present: no key file, no authentication
MAX_INTERFACES = 6  # the seed's limit
DEBUG_CATEGORIES = ("net", "membership", "kernel", "config", "gateway")
KERNEL_MODES = ("auto", "live", "alpha")
DEFAULT_GROUP = IPv4Address("239.192.77.77")  # organization-local scope; no well-known service uses it
DEFAULT_GROUP6 = IPv6Address("ff05::7727")  # site-local scope: crosses IPv6 multicast routers, not the site edge
FAMILIES = ("ipv4", "ipv6", "both")
_IFNAME = re.compile(r"^[^\s/:]{1,15}$")


@record(frozen=True)
class HandlerSpec:
    """One entry of `handlers`: the program `run` is started for each event of these kinds."""

    events: tuple[str, ...]
    run: Path

    def wants(self, kind: str) -> bool:
        return kind in self.events


class ItemError(ValueError):
    """A bad item of a list value: the error names the line of item `index`."""

    def __init__(self, message: str, index: int) -> None:
        super().__init__(message)
        self.index = index


class ConfigError(ValueError):
    """A bad configuration value; str() is the one line the user sees."""

    def __init__(self, message: str, source: str | None = None, line: int | None = None) -> None:
        where = f"{source}:{line}: " if source and line else f"{source}: " if source else ""
        super().__init__(where + message)


@record(frozen=True)
class Config:
    """The settings in force, one field per key of omdiscd.yaml (PARSERS reads each)."""

    interfaces: tuple[str, ...] = ()
    multicast_ttl: int | None = None
    group: IPv4Address = DEFAULT_GROUP
    group6: IPv6Address = DEFAULT_GROUP6
    port: int = 7727
    family: str = "ipv4"
    route: bool = True
    kernel: str = "auto"
    alpha_dir: Path = Path("/run/omdiscd")
    pid_file: Path = Path("/run/omdiscd/omdiscd.pid")
    announce_interval: float = 10.0
    dead_interval: float = 35.0
    remove_on_leave: bool = True
    node_id: int | None = None
    debug: tuple[str, ...] = field(default=())
    max_nodes: int = 4096
    state_dir: Path = Path("/var/lib/omdiscd")
    key_file: Path | None = None  # None: DEFAULT_KEY_FILE if it exists; a named file must exist
    max_clock_skew: float = 5.0
    handlers: tuple[HandlerSpec, ...] = ()
    handler_timeout: float = 10.0
    metrics_file: Path | None = None
    probe_interval: float = 1.0  # 0: no failure detection by probes (version 1 behaviour)
    suspicion_timeout: float = 1.5

    def overridden(self, **changes: Any) -> Config:
        """Command-line values over file values; None means 'not given'."""
        given = {k: v for k, v in changes.items() if v is not None}
        out = replace(self, **given)
        check_intervals(out)
        return out


# --- value parsers: raw YAML value -> typed value, ValueError with a message otherwise ----------


def _describe(value: object) -> str:
    return repr(value) if not isinstance(value, (dict, list)) else type(value).__name__


def _names(value: object, what: str) -> list[str]:
    if isinstance(value, str):
        items = [v.strip() for v in value.split(",")] if value.strip() else []
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        items = [v.strip() for v in value]
    else:
        raise ValueError(f"expected a list of {what} or a comma-separated string, got {_describe(value)}")
    return items


def parse_interfaces(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    names = _names(value, "interface names")
    if len(names) > MAX_INTERFACES:
        raise ValueError(f"at most {MAX_INTERFACES} interfaces, got {len(names)}")
    for name in names:
        if not _IFNAME.match(name):
            raise ValueError(f"{name!r} is not a valid interface name")
    dups = sorted({n for n in names if names.count(n) > 1})
    if dups:
        raise ValueError(f"interface {dups[0]!r} is listed twice")
    return tuple(names)


def parse_debug(value: object) -> tuple[str, ...]:
    if value is None or value is False:
        return ()
    names = _names(value, "debug categories")
    allowed = (*DEBUG_CATEGORIES, "all")
    for name in names:
        if name not in allowed:
            raise ValueError(f"unknown debug category {name!r} (choose from {', '.join(allowed)})")
    return DEBUG_CATEGORIES if "all" in names else tuple(dict.fromkeys(names))


def _int(value: object, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected an integer {lo}..{hi}, got {_describe(value)}")
    if not lo <= value <= hi:
        raise ValueError(f"{value} is out of range {lo}..{hi}")
    return value


def parse_ttl(value: object) -> int | None:
    return None if value is None else _int(value, 1, 255)


def parse_port(value: object) -> int:
    return _int(value, 1, 65535)


def parse_node_id(value: object) -> int | None:
    return None if value is None else _int(value, 1, MAX_NODE_ID)


def _seconds(lo: float, hi: float, zero: str = "") -> Callable[[object], float]:
    """A parser of a number of seconds in lo..hi; `zero`: what 0 means, where 0 is allowed too."""
    def parse_seconds(value: object) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"expected a number of seconds, got {_describe(value)}")
        if not (lo <= value <= hi or (zero and value == 0)):
            raise ValueError(f"{value} is out of range {lo:g}..{hi:g} seconds" + (f" (0: {zero})" if zero else ""))
        return float(value)
    return parse_seconds


parse_seconds = _seconds(0.05, 86400)
parse_skew = _seconds(0.01, 3600)
parse_handler_timeout = _seconds(0.1, 3600)
parse_probe_interval = _seconds(0.1, 60, zero="no probes")
parse_suspicion = _seconds(0.2, 600)


def parse_bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {_describe(value)}")
    return value


def _multicast(value: object, version: int) -> IPv4Address | IPv6Address:
    try:
        addr = ip_address(value) if isinstance(value, str) else None
    except ValueError:
        addr = None
    if addr is None or addr.version != version or not addr.is_multicast:
        scope = "224.0.0.0/4" if version == 4 else "ff00::/8"
        raise ValueError(f"expected an IPv{version} multicast address ({scope}), got {_describe(value)}")
    return addr


def parse_group(value: object) -> IPv4Address:
    return IPv4Address(_multicast(value, 4))


def parse_group6(value: object) -> IPv6Address:
    return IPv6Address(_multicast(value, 6))


def parse_family(value: object) -> str:
    if value not in FAMILIES:
        raise ValueError(f"expected one of {', '.join(FAMILIES)}, got {_describe(value)}")
    return str(value)


def parse_kernel(value: object) -> str:
    if value not in KERNEL_MODES:
        raise ValueError(f"expected one of {', '.join(KERNEL_MODES)}, got {_describe(value)}")
    return str(value)


def parse_path(value: object) -> Path:
    if not isinstance(value, str) or not value.startswith("/"):
        raise ValueError(f"expected an absolute path, got {_describe(value)}")
    if "\0" in value:
        raise ValueError("a path cannot contain a NUL byte")
    return Path(value)


def parse_optional_path(value: object) -> Path | None:
    return None if value is None else parse_path(value)


def parse_max_nodes(value: object) -> int:
    return _int(value, 16, 1_000_000)


def _handler(item: object) -> HandlerSpec:
    if not isinstance(item, dict):
        raise ValueError(f"expected a mapping with 'events' and 'run', got {_describe(item)}")
    unknown = sorted(str(k) for k in item if k not in ("events", "run"))
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r} (known: events, run)")
    if "events" not in item or "run" not in item:
        raise ValueError(f"'{'events' if 'events' not in item else 'run'}' is missing")
    kinds = _names(item["events"], "event kinds")
    if not kinds:
        raise ValueError(f"events: none given (choose from {', '.join(EVENT_KINDS)})")
    for kind in kinds:
        if kind not in EVENT_KINDS:
            raise ValueError(f"unknown event {kind!r} (choose from {', '.join(EVENT_KINDS)})")
    try:
        run = parse_path(item["run"])
    except ValueError as e:
        raise ValueError(f"run: {e}") from None
    return HandlerSpec(tuple(dict.fromkeys(kinds)), run)


def parse_handlers(value: object) -> tuple[HandlerSpec, ...]:
    """A list of {events: [...], run: /path}; an error names the line of the bad entry."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ValueError(f"expected a list of {{events: [...], run: /path}}, got {_describe(value)}")
    specs = []
    for i, item in enumerate(value):
        try:
            specs.append(_handler(item))
        except ValueError as e:
            raise ItemError(f"entry {i + 1}: {e}", i) from None
    return tuple(specs)


PARSERS: dict[str, Callable[[object], Any]] = {
    "interfaces": parse_interfaces,
    "multicast_ttl": parse_ttl,
    "group": parse_group,
    "group6": parse_group6,
    "port": parse_port,
    "family": parse_family,
    "route": parse_bool,
    "kernel": parse_kernel,
    "alpha_dir": parse_path,
    "pid_file": parse_path,
    "announce_interval": parse_seconds,
    "dead_interval": parse_seconds,
    "remove_on_leave": parse_bool,
    "node_id": parse_node_id,
    "debug": parse_debug,
    "max_nodes": parse_max_nodes,
    "state_dir": parse_path,
    "key_file": parse_optional_path,
    "max_clock_skew": parse_skew,
    "handlers": parse_handlers,
    "handler_timeout": parse_handler_timeout,
    "metrics_file": parse_optional_path,
    "probe_interval": parse_probe_interval,
    "suspicion_timeout": parse_suspicion,
}
assert set(PARSERS) == {f.name for f in fields(Config)}


def check_intervals(cfg: Config) -> None:
    if cfg.dead_interval <= cfg.announce_interval:
        raise ConfigError(
            f"dead_interval ({cfg.dead_interval:g}) must be longer than announce_interval "
            f"({cfg.announce_interval:g}); three times or more is advised"
        )


# --- plain values: what YAML (yamlconfig.dump) and JSON (the daemon's config reader) carry --------


def plain(cfg: Config) -> dict[str, Any]:
    """A config as plain values (strings, numbers, booleans, None, lists, mappings) that PARSERS read
    back to the same config."""
    out: dict[str, Any] = {}
    for f in fields(cfg):
        v = getattr(cfg, f.name)
        if f.name == "handlers":
            v = [{"events": list(h.events), "run": str(h.run)} for h in v]
        out[f.name] = list(v) if isinstance(v, tuple) else str(v) if isinstance(v, (Path, IPv4Address,
                                                                                      IPv6Address)) else v
    return out


def from_plain(values: dict[str, Any]) -> Config:
    """plain()'s values typed back into a Config, each by its key's parser."""
    return Config(**{key: PARSERS[key](value) for key, value in values.items()})
