"""Exit statuses of omdiscd and showmap (omdiscd(8), showmap(1), EXIT STATUS): part of the interface."""

EXIT_OK = 0
EXIT_FAILURE = 1  # the system refused: no such interface, no default route, pid file held, bind failed
EXIT_USAGE = 2  # a bad command line
EXIT_CONFIG = 78  # a bad configuration file (EX_CONFIG)
