"""omdiscd's front: its command line and its configuration files, read in a short-lived child
(shell/apart.py) that hands the daemon what they ask for, the settings as JSON. argparse, gettext and
PyYAML are loaded there only: never by the daemon, whose memory they would weigh on for its whole
life. The omdiscd program forks the front before it imports the rest of the daemon (the top of
daemon.py), so the two run side by side on start-up.

What a user sees is the same as if the daemon read them itself: --help, --version and a bad command
line are printed by the child (argparse), with its status; a bad configuration is the same one
line, with file and line (omdiscd prints it, status 78).
"""

from __future__ import annotations

from pathlib import Path

from omdisc.core.config import PARSERS, Config, ConfigError, from_plain, plain
from omdisc.core.records import record
from omdisc.shell.apart import Child, ChildFailed
from omdisc.shell.configfiles import ConfigSource

TYPE_CHECKING = False  # typing is mypy's only: never loaded at run time (docs/architecture.md)
if TYPE_CHECKING:
    from typing import Any

COMMANDS = ("gen_key", "stage_key", "check_config")  # the first given is done, then exit; none: run
OVERRIDES = ("interfaces", "multicast_ttl", "debug", "family", "route")  # options over the files' keys


@record(frozen=True)
class Front:
    """What omdiscd was asked to do, and the configuration it does it with."""

    command: str  # one of COMMANDS, or "run"
    nodaemon: bool
    cfg: Config
    source: ConfigSource
    check_yaml: str  # for --check-config: the configuration as YAML


_early: Child | None = None


def start_early(argv: list[str]) -> None:
    """The omdiscd program, before it imports the rest: the front works meanwhile."""
    global _early
    _early = start(argv)


def start(argv: list[str] | None) -> Child:
    return Child.start(lambda: _front(argv), ConfigError)


def take(argv: list[str] | None) -> Front | int:
    """The front for `argv` (None: the program's own, begun early if it was): its answer, or the exit
    status once the child has said all there was to say (help, version, a bad command line)."""
    global _early
    child = _early if argv is None and _early is not None else start(argv)
    _early = None
    try:
        answer = child.answer()
    except ChildFailed as e:
        raise ConfigError(f"cannot read the configuration: {e}") from None
    if "exit" in answer:
        return int(answer["exit"])
    overrides = {key: None if value is None else PARSERS[key](value) for key, value in answer["overrides"].items()}
    main_file = Path(answer["main"]) if answer["main"] else None
    return Front(answer["command"], answer["nodaemon"], from_plain(answer["config"]),
                 ConfigSource(main_file, overrides), answer["yaml"])


def _front(argv: list[str] | None) -> dict[str, Any]:
    """In the child: the command line, then the files; argparse prints what it prints itself."""
    from omdisc.cli import build_parser  # argparse, gettext: the front's alone
    from omdisc.core.yamlconfig import dump  # PyYAML, as in shell.configfiles.load
    from omdisc.shell.configfiles import load

    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help, --version, a bad command line: printed already
        return {"exit": e.code if isinstance(e.code, int) else 0 if e.code is None else 1}
    overrides = {key: getattr(args, key) for key in OVERRIDES}
    cfg, main_file = load(Path(args.config) if args.config is not None else None)
    cfg = cfg.overridden(**overrides)
    command = next((c for c in COMMANDS if getattr(args, c)), "run")
    return {"command": command, "nodaemon": args.nodaemon, "config": plain(cfg),
            "main": str(main_file) if main_file else None,
            "overrides": {k: list(v) if isinstance(v, tuple) else v for k, v in overrides.items()},
            "yaml": dump(cfg) if command == "check_config" else ""}
