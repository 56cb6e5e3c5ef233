"""Handling one datagram or one timer is a boundary: nothing a peer sends may end the loop. An
unexpected exception there is counted (internal_errors: tests fail on any), said once per kind and
hour, with the traceback at debug level, and the loop goes on."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable

from omdisc.core.ratelimit import LogLimiter

TYPE_CHECKING = False  # typing is mypy's only: never loaded at run time (docs/architecture.md)
if TYPE_CHECKING:
    from typing import Any

log = logging.getLogger("omdisc")


class Boundary:
    def __init__(self, stats: Counter[str], clock: Callable[[], float]) -> None:
        self.stats = stats
        self.clock = clock
        self._said = LogLimiter()

    def run(self, what: str, step: Callable[..., None], *args: Any) -> None:
        """step(*args), whatever it raises; `what` names it in the log (a datagram, a timer)."""
        try:
            step(*args)
        except Exception as e:
            self.stats["internal_errors"] += 1
            kind = (what, type(e).__name__)
            if self._said.allow(kind, self.clock()) is not None:
                log.error("internal error while handling a %s (%s: %s); carrying on. Please report it with "
                          "the debug log (SIGUSR1)", what, type(e).__name__, e)
            log.debug("internal error while handling a %s", what, exc_info=True)
