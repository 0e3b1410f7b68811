"""``edge-gru train``: fit a GRU on a CSV column and write a bundle (needs the ``train`` extra)."""

from __future__ import annotations

import click

from edge_gru.cli.csvdata import report_dropped, strict_option
from edge_gru.errors import EdgeGruError


@click.command()
@click.argument("data", type=click.Path(dir_okay=False))
@click.option("--column", required=True, help="Target column to forecast (the next --horizon samples).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Bundle directory to write.")
@click.option("--time-column", default=None, help="Timestamp column (default: the first column; 'none' for none).")
@click.option("--features", default="", help="Extra input columns, comma-separated (the target is always an input).")
@click.option(
    "--layers",
    default=None,
    help="GRU units per layer, first layer first, comma-separated (e.g. 64,32). [default: 50]",
)
@click.option("--units", type=click.IntRange(1, 1024), default=None, help="One GRU layer of this many units.")
@click.option("--dense", default="", help="Hidden Dense(relu) widths before the head, comma-separated (e.g. 16).")
@click.option(
    "--horizon",
    type=click.IntRange(1, 1024),
    default=1,
    show_default=True,
    help="Forecast the next k samples (a Dense(k) head).",
)
@click.option(
    "--window", type=click.IntRange(1, 10_000), default=10, show_default=True, help="Window length (window mode)."
)
@click.option("--mode", type=click.Choice(["window", "stateful"]), default="window", show_default=True)
@click.option("--epochs", type=click.IntRange(1), default=100, show_default=True, help="Maximum epochs.")
@click.option("--batch-size", type=click.IntRange(1), default=64, show_default=True)
@click.option(
    "--dropout",
    type=click.FloatRange(0.0, 0.95),
    default=0.0,
    show_default=True,
    help="Dropout between layers while training.",
)
@click.option("--patience", type=click.IntRange(0), default=10, show_default=True, help="Early stopping (0: off).")
@click.option("--learning-rate", type=click.FloatRange(min=0.0, min_open=True), default=1e-3, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed and data give the same model.")
@click.option(
    "--cell",
    type=click.Choice(["gru", "lstm"]),
    default="gru",
    show_default=True,
    help="'lstm' also trains an LSTM baseline and reports it beside the exported GRU.",
)
@click.option("--season", type=click.IntRange(1), default=None, help="Season length in samples for seasonal-naive.")
@click.option(
    "--normalization",
    type=click.Choice(["fixed", "causal"]),
    default="fixed",
    show_default=True,
    help="fixed: train-split mean/std; causal: per stream, as for a generic model.",
)
@click.option(
    "--halflife",
    type=click.FloatRange(1.0),
    default=96.0,
    show_default=True,
    help="Causal normalization half-life in samples.",
)
@click.option(
    "--bptt",
    type=click.IntRange(2),
    default=64,
    show_default=True,
    help="Stateful mode: steps per truncated back-propagation chunk.",
)
@click.option(
    "--loss",
    type=click.Choice(["mse", "mae", "huber"]),
    default="mse",
    show_default=True,
    help="Training loss; huber/mae favour the median, which MAE comparisons reward on spiky data.",
)
@click.option("--no-int8", is_flag=True, help="Skip the int8 TFLite model.")
@click.option("--no-tflite", is_flag=True, help="Skip both TFLite models (a bundle for the numba/numpy backends).")
@click.option("--name", default=None, help="Bundle name (default: the output folder's name).")
@click.option("--json", "as_json", is_flag=True, help="Print metrics.json instead of the table.")
@strict_option
@click.option("--force", is_flag=True, help="Write into --out even when it is a non-empty directory.")
@click.option("--verbose", is_flag=True, help="Let TensorFlow log to stderr (CUDA probing, oneDNN, graph warnings).")
def train(
    data: str,
    column: str,
    out: str,
    time_column: str | None,
    features: str,
    layers: str | None,
    units: int | None,
    dense: str,
    horizon: int,
    window: int,
    mode: str,
    epochs: int,
    batch_size: int,
    dropout: float,
    patience: int,
    learning_rate: float,
    seed: int,
    cell: str,
    season: int | None,
    normalization: str,
    halflife: float,
    bptt: int,
    loss: str,
    no_int8: bool,
    no_tflite: bool,
    name: str | None,
    as_json: bool,
    strict: bool,
    force: bool,
    verbose: bool,
) -> None:
    """Train on column --column of DATA (CSV) and write a bundle with float32 and int8 TFLite models.

    The network is the GRU layers (--layers), optional relu Dense layers (--dense) and a
    Dense(--horizon) head. The split is chronological (70 % train, 15 % validation, 15 % test); missing values and
    time gaps split the series instead of being interpolated. Prints a progress line per
    epoch and a table of test MAE/RMSE against persistence.
    """
    import json
    from pathlib import Path

    from edge_gru.extras import require_extra
    from edge_gru.series import read_series

    if layers is not None and units is not None:
        raise click.BadParameter("give --layers or --units, not both", param_hint="--units")
    gru_units = _widths(layers, "--layers") if layers is not None else ((units,) if units else (50,))
    dense_units = _widths(dense, "--dense") if dense.strip() else ()
    refuse_existing_output(out, force)
    require_extra("train", "training")
    from edge_gru.train.tfruntime import quiet_tensorflow
    from edge_gru.train.trainer import TrainConfig, jsonable
    from edge_gru.train.trainer import train as run

    extra = [f.strip() for f in features.split(",") if f.strip()]
    try:
        series = read_series(data, column=column, time_column=time_column, features=extra, strict=strict)
        report_dropped(series)
        config = TrainConfig(
            layers=gru_units,
            dense=dense_units,
            horizon=horizon,
            window=window,
            mode=mode,
            epochs=epochs,
            batch_size=batch_size,
            dropout=dropout,
            patience=patience,
            learning_rate=learning_rate,
            seed=seed,
            lstm=cell == "lstm",
            season=season,
            normalization=normalization,
            halflife=halflife,
            bptt=bptt,
            loss=loss,
            tflite=not no_tflite,
            int8=not no_int8,
            name=name or Path(out).name or "model",
        )
        echo = (lambda msg: click.echo(msg, err=True)) if as_json else click.echo
        with quiet_tensorflow(verbose):
            result = run(series, out, config, echo=None if as_json else echo)
    except EdgeGruError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        for warning in result.metrics["guard"]["warnings"]:
            click.echo(f"WARNING: {warning}", err=True)
        click.echo(json.dumps(jsonable(result.metrics), indent=2))
    else:
        click.echo(f"wrote {result.bundle.path} ({result.bundle.id})")


def _widths(text: str, option: str) -> tuple[int, ...]:
    """``64,32`` as (64, 32); anything else is a usage error naming the option."""
    try:
        widths = tuple(int(part) for part in text.split(","))
    except ValueError:
        widths = ()
    if not widths or not all(1 <= w <= 1024 for w in widths):
        raise click.BadParameter(f"{text!r} is not a comma-separated list of widths 1..1024", param_hint=option)
    return widths


def refuse_existing_output(out: str, force: bool) -> None:
    """Refuse to write a bundle over a non-empty directory (an earlier bundle, or anything else) without --force.

    Checked before the data is read and TensorFlow loads, so the refusal costs nothing.
    """
    from pathlib import Path

    path = Path(out)
    if force or not path.exists():
        return
    if not path.is_dir():
        raise click.BadParameter(f"{out} exists and is not a directory", param_hint="--out")
    try:
        occupied = any(path.iterdir())
    except OSError as exc:
        raise click.BadParameter(f"{out}: cannot read the directory ({exc.strerror})", param_hint="--out") from exc
    if occupied:
        what = "a bundle" if (path / "manifest.json").exists() else "files"
        raise click.BadParameter(
            f"{out} is not empty (it holds {what}); choose a new directory, or pass --force to write over it",
            param_hint="--out",
        )
