"""What every command that reads a CSV shares: the ``--strict`` option and the drop summary line."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from edge_gru.series import Series

F = TypeVar("F", bound=Callable[..., Any])

STRICT_HELP = (
    "Refuse a file with duplicate or out-of-order timestamps, naming the line "
    "(default: drop those rows as the daemon does and say how many)."
)


def strict_option(func: F) -> F:
    return click.option("--strict", is_flag=True, help=STRICT_HELP)(func)


def report_dropped(series: Series) -> None:
    """One line on stderr when rows were dropped, so stdout (tables, JSON, CSV) stays clean."""
    summary = series.dropped_summary()
    if summary:
        click.echo(summary, err=True)
