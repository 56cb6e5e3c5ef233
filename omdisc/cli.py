"""omdiscd's command line: the seed's options, kept, plus -c, -d, --version. One-line errors."""

from __future__ import annotations

import argparse
import sys

from omdisc import __version__
from omdisc.core.config import DEBUG_CATEGORIES, DEFAULT_PATH, FAMILIES, parse_debug, parse_interfaces
from omdisc.shell.exits import EXIT_USAGE

TYPE_CHECKING = False  # typing is mypy's only: never loaded at run time (docs/architecture.md)
if TYPE_CHECKING:
    from typing import NoReturn


HELP_WIDTH = 79  # the options and the text below them wrap at one width, whatever the terminal

DESCRIPTION = """\
Find every other omdiscd host on the network by IP multicast and keep the
openMosix cluster map (node ids, addresses, gateway aliases) up to date: in the
kernel (/proc/hpc/admin) or, without an openMosix kernel, in alpha files that
showmap(1) reads."""

EPILOG = f"""\
signals:
  SIGTERM, SIGINT  announce LEAVE to the cluster, then exit
  SIGHUP           reload the configuration and the key file; the map is kept
  SIGUSR1          toggle between the configured debug categories and all

files:
  {DEFAULT_PATH!s:<34}configuration: omdiscd.yaml(5)
  {"/etc/omdiscd/cluster.key":<34}the cluster key (key_file)
  {"/run/omdiscd/omdiscd.pid":<34}pid file (pid_file)
  {"/run/omdiscd/om_mospe, om_config":<34}alpha mode's map (alpha_dir)
  {"/run/omdiscd/state.json":<34}members, counters: showmap(1)
  {"/var/lib/omdiscd/incarnation":<34}this node's last life (state_dir)

exit status:
  0 success; 1 the system refused (no such interface, no default route,
  already running, ...); 2 bad command line; 78 bad configuration or key file.

See omdiscd(8) for the full manual."""


class Parser(argparse.ArgumentParser):
    """omdiscd's and showmap's: a bad command line is one line on stderr and exit status 2."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: {message} (see '{self.prog} --help')\n")
        sys.exit(EXIT_USAGE)


def _interfaces(value: str) -> tuple[str, ...]:
    try:
        names = parse_interfaces(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if not names:
        raise argparse.ArgumentTypeError("at least one interface name is needed")
    return names


def _ttl(value: str) -> int:
    try:
        ttl = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer 1..255, got {value!r}") from None
    if not 1 <= ttl <= 255:
        raise argparse.ArgumentTypeError(f"{ttl} is out of range 1..255")
    return ttl


def path_argument(value: str) -> str:
    """A path on the command line: never empty (-c "" would quietly mean the built-in defaults), no NUL."""
    if not value:
        raise argparse.ArgumentTypeError("expected a path, got ''")
    if "\0" in value:
        raise argparse.ArgumentTypeError("a path cannot contain a NUL byte")
    return value


def _debug(value: str) -> tuple[str, ...]:
    try:
        return parse_debug(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="omdiscd",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=lambda prog: argparse.RawDescriptionHelpFormatter(prog, width=HELP_WIDTH),
    )
    p.add_argument(
        "-i", "--interface", metavar="IF[,IF...]", type=_interfaces, dest="interfaces",
        help="one to six interfaces of the cluster, comma separated. Without -m each one sends and "
        "receives, and announcements are routed between them (gateway). Default: the interface of "
        "the default route",
    )
    p.add_argument(
        "-m", "--multicast-ttl", metavar="N", type=_ttl, dest="multicast_ttl",
        help="multicast TTL (1..255) for networks joined by real multicast routers: only the first "
        "interface sends and receives, the others become alias entries",
    )
    p.add_argument(
        "--route", action=argparse.BooleanOptionalAction, default=None,
        help="with several interfaces and no -m: forward announcements between them (the default), "
        "or, with --no-route, only announce on each",
    )
    p.add_argument(
        "-f", "--family", choices=FAMILIES, default=None,
        help="discover over IPv4 (the default), IPv6, or both",
    )
    p.add_argument(
        "-n", "--nodaemon", action="store_true",
        help="stay in the foreground and log to standard error (under systemd: the journal)",
    )
    p.add_argument(
        "-c", "--config", metavar="FILE", type=path_argument,
        help=f"configuration file (default {DEFAULT_PATH}, if present)",
    )
    p.add_argument(
        "-d", "--debug", metavar="CATEGORIES", type=_debug,
        help=f"debug messages for these comma-separated categories: {', '.join(DEBUG_CATEGORIES)}, or all",
    )
    p.add_argument(
        "--check-config", action="store_true",
        help="check the configuration (file, conf.d drop-ins, these options), print it as YAML and exit",
    )
    p.add_argument(
        "--gen-key", action="store_true",
        help="print a new cluster key (32 random bytes, base64) and exit; see AUTHENTICATION in omdiscd(8)",
    )
    p.add_argument(
        "--stage-key", action="store_true",
        help="(for the systemd unit, as root) check the key file and hand the service a copy only it can read",
    )
    p.add_argument("--version", action="version", version=f"omdiscd {__version__}")
    return p
