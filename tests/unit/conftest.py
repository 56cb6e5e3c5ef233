from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest


@pytest.fixture
def omdisc_logger() -> Iterator[None]:
    """LogControl takes over the 'omdisc' logger; give it back as it was for the other tests."""
    logger = logging.getLogger("omdisc")
    saved = (list(logger.handlers), logger.propagate, logger.level)
    yield
    logger.handlers[:], logger.propagate = saved[0], saved[1]
    logger.setLevel(saved[2])
