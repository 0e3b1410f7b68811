"""``edge-gru export-c``: a bundle as C99 sources for microcontrollers and 32-bit Raspberry Pis."""

from __future__ import annotations

import click

from edge_gru.errors import EdgeGruError


@click.command("export-c")
@click.argument("bundle_dir", type=click.Path(file_okay=False))
@click.option(
    "--out", "out_dir", required=True, type=click.Path(), help="Folder to write the C sources, Makefile and example to."
)
@click.option(
    "--int8",
    is_flag=True,
    help="int8 weights with one float scale per output column, in every layer (about 4x less flash).",
)
@click.option(
    "--prefix",
    default="edge_gru",
    show_default=True,
    help="Name prefix of every file, function, type and macro, so several models link into one firmware.",
)
def export_c(bundle_dir: str, out_dir: str, int8: bool, prefix: str) -> None:
    """Write BUNDLE_DIR's model as const arrays plus a C99 runtime (no malloc, caller-owned state).

    Any layer list is exported (GRU layers, then dense layers; a Dense(k) head gives k
    forecasts per reading). The C forecasts equal the Python pool's with the adaptation off
    (the C runtime serves the bare network: no combination, intervals or anomaly flags)
    for the same readings. Build the example with
    `make` in the output folder; for a microcontroller, compile the runtime and model
    sources into the firmware.
    """
    try:
        from firmware_export import export
    except ImportError as exc:  # pragma: no cover - firmware_export ships with edge-gru
        raise click.ClickException(f"the C exporter is not installed with this edge-gru ({exc})") from exc
    try:
        report = export(bundle_dir, out_dir, int8=int8, prefix=prefix)
    except EdgeGruError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(report.format())
    from edge_gru.adaptation import manifest_spec
    from edge_gru.bundle import load_bundle

    if manifest_spec(load_bundle(bundle_dir).manifest.extra).enabled:
        click.echo(
            "note: the bundle's per-stream adaptation (combination with persistence and Holt, intervals, "
            "anomaly flags) is not exported; the C runtime serves the bare network (docs/firmware.md)"
        )
