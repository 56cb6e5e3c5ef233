"""The simulated network (lan.py) and what watches it (watch.py): see lan.py for the model."""

from tests.sim.lan import Counters, Sim
from tests.sim.watch import Convergence, Departure, Removals, in_map

__all__ = ["Convergence", "Counters", "Departure", "Removals", "Sim", "in_map"]
