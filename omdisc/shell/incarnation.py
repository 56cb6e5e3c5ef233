"""The incarnation (this life's number) kept across restarts in the state directory, so a node
restarted with its clock behind (no RTC, NTP not yet synchronised) still comes back with a larger
one than its last life's, and its peers take it at once."""

from __future__ import annotations

import logging
from pathlib import Path

from omdisc.shell.files import write_atomic

log = logging.getLogger("omdisc")

FILE = "incarnation"


def _last(path: Path) -> int:
    try:
        return int(path.read_text().strip() or 0)
    except FileNotFoundError:
        return 0
    except (OSError, ValueError) as e:
        log.warning("cannot read %s (%s): the incarnation comes from the clock alone", path, e)
        return 0


def kept(state_dir: Path) -> bool:
    """A life of this node was kept here: it ran before (restart, reboot), and may be in maps still."""
    return (state_dir / FILE).exists()


def save(state_dir: Path, incarnation: int) -> bool:
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(state_dir / FILE, f"{incarnation}\n".encode(), mode=0o644, sync=True)
    except OSError as e:
        log.warning("cannot keep the incarnation in %s: %s; a restart with the clock behind will be "
                    "ignored by the peers until the clock catches up", state_dir, e.strerror or e)
        return False
    return True


def next_incarnation(state_dir: Path, wall_us: int) -> int:
    """Larger than the last life's and than the clock (microseconds), and kept for the next life."""
    last = _last(state_dir / FILE)
    incarnation = max(wall_us, last + 1)
    if last >= wall_us:
        log.warning("the clock is behind this node's last life (by %.1f s): incarnation %d continues from it",
                    (last - wall_us) / 1e6, incarnation)
    save(state_dir, incarnation)
    return incarnation
