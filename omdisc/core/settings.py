"""The engine's settings from the configuration, and what a reload cannot change."""

from __future__ import annotations

from omdisc.core.config import Config
from omdisc.core.detection.timers import ProbeSettings
from omdisc.core.engine import Settings


def settings_for(cfg: Config) -> Settings:
    probe = None
    if cfg.probe_interval:
        wait = min(0.4, cfg.probe_interval * 0.4)  # for an ACK, direct then through helpers
        probe = ProbeSettings(cfg.probe_interval, ack_timeout=wait, helper_timeout=wait,
                              suspicion=cfg.suspicion_timeout, resend=cfg.suspicion_timeout / 3)
    return Settings(cfg.announce_interval, cfg.dead_interval, cfg.remove_on_leave, max_nodes=cfg.max_nodes,
                    probe=probe)


RESTART_ONLY = ("kernel", "alpha_dir", "pid_file", "state_dir")  # a reload keeps these as they were


def restart_only(old: Config, new: Config) -> list[str]:
    """The keys a reload changes that take effect only at the next start."""
    return [key for key in RESTART_ONLY if getattr(new, key) != getattr(old, key)]
