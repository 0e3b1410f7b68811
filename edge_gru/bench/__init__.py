"""``edge-gru bench``: every installed backend side by side on one bundle.

Tooling, not the serving library: ``import edge_gru`` never imports this package, and it
may import Keras (the reference row). The rows come from the backend registry
(:data:`edge_gru.backends.BACKENDS`); memory is read with :mod:`edge_gru.procstat`.
``measure`` runs the figures, ``probe`` is the fresh-process program, ``timing`` the
best-of-bursts clock, and ``report`` prints the table with its legend.
"""

from __future__ import annotations

from edge_gru.bench.measure import ROWS, BackendResult, run
from edge_gru.bench.report import LEGEND, format_table
from edge_gru.bench.timing import best_ns, machine_info, set_clock

__all__ = ["LEGEND", "ROWS", "BackendResult", "best_ns", "format_table", "machine_info", "run", "set_clock"]
