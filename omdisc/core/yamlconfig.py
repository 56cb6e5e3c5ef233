"""omdiscd.yaml's text: YAML read into a Config, errors naming file and line; a Config written back
as YAML. Pure: it parses text. The one module that imports PyYAML, which the omdiscd daemon never
loads: its files are read in a short-lived child (omdisc.shell.configfiles), and only that child,
--check-config and showmap import this module.
"""

from __future__ import annotations

from collections.abc import Iterable

import yaml

from omdisc.core.config import PARSERS, Config, ConfigError, ItemError, check_intervals, plain

TYPE_CHECKING = False  # typing is mypy's only: never loaded at run time (docs/architecture.md)
if TYPE_CHECKING:
    from typing import Any


def _mapping(text: str, source: str) -> list[tuple[yaml.Node, yaml.Node]]:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        if e.context_mark and mark and mark.line >= text.count("\n"):
            mark = e.context_mark  # "found <stream end>": where the unclosed thing opened says more
        line = mark.line + 1 if mark else None
        raise ConfigError(f"YAML syntax error: {e.problem or e.context}", source, line) from None
    except yaml.YAMLError as e:
        raise ConfigError(f"YAML error: {e}", source) from None
    if node is None:
        return []
    if not isinstance(node, yaml.MappingNode):
        raise ConfigError("expected a mapping of keys to values at the top level", source, node.start_mark.line + 1)
    return list(node.value)


def _construct(node: yaml.Node) -> object:
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_object(node, deep=True)
    finally:
        loader.dispose()


Origins = dict[str, tuple[str, int]]  # key -> (file, line) that set it


def _values(text: str, source: str, origins: Origins) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key_node, value_node in _mapping(text, source):
        line = key_node.start_mark.line + 1
        key = _construct(key_node)
        if not isinstance(key, str) or key not in PARSERS:
            raise ConfigError(f"unknown key {key!r} (known: {', '.join(PARSERS)})", source, line)
        if key in values:
            raise ConfigError(f"key {key!r} given twice (first on line {origins[key][1]})", source, line)
        try:
            values[key] = PARSERS[key](_construct(value_node))
        except (ValueError, yaml.YAMLError) as e:
            at = value_node
            if isinstance(e, ItemError) and isinstance(at, yaml.SequenceNode) and e.index < len(at.value):
                at = at.value[e.index]  # the bad entry of a list, not where the list starts
            raise ConfigError(f"{key}: {e}", source, at.start_mark.line + 1) from None
        origins[key] = (source, line)
    return values


def _checked(values: dict[str, Any], origins: Origins) -> Config:
    cfg = Config(**values)
    try:
        check_intervals(cfg)
    except ConfigError as e:
        source, line = origins.get("dead_interval") or origins.get("announce_interval") or ("", 0)
        raise ConfigError(str(e), source or None, line or None) from None
    return cfg


def parse_layers(layers: Iterable[tuple[str, str]]) -> Config:
    """A config from (source, text) pairs in order, each overriding what came before (the main file,
    then its drop-ins). Each is taken from the iterable only once the one before it has parsed."""
    values: dict[str, Any] = {}
    origins: Origins = {}
    for source, text in layers:
        seen: Origins = {}
        values.update(_values(text, source, seen))
        origins.update(seen)
    return _checked(values, origins)


def parse(text: str, source: str = "<config>") -> Config:
    return parse_layers([(source, text)])


def dump(cfg: Config) -> str:
    """A config as YAML that parses back to it (omdiscd --check-config prints this)."""
    return yaml.safe_dump(plain(cfg), sort_keys=False)


def dump_defaults() -> str:
    """Every key with its default, as YAML."""
    return dump(Config())
