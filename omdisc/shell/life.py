"""This life of the node: its incarnation, taken at start above the last life's (shell/incarnation.py
keeps it in state_dir), and kept again whenever the engine takes a new one (a refutation, a rejoin),
so the next life starts above it whatever the clock says."""

from __future__ import annotations

from pathlib import Path

from omdisc.shell import incarnation


class Life:
    def __init__(self, state_dir: Path, wall_us: int) -> None:
        self.lived_before = incarnation.kept(state_dir)  # a last life ran here, and may be in maps still
        self.incarnation = incarnation.next_incarnation(state_dir, wall_us)
        self._kept = self.incarnation

    def keep(self, state_dir: Path, current: int) -> None:
        """The engine's incarnation now, written down if it is new; in the state_dir configured now,
        which the next life reads (a reload's new one takes effect at restart)."""
        if current != self._kept:
            self._kept = current
            incarnation.save(state_dir, current)
