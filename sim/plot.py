"""``--plot out.png``: a few streams' actual readings beside their forecasts, and the error histograms.

matplotlib is the optional ``plot`` extra and is imported only here, only when asked for.
"""

from __future__ import annotations

import os

import numpy as np

from edge_gru.errors import MissingExtraError
from sim.report import Report

MAX_STREAMS = 4
LAST_POINTS = 288


def write_plot(report: Report, path: str | os.PathLike[str]) -> None:
    """Write a PNG: one panel per shown stream (last ``LAST_POINTS`` scored readings) and an error histogram."""
    try:
        import matplotlib
    except ImportError as exc:
        raise MissingExtraError("--plot", "plot", module="matplotlib") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = []
    seen: set[str] = set()
    for s in report.streams:  # one stream per profile first, then fill up
        if s.n and s.profile not in seen:
            shown.append(s)
            seen.add(s.profile)
    shown += [s for s in report.streams if s.n and s not in shown]
    shown = shown[:MAX_STREAMS]
    fig, axes = plt.subplots(len(shown) + 1, 1, figsize=(11, 2.4 * (len(shown) + 1)), squeeze=False)
    for ax, s in zip(axes[:-1, 0], shown, strict=False):
        t = (s.target_ts[-LAST_POINTS:] - s.target_ts[-LAST_POINTS:][0]) / 3600.0
        ax.plot(t, s.actual[-LAST_POINTS:], color="black", lw=1.2, label="actual")
        ax.plot(t, s.forecast[-LAST_POINTS:], color="tab:orange", lw=1.0, label="forecast (model)")
        ax.plot(t, s.persistence[-LAST_POINTS:], color="tab:blue", lw=0.8, ls=":", label="persistence")
        me, pe = s.errors()
        ax.set_title(
            f"{s.stream} ({s.profile}): MAE {np.mean(np.abs(me)):.4g} vs persistence {np.mean(np.abs(pe)):.4g}",
            fontsize=9,
            loc="left",
        )
        ax.set_xlabel("hours (last scored readings)", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.legend(fontsize=7, loc="upper right")
    ax = axes[-1, 0]
    model = np.concatenate([s.errors()[0] / s.scale for s in report.streams if s.n] or [np.zeros(0)])
    pers = np.concatenate([s.errors()[1] / s.scale for s in report.streams if s.n] or [np.zeros(0)])
    if model.size:
        lim = float(np.percentile(np.abs(np.r_[model, pers]), 99.5)) or 1.0
        bins = np.linspace(-lim, lim, 81)
        ax.hist(pers, bins=bins, alpha=0.5, color="tab:blue", label="persistence")
        ax.hist(model, bins=bins, alpha=0.5, color="tab:orange", label="model")
    ax.set_title("one-step errors of all streams, in units of each stream's standard deviation", fontsize=9, loc="left")
    ax.tick_params(labelsize=8)
    ax.legend(fontsize=7)
    meta = report.meta
    fig.suptitle(
        f"edge-gru simulate — model {report.outcome.model_id} ({report.outcome.backend}), seed {meta['seed']}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(os.fspath(path), dpi=110)
    plt.close(fig)
