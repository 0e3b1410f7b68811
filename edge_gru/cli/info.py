"""``edge-gru info``."""

from __future__ import annotations

import json

import click
import numpy as np

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
    params = sum(int(np.prod(shape)) for layer in m.network.shapes() for shape in layer.values())
    horizon = f"forecasts the next {m.horizon} samples" if m.horizon > 1 else "forecasts the next sample"
    lines = [
        ("bundle", f"{m.bundle_id}  ({bundle.path})"),
        ("model", f"{m.network.describe()}, {params:,} parameters, state {m.state_size} floats per stream"),
        ("horizon", horizon),
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
