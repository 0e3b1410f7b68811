"""``python -m edge_gru.cli``: the same as the ``edge-gru`` command."""

from edge_gru.cli import main

main()
