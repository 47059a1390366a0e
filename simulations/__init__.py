"""p2psim: a flow-level, discrete-event simulator of image pulls on the real scheduler.

Simulated peers go through ``scheduler.core.SchedulerState`` and pick pieces with the
conductor's ``peer.piece_picker``: the simulator measures the code that ships and never
re-implements scheduling. Time is simulated (never the wall clock) and every random
choice comes from a seeded ``random.Random``, so a run is deterministic for its seed.
"""

from simulations import accel as _accel

# Before any other module of the package is imported: see simulations/accel.py.
_accel.activate()
