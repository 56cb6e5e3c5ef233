"""The incarnation kept across lives in the state directory (omdisc/shell/incarnation.py)."""

from __future__ import annotations

from ipaddress import ip_address
from pathlib import Path

from omdisc.shell import incarnation

ME = ip_address("198.18.0.1")



def test_a_life_after_a_clock_went_back_is_still_a_newer_one(tmp_path: Path) -> None:
    first = incarnation.next_incarnation(tmp_path, wall_us=5_000_000)
    assert first == 5_000_000
    behind = incarnation.next_incarnation(tmp_path, wall_us=5_000_000 - 3_600_000_000)  # an hour behind
    assert behind == first + 1
    assert incarnation.next_incarnation(tmp_path, wall_us=9_000_000) == 9_000_000  # the clock is ahead again


def test_an_unwritable_state_dir_is_a_warning_not_a_failure(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    assert incarnation.next_incarnation(tmp_path / "file" / "sub", wall_us=7) == 7
