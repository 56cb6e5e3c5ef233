"""The simulated LAN the unit tests use: tests/sim (this name is kept for the tests that import it)."""

from tests.sim.lan import Sim as SimLan

__all__ = ["SimLan"]
