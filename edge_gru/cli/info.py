"""``edge-gru info``."""

from __future__ import annotations

import json

import click

from edge_gru.bundle import load_bundle
from edge_gru.errors import EdgeGruError


@click.command()
@click.argument("bundle_dir", type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
def info(bundle_dir: str, as_json: bool) -> None:
    """Print the manifest of BUNDLE_DIR (verifies checksums)."""
    try:
        bundle = load_bundle(bundle_dir)
    except EdgeGruError as exc:
        raise click.ClickException(str(exc)) from exc
    m = bundle.manifest
    if as_json:
        click.echo(json.dumps(m.to_json(), indent=2))
        return
    norm = m.normalization
    params = m.units * 3 * (m.units + m.input_features) + (6 if m.reset_after else 3) * m.units + m.units + 1
    lines = [
        ("bundle", f"{m.bundle_id}  ({bundle.path})"),
        ("model", f"GRU({m.units}, reset_after={m.reset_after}) + Dense(1), {params:,} parameters"),
        ("mode", f"{m.mode}" + (f", window {m.window}" if m.mode == "window" else ", one step per sample")),
        ("inputs", ", ".join(m.features) + f"  -> forecast of {m.target!r}"),
        (
            "normalization",
            f"causal per stream, half-life {norm.halflife:g} samples"
            if norm.kind == "causal"
            else "fixed (fitted on the training split)",
        ),
        ("sample period", f"{m.sample_period_s:g} s" if m.sample_period_s else "learned per stream"),
        ("gap reset", f"after {m.gap_factor:g} sample periods"),
        ("warm-up", f"{max(m.warmup, m.window if m.mode == 'window' else 1)} samples"),
        ("files", ", ".join(sorted(m.files))),
    ]
    for key, value in m.training.items():
        if isinstance(value, int | float | str):
            lines.append((f"training.{key}", str(value)))
    width = max(len(k) for k, _ in lines)
    for key, value in lines:
        click.echo(f"{key:<{width}}  {value}")
