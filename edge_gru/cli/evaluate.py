"""``edge-gru evaluate``: one-step accuracy of a bundle on a CSV column, served as the daemon serves."""

from __future__ import annotations

import json
import math

import click

from edge_gru.errors import EdgeGruError

BACKENDS = ["numba", "numpy", "tflite", "tflite-int8", "keras"]


@click.command()
@click.argument("bundle_dir", type=click.Path(file_okay=False))
@click.argument("data", type=click.Path(dir_okay=False))
@click.option("--column", required=True, help="Column to forecast (the bundle's target).")
@click.option("--time-column", default=None, help="Timestamp column (default: the first column; 'none' for none).")
@click.option(
    "--features",
    default=None,
    help="Columns feeding the bundle's extra inputs, comma-separated (default: the bundle's feature names).",
)
@click.option(
    "--backend",
    type=click.Choice(BACKENDS),
    default="numba",
    show_default=True,
    help="keras rebuilds the model in Keras (needs [train]).",
)
@click.option("--season", type=click.IntRange(1), default=None, help="Also score seasonal-naive with this season.")
@click.option(
    "--start",
    type=click.FloatRange(0.0, 1.0, max_open=True),
    default=0.0,
    show_default=True,
    help="Score only forecasts of the rows after this fraction (e.g. 0.85 for a trainer's test split).",
)
@click.option("--json", "as_json", is_flag=True, help='Print {"n", "mae", "rmse", "persistence_mae", ...} as JSON.')
def evaluate(
    bundle_dir: str,
    data: str,
    column: str,
    time_column: str | None,
    features: str | None,
    backend: str,
    season: int | None,
    start: float,
    as_json: bool,
) -> None:
    """Run BUNDLE_DIR over column --column of DATA reading by reading (warm-up, gaps and NaN drops as
    the daemon applies them) and print n, MAE and RMSE beside persistence on the same readings."""
    from edge_gru.bundle import load_bundle
    from edge_gru.evaluation import evaluate_series
    from edge_gru.model import load
    from edge_gru.series import read_series

    try:
        bundle = load_bundle(bundle_dir)
        m = bundle.manifest
        extra = [f for f in m.features if f != m.target]
        if features is not None:
            extra = [f.strip() for f in features.split(",") if f.strip()]
        if len(extra) != m.input_features - 1:
            raise click.ClickException(
                f"the bundle takes {m.input_features} input(s) {list(m.features)}; pass the "
                f"{m.input_features - 1} extra column(s) with --features"
            )
        series = read_series(data, column=column, time_column=time_column, features=extra)
        if backend == "keras":
            try:
                from edge_gru.train.keras_backend import load_keras
            except ImportError as exc:
                raise click.ClickException(
                    f"--backend keras needs TensorFlow: pip install 'edge-gru[train]' ({exc})"
                ) from exc
            model = load_keras(bundle_dir)
        else:
            model = load(bundle_dir, backend=backend)
        scores = evaluate_series(model, series, start=int(start * len(series)), season=season)
    except EdgeGruError as exc:
        raise click.ClickException(str(exc)) from exc
    data_out = {
        **scores.to_json(),
        "backend": model.backend_name,
        "model": model.id,
        "column": column,
        "rows": len(series),
    }
    if as_json:
        click.echo(
            json.dumps({k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in data_out.items()})
        )
        return
    click.echo(f"{model.id} ({model.backend_name}) on {data} column {column!r}: {scores.n} one-step forecasts")
    click.echo(f"  {'':<16}{'MAE':>14}{'RMSE':>14}")
    click.echo(f"  {'model':<16}{scores.mae:>14.6g}{scores.rmse:>14.6g}")
    click.echo(f"  {'persistence':<16}{scores.persistence_mae:>14.6g}{scores.persistence_rmse:>14.6g}")
    if scores.seasonal_mae is not None:
        click.echo(f"  {f'seasonal ({season})':<16}{scores.seasonal_mae:>14.6g}{scores.seasonal_rmse:>14.6g}")
    verdict = "beats" if scores.ratio < 1 else "does not beat"
    click.echo(f"  MAE / persistence MAE = {scores.ratio:.3f} ({verdict} persistence)")
