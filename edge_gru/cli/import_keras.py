"""``edge-gru import-keras``."""

from __future__ import annotations

import logging

import click

from edge_gru.errors import EdgeGruError


@click.command("import-keras")
@click.argument("model_path", type=click.Path(dir_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Bundle directory to write.")
@click.option("--window", type=int, default=None, help="Window length when the model's input has none.")
@click.option("--mode", type=click.Choice(["window", "stateful"]), default=None)
@click.option("--sample-period", type=float, default=None, help="Seconds between samples (for gap resets).")
def import_keras(model_path: str, out: str, window: int | None, mode: str | None, sample_period: float | None) -> None:
    """Turn MODEL_PATH (a .keras GRU forecaster) into a bundle.

    Supported: Sequential or functional chains of GRU layers, optional Dropout, then Dense
    layers (linear, relu, tanh or sigmoid) ending in Dense(k), k = the forecast horizon.
    """
    from edge_gru.extras import require_extra

    require_extra("train", "importing a Keras model")
    from edge_gru.train.keras_import import import_keras as run
    from edge_gru.train.tfruntime import quiet_tensorflow

    try:
        with quiet_tensorflow(logging.getLogger().isEnabledFor(logging.INFO)):
            bundle = run(model_path, out, window=window, mode=mode, sample_period_s=sample_period)
    except EdgeGruError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"wrote {bundle.path} ({bundle.id})")
