"""showmap: print the cluster map omdiscd gave the kernel (or the alpha files), as setpe -r would."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, NoReturn

from . import __version__
from .cli import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK, EXIT_USAGE, path_argument
from .config import DEFAULT_PATH, ConfigError, load
from .sinks import ALPHA_CONFIG, ALPHA_MOSPE, CONFIG, MOSPE, PROC_ADMIN, STATE
from .table import Entry, TableFormatError, decode_config, decode_mospe, format_text


class ShowmapError(RuntimeError):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: {message} (see '{self.prog} --help')\n")
        sys.exit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="showmap",
        description="Print the openMosix cluster map that omdiscd(8) wrote: this node's number and the "
        "table in setpe's map format (first-ID IP count, and ID IP ALIAS lines).",
        epilog="exit status: 0 success; 1 the map is missing or corrupt; 2 bad command line; "
        "78 bad configuration file. See showmap(8).",
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument("--alpha-dir", metavar="DIR", type=path_argument,
                       help="read om_mospe and om_config from DIR (default: alpha_dir of omdiscd's config)")
    where.add_argument("--live", action="store_true", help=f"read the openMosix kernel's {PROC_ADMIN}")
    p.add_argument("-c", "--config", metavar="FILE", type=path_argument,
                   help=f"omdiscd's configuration, to find alpha_dir (default {DEFAULT_PATH}, if present)")
    p.add_argument("--json", action="store_true",
                   help="print JSON: node_id, entries (id, ip, and count or alias) and what omdiscd knows "
                   "beyond the table (members, gateways)")
    p.add_argument("--version", action="version", version=f"showmap {__version__}")
    return p


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ShowmapError(f"no map at {path} (is omdiscd running, and is this its directory?)") from None
    except OSError as e:
        raise ShowmapError(f"cannot read {path}: {e.strerror}") from None


def read_map(mospe: Path, config: Path) -> tuple[int, list[Entry]]:
    try:
        node_id = decode_mospe(_read(mospe))
    except TableFormatError as e:
        raise ShowmapError(f"{mospe} is corrupt: {e}") from None
    try:
        entries = decode_config(_read(config))
    except TableFormatError as e:
        raise ShowmapError(f"{config} is corrupt: {e}") from None
    return node_id, entries


def _state(directory: Path) -> dict[str, Any]:
    try:
        data = json.loads((directory / STATE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def as_json(node_id: int, entries: list[Entry], state: dict[str, Any]) -> str:
    out: dict[str, Any] = {"node_id": node_id, "entries": [e.as_json() for e in entries]}
    for key in ("addresses", "members", "gateways", "interfaces", "gateway", "keys", "stats"):
        if key in state:
            out[key] = state[key]
    return json.dumps(out, indent=2)


def run(args: argparse.Namespace) -> str:
    cfg = None
    if args.alpha_dir is None or args.config:
        cfg, _ = load(Path(args.config) if args.config else None)
    state_dir = Path(args.alpha_dir) if args.alpha_dir else cfg.alpha_dir  # type: ignore[union-attr]
    if args.live:
        if not PROC_ADMIN.is_dir():
            raise ShowmapError(f"this kernel has no openMosix interface ({PROC_ADMIN}); omdiscd writes "
                               f"the map to alpha files then: run showmap without --live")
        node_id, entries = read_map(PROC_ADMIN / MOSPE, PROC_ADMIN / CONFIG)
    else:
        node_id, entries = read_map(state_dir / ALPHA_MOSPE, state_dir / ALPHA_CONFIG)
    if args.json:
        return as_json(node_id, entries, _state(state_dir)) + "\n"
    return format_text(node_id, entries)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        sys.stdout.write(run(args))
    except ConfigError as e:
        sys.stderr.write(f"showmap: {e}\n")
        return EXIT_CONFIG
    except ShowmapError as e:
        sys.stderr.write(f"showmap: {e}\n")
        return EXIT_FAILURE
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
