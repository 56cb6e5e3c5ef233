"""The cluster key in force: read at start (shell/keyfile.py finds the file), read again on each
SIGHUP, said in the log, and its ids for state.json (never the keys)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from omdisc.core.auth import Authenticator, KeyFileError, key_id
from omdisc.core.config import Config
from omdisc.shell import keyfile

TYPE_CHECKING = False  # typing is mypy's only: never loaded at run time (docs/architecture.md)
if TYPE_CHECKING:
    from typing import Any

log = logging.getLogger("omdisc")


class ClusterKeys:
    def __init__(self, cfg: Config, wall: Callable[[], float] = time.time,
                 mono: Callable[[], float] = time.monotonic) -> None:
        self.wall, self.mono = wall, mono
        keyring, path = keyfile.load(cfg)
        self.path: Path | None = path  # the file read: the key file, or its copy staged for the unit
        # None: nothing signed, nothing checked; the engine holds the same object
        self.auth: Authenticator | None = Authenticator(keyring, wall, cfg.max_clock_skew, mono) if keyring else None

    def reload(self, cfg: Config) -> None:
        """SIGHUP re-reads the key file: the three steps of a rotation (docs/protocol.md) are reloads.
        A key file that cannot be read leaves the keys in force."""
        try:
            keyring, path = keyfile.load(cfg)
        except KeyFileError as e:
            log.error("reload of the key file failed, the keys in force stay: %s", e)
            return
        if keyring is None:
            self.auth = None
        elif self.auth is None:
            self.auth = Authenticator(keyring, self.wall, cfg.max_clock_skew, self.mono)
        else:  # same replay state: a reload is no restart
            self.auth.keyring = keyring
            self.auth.max_skew = cfg.max_clock_skew
        self.path = path
        self.say()

    def say(self) -> None:
        auth = self.auth
        if auth is None:
            log.warning("no cluster key: announcements are not authenticated, any host on the network can join "
                        "the map; make a key with 'omdiscd --gen-key' (see AUTHENTICATION in omdiscd(8))")
        else:
            log.info("cluster key from %s: %d key(s), ids %s; signing with %s", self.path, len(auth.keyring.keys),
                     auth.keyring.describe(), auth.keyring.describe().split(",")[0])

    def ids(self) -> dict[str, Any] | None:
        """What state.json shows (what playbooks/rotate_key.yml checks): the ids, never the keys."""
        auth = self.auth
        if auth is None:
            return None
        return {"signing": key_id(auth.keyring.keys[0]).hex(), "accepted": [key_id(k).hex() for k in auth.keyring.keys]}
