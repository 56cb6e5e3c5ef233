from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lab.netlab import PREFIX, Lab, sweep


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
