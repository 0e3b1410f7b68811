"""``edge-gru forecast``: the daemon's forecasts for every reading of a CSV column, written to a CSV file."""

from __future__ import annotations

import csv
import io
import math
import sys
from pathlib import Path

import click

from edge_gru.backends import BACKENDS, KERAS_REFERENCE
from edge_gru.cli.csvdata import strict_option
from edge_gru.cli.evaluate import load_for_csv
from edge_gru.errors import EdgeGruError

COLUMNS = ("timestamp", "value", "forecast", "forecast_ts", "lower", "upper", "anomaly", "status")


@click.command()
@click.argument("bundle_dir", type=click.Path(file_okay=False))
@click.argument("data", type=click.Path(dir_okay=False))
@click.option("--column", required=True, help="Column to forecast (the bundle's target).")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="CSV file to write ('-': stdout).")
@click.option("--time-column", default=None, help="Timestamp column (default: the first column; 'none' for none).")
@click.option(
    "--features",
    default=None,
    help="Columns feeding the bundle's extra inputs, comma-separated (default: the bundle's feature names).",
)
@click.option("--backend", type=click.Choice([*BACKENDS, KERAS_REFERENCE]), default="numba", show_default=True)
@strict_option
def forecast(
    bundle_dir: str,
    data: str,
    column: str,
    out: str,
    time_column: str | None,
    features: str | None,
    backend: str,
    strict: bool,
) -> None:
    """Feed column --column of DATA to BUNDLE_DIR reading by reading, as the daemon does, and write
    one row per file row: timestamp, value, forecast, forecast_ts, lower, upper, anomaly, status.

    The forecast is the one made at that reading for the next sample (due at forecast_ts, epoch
    seconds), exactly as the daemon would publish it; it is empty unless the status is
    'forecast'. lower/upper are the forecast's prediction interval and anomaly (1/0) says whether
    this reading was flagged, when the bundle's adaptation is on (empty otherwise). Other
    statuses are the pool's: warmup, not_finite (a missing value), duplicate, out_of_order.
    """
    from edge_gru.daemon.payload import STATUS_REASONS
    from edge_gru.evaluation import run_streams
    from edge_gru.pool import Status

    try:
        model, series = load_for_csv(bundle_dir, data, column, time_column, features, backend, strict)
        run = run_streams(model, {"series": series})["series"]
    except EdgeGruError as exc:
        raise click.ClickException(str(exc)) from exc
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    dropped = list(series.dropped_rows)
    target = series.target_values
    times = series.times
    fts = run.forecast_ts
    d = 0
    for i in range(len(series) + 1):
        while d < len(dropped) and dropped[d].before == i:
            row = dropped[d]
            writer.writerow((_num(row.time), _num(row.values[0]), "", "", "", "", "", row.reason))
            d += 1
        if i == len(series):
            break
        status = Status(int(run.status[i]))
        made = status == Status.FORECAST
        writer.writerow(
            (
                "" if times is None else _num(times[i]),
                _num(target[i]),
                _num(run.forecasts[i]) if made else "",
                _num(fts[i]) if made and fts is not None else "",
                _num(run.lower[i]) if made and run.lower is not None else "",
                _num(run.upper[i]) if made and run.upper is not None else "",
                "" if run.anomaly is None else str(int(run.anomaly[i])),
                "forecast" if made else STATUS_REASONS[status],
            )
        )
    text = buf.getvalue()
    if out == "-":
        sys.stdout.write(text)
        return
    try:
        Path(out).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise click.ClickException(f"{out}: cannot write ({exc.strerror})") from exc
    n = int((run.status == Status.FORECAST).sum())
    click.echo(f"wrote {out}: {len(series) + len(dropped):,} rows, {n:,} forecasts ({model.id}, {model.backend_name})")


def _num(x: float) -> str:
    """The shortest text that reads back as the same float; empty for NaN."""
    return repr(float(x)) if math.isfinite(x) else ""
