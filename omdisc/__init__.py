"""omdisc: the openMosix auto-discovery daemon, rewritten."""

__version__ = "0.1.0"
