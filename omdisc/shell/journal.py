"""Logging (journald, syslog or stderr), debug categories, and sd_notify.

The only module that imports systemd-python. Without it the daemon still runs: logs go to syslog
or stderr and sd_notify is done by a few lines of socket code.
"""

from __future__ import annotations

import importlib
import logging
import os
import socket
import sys

from omdisc.core.config import DEBUG_CATEGORIES

TYPE_CHECKING = False  # typing is mypy's only: never loaded at run time (docs/architecture.md)
if TYPE_CHECKING:
    from typing import Any


def _optional(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:  # the daemon must still start without python3-systemd
        return None


# The C halves of systemd-python: sendv() and notify() are all the daemon uses, and the Python halves
# (systemd.journal, systemd.daemon) bring uuid, platform, syslog and the journal reader, which the daemon never uses.
sd_daemon = _optional("systemd._daemon")
sd_journal = _optional("systemd._journal")

ROOT = "omdisc"
IDENTIFIER = "omdiscd"
JOURNAL_SOCKET = "/run/systemd/journal/socket"


def journal_stream_is_stderr() -> bool:
    """systemd sets JOURNAL_STREAM=dev:inode for the stream it connected; ours only if it is stderr."""
    want = os.environ.get("JOURNAL_STREAM", "")
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return want == f"{st.st_dev}:{st.st_ino}"


def journal_usable() -> bool:
    return sd_journal is not None and os.path.exists(JOURNAL_SOCKET)


def choose_target(detached: bool) -> str:
    if journal_stream_is_stderr() and journal_usable():
        return "journal"
    if detached:
        return "journal" if journal_usable() else "syslog"
    return "stderr"


class JournalHandler(logging.Handler):
    """Native journal records with our structured fields (docs/journal.md)."""

    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__()
        self.fields = fields

    def emit(self, record: logging.LogRecord) -> None:
        try:
            extra: dict[str, Any] = getattr(record, "journal", {})
            priority = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3}.get(
                record.levelno, 2)
            assert sd_journal is not None
            fields = {
                "MESSAGE": self.format(record),
                "PRIORITY": priority,
                "SYSLOG_IDENTIFIER": IDENTIFIER,
                "OMDISC_CATEGORY": record.name.removeprefix(ROOT + ".") or "main",
                "CODE_FILE": record.pathname,
                "CODE_LINE": record.lineno,
                "CODE_FUNC": record.funcName,
                **self.fields,
                **extra,
            }
            sd_journal.sendv(*journal_fields(fields))
        except Exception:
            self.handleError(record)


def journal_fields(fields: dict[str, Any]) -> list[str | bytes]:
    """FIELD=value entries for sendv(): str as UTF-8, bytes as they are, anything else as str()."""
    return [name.encode() + b"=" + value if isinstance(value, bytes) else f"{name}={value}"
            for name, value in fields.items()]


class LogControl:
    """The configured debug categories, SIGUSR1's toggle to full debug, and the fields every record carries."""

    def __init__(self, target: str, categories: tuple[str, ...]) -> None:
        self.target = target
        self.categories = categories
        self.full = False
        self.fields: dict[str, str] = {}
        root = logging.getLogger(ROOT)
        root.handlers.clear()
        root.propagate = False
        root.addHandler(self._handler(target))
        self.apply()

    def _handler(self, target: str) -> logging.Handler:
        handler: logging.Handler
        if target == "journal":
            handler = JournalHandler(self.fields)
            handler.setFormatter(logging.Formatter("%(message)s"))
        elif target == "syslog":
            from logging.handlers import SysLogHandler  # only here: it imports pickle, queue, threading

            handler = SysLogHandler("/dev/log", SysLogHandler.LOG_DAEMON)
            handler.setFormatter(logging.Formatter(f"{IDENTIFIER}[%(process)d]: %(message)s"))
        else:
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter("%(asctime)s omdiscd %(levelname)s %(name)s: %(message)s"))
        return handler

    def apply(self) -> None:
        logging.getLogger(ROOT).setLevel(logging.DEBUG)
        debug = DEBUG_CATEGORIES if self.full else self.categories
        for cat in DEBUG_CATEGORIES:
            logging.getLogger(f"{ROOT}.{cat}").setLevel(logging.DEBUG if cat in debug else logging.INFO)

    def set_categories(self, categories: tuple[str, ...]) -> None:
        self.categories = categories
        self.apply()

    def toggle_full(self) -> bool:
        """SIGUSR1: between the configured categories and full debug (seed section 6)."""
        self.full = not self.full
        self.apply()
        return self.full

    def set_field(self, name: str, value: object) -> None:
        self.fields[name] = str(value)


def notify(state: str) -> bool:
    """sd_notify(3). False when not started by systemd with a notify socket."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return False
    if sd_daemon is not None:
        return bool(sd_daemon.notify(state))
    addr = "\0" + path[1:] if path.startswith("@") else path
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.sendto(state.encode(), addr)
    except OSError:
        return False
    return True


def watchdog_seconds() -> float | None:
    """Half of WatchdogSec= when systemd asks this process for keep-alives, else None."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 2e6
    except ValueError:
        return None


def under_systemd() -> bool:
    """Started as a systemd service (then: no fork, whatever -n says)."""
    return bool(os.environ.get("NOTIFY_SOCKET") or os.environ.get("INVOCATION_ID"))
