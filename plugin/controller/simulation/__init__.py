"""A synthetic fleet in simulated time: queueing servers, the real Router and Dispatchers, the real Controller.

Reusable by the benchmarks and the scenario replay::

    clock = FakeClock()
    sim = Simulation.build(fleet, [ServerModel(0.067, 1), ...], clock=clock, seed=1)
    sim.run(until_s=30.0, rates={("sd", "interactive"): 20.0})
    sim.at(10.0, lambda: sim.servers[0].kill())
    sim.results                                # one RequestResult per user request

Everything is deterministic for a seed; no thread, no sleep, no socket.
"""
from .clock import FakeClock
from .runner import RequestResult, Simulation
from .server import ServerModel, SimServer, SimSource

__all__ = ["FakeClock", "Simulation", "RequestResult", "ServerModel", "SimServer", "SimSource"]
