"""``edge-gru bench``: every installed backend side by side on one bundle."""

from __future__ import annotations

import json
from pathlib import Path

import click

from edge_gru.bench.measure import ROWS

DEFAULT_MODEL = "models/default"


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (for tools).")
@click.option(
    "--model",
    "model_dirs",
    type=click.Path(file_okay=False, exists=True),
    multiple=True,
    help=f"Bundle to benchmark (repeatable: several bundles in one run, one table each; default {DEFAULT_MODEL}).",
)
@click.option(
    "--backend",
    "backends",
    multiple=True,
    type=click.Choice(list(ROWS)),
    help="Only these backends (repeatable; default: all installed).",
)
@click.option("--no-processes", is_flag=True, help="Skip the fresh-process figures (import, first step, RSS).")
@click.option("--no-legend", is_flag=True, help="Print the table without the legend of its columns.")
@click.option("--no-cold", is_flag=True, help="Skip the cold-cache JIT compile (it takes seconds to minutes).")
@click.option(
    "--clock",
    type=click.Choice(["cpu", "wall"]),
    default="cpu",
    show_default=True,
    help="cpu: this process's CPU time (robust on a busy machine); wall: elapsed time.",
)
def bench(
    as_json: bool,
    model_dirs: tuple[str, ...],
    backends: tuple[str, ...],
    no_processes: bool,
    no_legend: bool,
    no_cold: bool,
    clock: str,
) -> None:
    """Benchmark every installed backend on the same bundle: per-step time, throughput, start-up, memory.

    Single steps are ns per call including the Python call; batched figures are stream-steps
    per second (millions). Timings are the best of several bursts.
    """
    from edge_gru import bench as benchmarking
    from edge_gru.errors import EdgeGruError

    def progress(name: str) -> None:
        if not as_json:
            click.echo(f"measuring {name} ...", err=True)

    reports = []
    for model_dir in model_dirs or (DEFAULT_MODEL,):
        try:
            reports.append(
                benchmarking.run(
                    Path(model_dir),
                    list(backends) or None,
                    processes=not no_processes,
                    cold=not no_cold,
                    clock=clock,
                    progress=progress,
                )
            )
        except EdgeGruError as exc:
            raise click.ClickException(str(exc)) from exc
    if as_json:  # one bundle: its report; several: a list of them
        click.echo(json.dumps(reports[0] if len(reports) == 1 else reports, indent=2))
    else:
        tables = [benchmarking.format_table(r, legend=False) for r in reports]
        if not no_legend:
            tables[-1] = benchmarking.format_table(reports[-1], legend=True)
        click.echo("\n\n".join(tables))
