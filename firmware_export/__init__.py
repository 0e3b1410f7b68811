"""Export an edge-gru bundle as plain C99 for microcontrollers and 32-bit Raspberry Pis.

numba, numpy and LiteRT have no wheels for 32-bit armv7l and nothing Python runs on a
Cortex-M, so :func:`export` writes the model's weights as ``const`` arrays next to a small
C99 runtime (no malloc, caller-owned state) whose forecasts equal the Python
:class:`edge_gru.pool.StreamPool`'s: the same normalization, warm-up, window/stateful mode
and timestamp rules. The network is a table of layers (any stack of GRU layers, then dense
layers, a Dense(k) head giving k forecasts) that the runtime runs in order, emlearn style.
One entry point, like emlearn's ``convert``::

    import firmware_export
    report = firmware_export.export("models/default", "build/c", int8=False)
    print(report)          # flash and RAM bytes, files written

The runtime sources ship as package data in ``firmware_export/runtime/``.
"""

from __future__ import annotations

from firmware_export.export import ExportError, ExportReport, export
from firmware_export.footprint import Footprint, footprint
from firmware_export.quantize import dequantized_weights

__all__ = ["ExportError", "ExportReport", "Footprint", "dequantized_weights", "export", "footprint"]
