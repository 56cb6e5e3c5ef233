"""The configuration files: the main file and its conf.d drop-ins, read in order and parsed by
omdisc.core.config (which reads nothing itself)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from omdisc.core.config import DEFAULT_PATH, Config, ConfigError, parse_layers

TYPE_CHECKING = False  # typing is mypy's only: never loaded at run time (docs/architecture.md)
if TYPE_CHECKING:
    from typing import Any


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"cannot read config file {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise ConfigError(f"cannot read config file {path}: {reason}") from None


def drop_ins(main: Path) -> list[Path]:
    """conf.d/*.yaml beside the main file, in name order: each overrides what came before.
    Tools that manage a host (the Ansible role) write here and leave the packaged file alone."""
    directory = main.parent / "conf.d"
    return sorted(p for p in directory.glob("*.yaml") if p.is_file()) if directory.is_dir() else []


def load(path: Path | None, default: Path = DEFAULT_PATH) -> tuple[Config, Path | None]:
    """The config at `path` (named by the user: must exist), or the default file if present, then
    its conf.d drop-ins.

    Returns the config and the main file (None: no main file, built-in defaults under drop-ins).
    """
    main = path or default
    found = None if path is None and not main.exists() else main

    def layers() -> Iterator[tuple[str, str]]:
        # read one at a time: a file is read only once those before it parsed, as errors are told
        if found is not None:
            yield str(main), _read(main)
        for drop_in in drop_ins(main):
            yield str(drop_in), _read(drop_in)

    return parse_layers(layers()), found


@dataclass(frozen=True)
class ConfigSource:
    """Where the configuration in force came from: its main file (None: built-in defaults under
    any drop-ins) and the command line's options over it. SIGHUP reads the same again."""

    path: Path | None
    overrides: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def read(cls, named: Path | None, overrides: dict[str, Any]) -> tuple[Config, ConfigSource]:
        """The file named on the command line, or the default one if present."""
        cfg, path = load(named)
        return cfg.overridden(**overrides), cls(path, overrides)

    def reread(self) -> Config:
        return load(self.path)[0].overridden(**self.overrides)

    def describe(self) -> str:
        return str(self.path) if self.path else "built-in defaults"
