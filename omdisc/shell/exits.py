"""Exit statuses of omdiscd and showmap (omdiscd(8), showmap(1), EXIT STATUS): part of the interface."""

import sys

EXIT_OK = 0
EXIT_FAILURE = 1  # the system refused: no such interface, no default route, pid file held, bind failed
EXIT_USAGE = 2  # a bad command line
EXIT_CONFIG = 78  # a bad configuration file (EX_CONFIG)


def fail(prog: str, error: object, status: int) -> int:
    """A user's mistake or the system's refusal: one line on stderr, `prog: what`, and the status."""
    sys.stderr.write(f"{prog}: {error}\n")
    return status
