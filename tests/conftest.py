from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lab.netlab import PREFIX, Lab, sweep


def pytest_configure(config: pytest.Config) -> None:
    """Started as a background job (SIGINT ignored) or under nohup (SIGHUP ignored), the run would
    hand those dispositions to every process it starts, and the tests that send them (showmap
    --watch's Ctrl-C, a handler's SIGHUP to dnsmasq) would fail for a reason not theirs."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


@pytest.fixture(scope="session", autouse=True)
def _no_leftover_namespaces() -> Iterator[None]:
    if os.geteuid() == 0:
        sweep(abandoned_only=True)  # labs of killed runs; never those of a run still going
    yield
    if os.geteuid() == 0:
        left = sweep(f"{PREFIX}{os.getpid()}x")
        assert not left, f"tests left namespaces behind: {left}"


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    if os.geteuid() != 0:
        pytest.fail("lab tests need root (network namespaces): run them as root, as CI does")
    with Lab(tmp_path) as lab:
        yield lab
        bad = lab.internal_errors()
        if bad:
            pytest.fail("daemons hit internal errors:\n" + "\n".join(bad))
