"""showmap: print the cluster map omdiscd gave the kernel (or the alpha files), as setpe -r would;
for people also the members as a table, and the map redrawn as it changes (--watch)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path

from omdisc import __version__
from omdisc.cli import Parser, path_argument
from omdisc.core.config import DEFAULT_PATH, ConfigError
from omdisc.core.mapdoc import as_json
from omdisc.core.records import record
from omdisc.core.table import Entry, TableFormatError, decode_config, decode_mospe, decode_mospe_text, format_text
from omdisc.shell.configfiles import load
from omdisc.shell.exits import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK, fail
from omdisc.shell.inotify import (
    IN_CLOSE_WRITE,
    IN_CREATE,
    IN_DELETE,
    IN_IGNORED,
    IN_MOVED_FROM,
    IN_MOVED_TO,
    IN_ONLYDIR,
    Inotify,
    InotifyEvent,
)
from omdisc.shell.sinks import ALPHA_CONFIG, ALPHA_MOSPE, CONFIG, MOSPE, PROC_ADMIN, STATE

TYPE_CHECKING = False  # typing is mypy's only: never loaded at run time (docs/architecture.md)
if TYPE_CHECKING:
    from typing import Any, TextIO

EXIT_STALE = 3  # the map is there, but the omdiscd that wrote it is not running

EPILOG = ("exit status: 0 success; 1 the map is missing or corrupt; 2 bad command line; "
          "3 the map is stale (the omdiscd that wrote it is not running); 78 bad configuration file. "
          "See showmap(1).")

# --watch. The daemon replaces its files by rename (temp file + rename): IN_MOVED_TO; IN_CLOSE_WRITE
# for a file written in place; removals so that the screen says the map is gone.
WATCHED_FILES = frozenset({ALPHA_MOSPE, ALPHA_CONFIG, STATE})
FILE_EVENTS = IN_MOVED_TO | IN_CLOSE_WRITE | IN_DELETE | IN_MOVED_FROM | IN_ONLYDIR
# On the parent: the alpha directory made again (systemd creates /run/omdiscd at each start and
# removes it at each stop).
DIR_EVENTS = IN_CREATE | IN_MOVED_TO | IN_ONLYDIR
# The daemon writes om_config, then om_mospe, then state.json: events that follow one another
# within SETTLE seconds make one redraw, and a stream of them still redraws every SETTLE_ROUNDS.
SETTLE = 0.05
SETTLE_ROUNDS = 10
CLEAR = "\033[H\033[2J"  # cursor home, erase the screen


class ShowmapError(RuntimeError):
    pass


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="showmap",
        description="Print the openMosix cluster map that omdiscd(8) wrote: this node's number and the "
        "table in setpe's map format (first-ID IP count, and ID IP ALIAS lines).",
        epilog=EPILOG,
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument("--alpha-dir", metavar="DIR", type=path_argument,
                       help="read om_mospe, om_config and state.json from DIR "
                       "(default: alpha_dir of omdiscd's config)")
    where.add_argument("--live", action="store_true", help=f"read the openMosix kernel's {PROC_ADMIN}")
    p.add_argument("-c", "--config", metavar="FILE", type=path_argument,
                   help=f"omdiscd's configuration, to find alpha_dir (default {DEFAULT_PATH}, if present)")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--json", action="store_true",
                      help="print JSON: node_id, entries (id, ip, and count or alias) and what omdiscd knows "
                      "beyond the table (members, gateways)")
    what.add_argument("--members", action="store_true",
                      help="print omdiscd's members as a table: id, addresses, state (alive, suspect, "
                      "leaving), last heard, how heard (direct, gateway: forwarded by one, snapshot: told of), via "
                      "(the gateway a node is reached through), gateway (yes, no)")
    p.add_argument("--watch", action="store_true",
                   help="print again whenever the map changes (a terminal is cleared and redrawn), "
                   "until Ctrl-C; not with --live")
    p.add_argument("--version", action="version", version=f"showmap {__version__}")
    return p


# --- where the map is --------------------------------------------------------------------------


@record(frozen=True)
class Source:
    """Where showmap reads the map: the alpha files or the live kernel's."""

    alpha_dir: Path  # the alpha files and state.json (the daemon writes state.json here also in live mode)
    live: bool

    @property
    def map_dir(self) -> Path:
        return PROC_ADMIN if self.live else self.alpha_dir

    def map_files(self) -> tuple[Path, Path]:
        if self.live:
            return PROC_ADMIN / MOSPE, PROC_ADMIN / CONFIG
        return self.alpha_dir / ALPHA_MOSPE, self.alpha_dir / ALPHA_CONFIG


def locate(args: argparse.Namespace) -> Source:
    if args.alpha_dir is not None and not args.config:
        return Source(Path(args.alpha_dir), args.live)
    cfg, _ = load(Path(args.config) if args.config else None)
    return Source(Path(args.alpha_dir) if args.alpha_dir else cfg.alpha_dir, args.live)


# --- the map -----------------------------------------------------------------------------------


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ShowmapError(f"no map at {path} (is omdiscd running, and is this its directory?)") from None
    except OSError as e:
        raise ShowmapError(f"cannot read {path}: {e.strerror}") from None


def read_map(mospe: Path, config: Path, live: bool = False) -> tuple[int, list[Entry]]:
    """The map: our number (binary in alpha mode, decimal text in the kernel's /proc) and the table."""
    try:
        node_id = (decode_mospe_text if live else decode_mospe)(_read(mospe))
    except TableFormatError as e:
        raise ShowmapError(f"{mospe} is corrupt: {e}") from None
    try:
        entries = decode_config(_read(config))
    except TableFormatError as e:
        raise ShowmapError(f"{config} is corrupt: {e}") from None
    return node_id, entries


def _state(directory: Path) -> dict[str, Any]:
    """state.json for what is optional (--json's extras, the pid): missing or corrupt is empty."""
    try:
        data = json.loads((directory / STATE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


# --- the members -------------------------------------------------------------------------------

COLUMNS = ("ID", "ADDRESSES", "STATE", "LAST HEARD", "HOW HEARD", "VIA", "GATEWAY")


def read_state(directory: Path) -> tuple[dict[str, Any], float]:
    """state.json, which --members cannot do without, and when it was written (its mtime)."""
    path = directory / STATE
    try:
        with path.open("rb") as f:
            written = os.fstat(f.fileno()).st_mtime  # of the file read: the daemon replaces it by rename
            data = json.loads(f.read())
    except FileNotFoundError:
        raise ShowmapError(f"no member list at {path} (is omdiscd running, and is this its directory?)") from None
    except OSError as e:
        raise ShowmapError(f"cannot read {path}: {e.strerror}") from None
    except ValueError as e:
        raise ShowmapError(f"{path} is corrupt: {e}") from None
    if not isinstance(data, dict):
        raise ShowmapError(f"{path} is corrupt: not a JSON object")
    return data, written


def member_row(member: dict[str, Any], since_written: float) -> tuple[str, ...]:
    """One member as the table shows it. The age was measured when state.json was written: the time
    since then is added, so a table read later (or from a stale map) shows how long ago it really was."""
    heard = max(0, int(float(member["age"]) + since_written))
    state = str(member.get("state") or ("leaving" if member["leaving"] else "alive"))  # older daemons: no state
    return (str(int(member["id"])), ",".join(str(a) for a in member["addresses"]),
            state, f"{heard}s ago", str(member.get("heard") or "-"),
            str(member["via"]) if member["via"] else "-", "yes" if member["gateway"] else "no")


def aligned(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() + "\n"
                   for row in rows)


def members_table(directory: Path, now: float) -> str:
    state, written = read_state(directory)
    try:
        rows = [member_row(m, max(0.0, now - written)) for m in state["members"]]
    except (KeyError, TypeError, ValueError) as e:
        raise ShowmapError(f"{directory / STATE} is corrupt: members: {e!r}") from None
    return aligned([COLUMNS, *rows])


# --- a map left behind -------------------------------------------------------------------------


def is_omdiscd(pid: int) -> bool | None:
    """True: process `pid` is an omdiscd. False: there is no such process, or another program has
    its pid now (pids are reused). None: we cannot tell (/proc hides other users' processes)."""
    try:
        return b"omdisc" in Path(f"/proc/{pid}/cmdline").read_bytes()  # empty for a zombie: not running
    except FileNotFoundError:
        pass
    except OSError:
        return None
    try:  # /proc does not show it: hidepid, or no /proc; the kernel still knows
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return None
    return None


def stale_note(source: Source) -> str | None:
    """What to say when the daemon that wrote the map is gone. Without state.json or its pid, we do
    not know: not stale."""
    pid = _state(source.alpha_dir).get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return None
    if is_omdiscd(pid) is not False:
        return None
    return f"the map in {source.map_dir} was written by omdiscd pid {pid}, which is not running: it may be stale"


# --- printing once -----------------------------------------------------------------------------


def render(args: argparse.Namespace, source: Source) -> str:
    if args.members:
        return members_table(source.alpha_dir, time.time())
    if source.live and not PROC_ADMIN.is_dir():
        raise ShowmapError(f"this kernel has no openMosix interface ({PROC_ADMIN}); omdiscd writes "
                           f"the map to alpha files then: run showmap without --live")
    node_id, entries = read_map(*source.map_files(), live=source.live)
    if args.json:
        return as_json(node_id, entries, _state(source.alpha_dir)) + "\n"
    return format_text(node_id, entries)


def show_once(args: argparse.Namespace, source: Source) -> int:
    sys.stdout.write(render(args, source))
    sys.stdout.flush()
    note = stale_note(source)
    if note:
        sys.stderr.write(f"showmap: {note}\n")
        return EXIT_STALE
    return EXIT_OK


# --- --watch -----------------------------------------------------------------------------------


@record(frozen=True)
class Frame:
    """What one look at the map prints, and what is wrong with it."""

    text: str  # what showmap prints once; "" when there is nothing to print
    problem: str  # "" or one line: no map, a corrupt file, a stale map


def frame(args: argparse.Namespace, source: Source) -> Frame:
    try:
        text = render(args, source)
    except ShowmapError as e:
        return Frame("", f"showmap: {e}\n")
    note = stale_note(source)
    return Frame(text, f"showmap: {note}\n" if note else "")


class Screen:
    """Where each new frame goes. A terminal is cleared and redrawn, the problem under the map; a pipe
    or a file gets each new map after a blank line (each one whole, as showmap prints it once), and
    problems on stderr. Nothing is printed again that did not change."""

    def __init__(self, out: TextIO, err: TextIO, title: str) -> None:
        self.out, self.err, self.title = out, err, title
        self.tty = out.isatty()
        self.shown = Frame("", "")
        self.printed = False  # anything at all: the first frame is shown even when empty
        self.maps = 0  # maps printed to a pipe: from the second on, a blank line before each

    def show(self, new: Frame) -> None:
        if self.printed and new == self.shown:
            return
        if self.tty:
            self._redraw(new)
        else:
            self._append(new)
        self.shown, self.printed = new, True

    def _redraw(self, new: Frame) -> None:
        head = f"{self.title}, {time.strftime('%H:%M:%S')} (Ctrl-C to leave)\n\n"
        self.out.write(CLEAR + head + new.text + new.problem)
        self.out.flush()

    def _append(self, new: Frame) -> None:
        if new.text and new.text != self.shown.text:
            self.out.write(("\n" if self.maps else "") + new.text)
            self.out.flush()
            self.maps += 1
        if new.problem and new.problem != self.shown.problem:
            self.err.write(new.problem)
            self.err.flush()


def _add_watches(inotify: Inotify, directory: Path) -> None:
    """The directory's files, and its parent for the directory itself, which may not exist yet."""
    try:
        inotify.add_watch(directory.parent, DIR_EVENTS)
    except OSError as e:
        raise ShowmapError(f"cannot watch {directory}: {directory.parent}: {e.strerror}") from None
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        inotify.add_watch(directory, FILE_EVENTS)


def _matters(event: InotifyEvent, directory: Path) -> bool:
    return event.name in WATCHED_FILES or event.name == directory.name or bool(event.mask & IN_IGNORED)


LIVENESS_EVERY = 5.0  # seconds between looks at whether the daemon still runs, when nothing changes


def _settle(inotify: Inotify) -> None:
    for _ in range(SETTLE_ROUNDS):
        if not inotify.read(SETTLE):
            return


def watch(args: argparse.Namespace, source: Source) -> int:
    """Redraw at each change of the map's files, until Ctrl-C: then exit 0, as `watch` does."""
    directory = source.alpha_dir.absolute()
    screen = Screen(sys.stdout, sys.stderr, f"showmap --watch: {directory}")
    try:
        inotify = Inotify()
    except OSError as e:
        raise ShowmapError(f"cannot watch {directory}: {e.strerror}") from None
    with inotify, contextlib.suppress(KeyboardInterrupt):
        _add_watches(inotify, directory)
        screen.show(frame(args, source))
        while True:
            # a daemon that dies changes no file: look again now and then, to say the map is stale
            events = inotify.read(LIVENESS_EVERY)
            if events and not any(_matters(e, directory) for e in events):
                continue
            _settle(inotify)
            _add_watches(inotify, directory)  # again: the directory may have been made anew
            screen.show(frame(args, source))
    return EXIT_OK


# --- main --------------------------------------------------------------------------------------


def _stdout_gone() -> int:
    """The reader went away (showmap | head): quietly, and no complaint when Python flushes at exit."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.watch and args.live:
        parser.error("--watch reads the alpha files: the kernel's /proc/hpc/admin says nothing when it changes")
    try:
        source = locate(args)
        return watch(args, source) if args.watch else show_once(args, source)
    except ConfigError as e:
        return fail("showmap", e, EXIT_CONFIG)
    except ShowmapError as e:
        return fail("showmap", e, EXIT_FAILURE)
    except BrokenPipeError:
        return _stdout_gone()


if __name__ == "__main__":
    sys.exit(main())
