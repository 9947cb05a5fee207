"""Device simulators that drive the real sensor drivers through the lowest real layer.

GPS receivers and vital-signs monitors write into pseudo-terminals, ELM327 adapters
answer on them, GPIO lines and an MCP3008 live on gpiozero's mock pin factory. See
``edge.sim.run`` for running many devices in one process (``Simulation``,
``run_simulation``), ``edge.sim.vehicle`` and ``edge.sim.patient`` for what the
simulated world does, and ``edge.sim.incidents`` for the incidents the one-box demo
scripts (``Simulation(..., incidents=True)``).
"""

from __future__ import annotations

from edge.sim.devices import SimulatedDevice, SimulatedPatient, SimulatedVehicle
from edge.sim.run import SimClock, Simulation, run_simulation

__all__ = ["SimClock", "SimulatedDevice", "SimulatedPatient", "SimulatedVehicle", "Simulation", "run_simulation"]
