"""``edge-gru evaluate``: one-step accuracy of a bundle on a CSV column, served as the daemon serves."""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING

import click

from edge_gru.backends import BACKENDS, KERAS_REFERENCE
from edge_gru.cli.csvdata import report_dropped, strict_option
from edge_gru.errors import EdgeGruError

if TYPE_CHECKING:
    from edge_gru.evaluation import StreamRun
    from edge_gru.model import Model
    from edge_gru.series import Series


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
    type=click.Choice([*BACKENDS, KERAS_REFERENCE]),
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
@click.option(
    "--adaptation",
    type=click.Choice(["bundle", "on", "off"]),
    default="bundle",
    show_default=True,
    help="Per-stream combination, intervals and anomaly flags: as the bundle says, or forced on/off.",
)
@click.option("--json", "as_json", is_flag=True, help='Print {"n", "mae", "rmse", "persistence_mae", ...} as JSON.')
@strict_option
def evaluate(
    bundle_dir: str,
    data: str,
    column: str,
    time_column: str | None,
    features: str | None,
    backend: str,
    season: int | None,
    start: float,
    adaptation: str,
    as_json: bool,
    strict: bool,
) -> None:
    """Run BUNDLE_DIR over column --column of DATA reading by reading (warm-up, gaps and NaN drops as
    the daemon applies them) and print n, MAE and RMSE beside persistence on the same readings.

    Exits 1, saying why, when no forecast can be scored (every reading a warm-up or a gap reset)."""
    from edge_gru.adaptation import resolve_spec
    from edge_gru.evaluation import run_streams, score

    try:
        model, series = load_for_csv(bundle_dir, data, column, time_column, features, backend, strict)
        spec = resolve_spec(model.manifest.extra, adaptation)
        run = run_streams(model, {"series": series}, adaptation=spec)["series"]
        scores = score(series, run, start=int(start * len(series)), season=season)
    except EdgeGruError as exc:
        raise click.ClickException(str(exc)) from exc
    if scores.n == 0:
        raise click.ClickException(explain_no_forecasts(model, series, run, data, column))
    data_out = {
        **scores.to_json(),
        "backend": model.backend_name,
        "model": model.id,
        "column": column,
        "rows": len(series),
        "dropped": series.dropped,
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
    if scores.coverage is not None:
        width = "-" if scores.interval_width is None else f"{scores.interval_width:.6g}"
        click.echo(
            f"  interval coverage {scores.coverage:.3f} (target {spec.coverage:g}), mean width {width}; "
            f"{scores.anomalies} readings flagged as anomalies"
        )
    for step in scores.extra.get("horizon", []):
        click.echo(
            f"  step {step['step']}: {step['n']} forecasts, MAE {step['mae']:.6g}, persistence MAE "
            f"{step['persistence_mae']:.6g}, ratio {step['ratio']:.3f}"
        )


def load_for_csv(
    bundle_dir: str,
    data: str,
    column: str,
    time_column: str | None,
    features: str | None,
    backend: str,
    strict: bool,
) -> tuple[Model, Series]:
    """The bundle on ``backend`` and the CSV's series with the columns it takes (``evaluate``, ``forecast``)."""
    from edge_gru.bundle import load_bundle
    from edge_gru.model import load
    from edge_gru.series import read_series

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
    series = read_series(data, column=column, time_column=time_column, features=extra, strict=strict)
    report_dropped(series)
    if backend == KERAS_REFERENCE:
        from edge_gru.extras import require_extra

        require_extra("train", "--backend keras")
        from edge_gru.train.keras_backend import load_keras

        return load_keras(bundle_dir), series
    return load(bundle_dir, backend=backend), series


def explain_no_forecasts(model: Model, series: Series, run: StreamRun, data: str, column: str) -> str:
    """Why nothing could be scored, in the pool's terms, and what to do about it."""
    from edge_gru.pool import Status

    m = model.manifest
    counts = {s: int((run.status == s).sum()) for s in Status}
    resets = int(run.resets.sum())
    text = (
        f"{data} column {column!r}: no one-step forecast to score. Of {len(series):,} rows, "
        f"{counts[Status.FORECAST]:,} got a forecast, {counts[Status.WARMUP]:,} were warm-up readings "
        f"(the bundle warms up for {m.warmup} readings), {counts[Status.NOT_FINITE]:,} were missing; "
        f"{resets:,} gap resets."
    )
    if resets and m.sample_period_s and series.period:
        text += (
            f" The bundle's sample period is {m.sample_period_s:g} s (a step over {m.gap_factor:g} periods is a gap) "
            f"but the data's median step is {series.period:g} s, so the stream restarts its warm-up again and "
            "again: use a bundle trained at this data's sample period."
        )
    else:
        text += " The series has no run of consecutive readings longer than the warm-up: use a longer file."
    return text
