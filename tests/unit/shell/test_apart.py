"""Work done in a short-lived child (omdisc/shell/apart.py): the daemon gets the work's value, or its
error with the same one line, or a ChildFailed that says what happened; a signal meant for the
daemon neither ends the child nor reaches the daemon's handlers twice; nothing is printed twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from omdisc.core.config import ConfigError
from omdisc.shell.apart import ChildFailed, in_child
from omdisc.shell.loop import Loop

ROOT = Path(__file__).resolve().parents[3]


def test_the_value_comes_back_in_json_types() -> None:
    assert in_child(lambda: {"interfaces": ["eth0"], "ttl": None, "every": 0.5, "on": True}, ConfigError) == {
        "interfaces": ["eth0"], "ttl": None, "every": 0.5, "on": True}


def raise_(e: BaseException) -> None:
    raise e


def test_the_works_error_is_raised_with_its_one_line() -> None:
    line = "/etc/omdiscd/omdiscd.yaml:3: port: 0 is out of range 1..65535"
    with pytest.raises(ConfigError) as e:
        in_child(lambda: raise_(ConfigError(line)), ConfigError)
    assert str(e.value) == line


@pytest.mark.parametrize(("work", "said"), [
    (lambda: raise_(RecursionError("too deep")), "RecursionError: too deep"),
    (lambda: object(), "TypeError: Object of type object is not JSON serializable"),
    (lambda: os.kill(os.getpid(), signal.SIGKILL), "it ended without an answer (killed by signal 9)"),
    (lambda: os._exit(3), "it ended without an answer (exit status 3)"),
])
def test_anything_else_is_a_child_failed_that_says_what(work: object, said: str) -> None:
    with pytest.raises(ChildFailed, match="^" + said.replace("(", r"\(").replace(")", r"\)") + "$"):
        in_child(work, ConfigError)  # type: ignore[arg-type]


def test_a_sigterm_to_the_child_neither_ends_it_nor_reaches_the_daemons_loop() -> None:
    """The daemon's loop takes its signals through a wakeup descriptor that a fork shares: a signal
    the child took would be the daemon's too."""
    loop = Loop()
    got: list[str] = []
    loop.handle_signals({signal.SIGTERM: lambda: got.append("stop")})
    try:
        def work() -> str:
            os.kill(os.getpid(), signal.SIGTERM)  # as systemd's stop reaches every process of the service
            return "read"
        assert in_child(work, ConfigError) == "read"
        loop.run_once(0.05)
        assert got == []
        os.kill(os.getpid(), signal.SIGTERM)  # the daemon's own signals are its own again
        loop.run_until(lambda: bool(got), 5)
        assert got == ["stop"]
    finally:
        loop.close()


PRINTS = """
import sys
from omdisc.core.config import ConfigError
from omdisc.shell.apart import in_child
print("the daemon's line, still in its buffer at the fork;", end=" ")
in_child(lambda: print("the child's line, flushed before it ends") or 1, ConfigError)
"""


def test_output_is_printed_once_by_whoever_printed_it() -> None:
    """stdout to a pipe (a log file, a test) is block-buffered: what the daemon had not flushed
    yet must not be flushed by the child too."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    r = subprocess.run([sys.executable, "-c", PRINTS], capture_output=True, text=True, check=True,
                       env={**env, "PYTHONPATH": str(ROOT)})
    assert r.stdout == "the daemon's line, still in its buffer at the fork; the child's line, flushed before it ends\n"
