"""The edge-gru simulator: synthetic and replayed sensor streams, injected faults, and a
report of what the daemon would do with them.

It drives the daemon's own code (payload parsing, queue, worker, pool, forecast
encoding) in-process on a virtual clock, or a real daemon through a real MQTT broker, so
what it reports is what a deployment would see. ``edge-gru simulate`` is its command line;
:func:`sim.run.simulate` is the same thing from Python.
"""

from __future__ import annotations
