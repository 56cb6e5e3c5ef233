"""The configuration files: the main file and its conf.d drop-ins, read in order and parsed by
omdisc.core.yamlconfig (which reads nothing itself).

The daemon reads them in a short-lived child (shell/apart.py), at start and at each SIGHUP, and is
handed the settings back as JSON: PyYAML, and what parsing leaves behind, never weigh on it. The
child's errors are the same one line, with file and line, as when the files are read in-process
(`load`, as showmap does)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from omdisc.core.config import DEFAULT_PATH, Config, ConfigError, from_plain, plain
from omdisc.core.records import field, record
from omdisc.shell.apart import ChildFailed, in_child

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
    its conf.d drop-ins. In this process: PyYAML is loaded here.

    Returns the config and the main file (None: no main file, built-in defaults under drop-ins).
    """
    from omdisc.core.yamlconfig import parse_layers  # PyYAML: only where the files are parsed

    main = path or default
    found = None if path is None and not main.exists() else main

    def layers() -> Iterator[tuple[str, str]]:
        # read one at a time: a file is read only once those before it parsed, as errors are told
        if found is not None:
            yield str(main), _read(main)
        for drop_in in drop_ins(main):
            yield str(drop_in), _read(drop_in)

    return parse_layers(layers()), found


def load_apart(path: Path | None) -> Config:
    """load()'s config, read in a short-lived child: the same config, or the same ConfigError."""
    try:
        return from_plain(in_child(lambda: plain(load(path)[0]), ConfigError))
    except ChildFailed as e:
        raise ConfigError(f"cannot read the configuration: {e}") from None


@record(frozen=True)
class ConfigSource:
    """Where the configuration in force came from: its main file (None: built-in defaults under
    any drop-ins) and the command line's options over it. SIGHUP reads the same again."""

    path: Path | None
    overrides: dict[str, Any] = field(default_factory=dict)

    def reread(self) -> Config:
        """The same files again, and the same options over them: in a short-lived child."""
        return load_apart(self.path).overridden(**self.overrides)

    def describe(self) -> str:
        return str(self.path) if self.path else "built-in defaults"
