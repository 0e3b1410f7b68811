"""The simulator's report: forecast accuracy against persistence, drops, faults, speed.

Accuracy is scored on exactly the readings the pool accepted, by the one scorer and
pairing rule of :mod:`edge_gru.scoring` (the scorer of ``edge-gru evaluate``), so a
replayed CSV scores as ``evaluate`` scores it.
Everything except ``timing`` is a pure function of the seed, the model and the options.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge_gru.scoring import Scores, next_reading_pairs
from sim.faults import FATES, STREAM_FAULTS
from sim.schedule import Schedule
from sim.transport import NON_PAYLOAD_REASONS, Outcome


@dataclass
class StreamScore:
    """One stream's scored pairs (forecast or persistence vs the next accepted reading)."""

    stream: str
    profile: str
    messages: int  # messages sent, faults included
    accepted: int  # readings the pool should accept (the simulator's ground truth)
    forecasts: int  # forecasts published
    target_ts: np.ndarray  # (n,) ts of the actual reading each pair is scored against
    actual: np.ndarray  # (n,)
    forecast: np.ndarray  # (n,)
    persistence: np.ndarray  # (n,) the reading before ``actual``
    scale: float  # the stream's standard deviation, for standardized errors
    lower: np.ndarray | None = None  # (n,) the forecast's interval (adaptation on), else None
    upper: np.ndarray | None = None
    anomalies: int = 0  # forecasts that flagged the reading they follow

    @property
    def n(self) -> int:
        return int(self.actual.size)

    def errors(self) -> tuple[np.ndarray, np.ndarray]:
        return self.forecast - self.actual, self.persistence - self.actual


def _intervals(group: list[StreamScore]) -> dict[str, Any]:
    """Empirical coverage and mean width of the forecasts' intervals (adaptation on), anomalies flagged."""
    if not group or any(s.lower is None or s.upper is None for s in group):
        return {}
    lo = np.concatenate([s.lower for s in group if s.lower is not None])
    hi = np.concatenate([s.upper for s in group if s.upper is not None])
    actual = np.concatenate([s.actual for s in group])
    width = hi - lo
    return {
        "coverage": float(np.mean((lo <= actual) & (actual <= hi))) if actual.size else None,
        "interval_width": float(np.nanmean(width)) if np.isfinite(width).any() else None,
        "anomalies": sum(s.anomalies for s in group),
    }


def _metrics(model_err: np.ndarray, pers_err: np.ndarray) -> dict[str, Any]:
    return Scores.of(model_err, pers_err).metrics()


@dataclass
class Report:
    meta: dict[str, Any]
    streams: list[StreamScore]
    outcome: Outcome
    injected: dict[str, int]
    run_faults: dict[str, int]
    expected: dict[str, int]  # expected fates of the messages sent (sim.faults.FATES)
    unmatched_forecasts: int
    profiles: list[dict[str, Any]] = field(default_factory=list)

    # -- numbers ---------------------------------------------------------------------------
    @property
    def accepted_observed(self) -> int:
        """Readings the daemon accepted by its own counters: forecasts plus warm-up readings."""
        return self.outcome.published + self.outcome.dropped.get("warmup", 0)

    @property
    def accepted_consistent(self) -> bool:
        """The daemon accepted exactly the readings the simulator expects it to (scoring relies on this)."""
        return self.accepted_observed == self.expected["accept"]

    @property
    def payload_drops(self) -> dict[str, int]:
        return {k: v for k, v in self.outcome.dropped.items() if k not in NON_PAYLOAD_REASONS}

    def fault_checks(self) -> dict[str, dict[str, Any]]:
        """Each injected fault beside the daemon counter that should show it."""
        dropped = self.outcome.dropped
        inj = self.injected
        checks: dict[str, dict[str, Any]] = {
            "nan": {"injected": inj.get("nan", 0), "observed": dropped.get("not_finite", 0), "counter": "not_finite"},
            "garbage": {
                "injected": inj.get("garbage", 0),
                "observed": sum(self.payload_drops.values()),
                "counter": "payload drops",
            },
            "out_of_order": {
                "injected": inj.get("out_of_order", 0),
                "observed": dropped.get("out_of_order", 0),
                "counter": "out_of_order",
            },
            "duplicate": {
                "injected": inj.get("duplicate", 0),
                "observed": dropped.get("duplicate", 0),
                "counter": "duplicate",
            },
            "gap+clock_jump": {
                "injected": inj.get("gap", 0) + inj.get("clock_jump", 0),
                "observed": self.outcome.gap_resets,
                "counter": "gap resets",
            },
        }
        if not self.outcome.extra.get("stats_complete", True):
            for c in checks.values():
                c["observed"] = None  # the daemon's counters were not available for this run
        for name in ("dropout", "spike", "stuck"):
            checks[name] = {"injected": inj.get(name, 0), "observed": None, "counter": "not counted by the daemon"}
        return checks

    def summary(self) -> dict[str, Any]:
        """All streams together. Raw MAE/RMSE only when every stream has one profile (else units differ);
        the ratios always, from errors in units of each stream's standard deviation."""
        scored = [s for s in self.streams if s.n]
        if not scored:
            return _metrics(np.zeros(0), np.zeros(0))
        raw = _metrics(np.concatenate([s.errors()[0] for s in scored]), np.concatenate([s.errors()[1] for s in scored]))
        std = _metrics(
            np.concatenate([s.errors()[0] / s.scale for s in scored]),
            np.concatenate([s.errors()[1] / s.scale for s in scored]),
        )
        if len({s.profile for s in scored}) > 1:
            raw.update(mae=None, rmse=None, persistence_mae=None, persistence_rmse=None)
        raw.update(_intervals(scored))
        if len({s.profile for s in scored}) > 1 and "interval_width" in raw:
            raw["interval_width"] = None  # raw units differ
        raw["mae_ratio"] = std["mae_ratio"]
        raw["rmse_ratio"] = std["rmse"] / std["persistence_rmse"] if std["persistence_rmse"] else None
        return raw

    def to_json(self) -> dict[str, Any]:
        o = self.outcome
        return {
            **self.meta,
            "model": o.model_id,
            "backend": o.backend,
            "transport": o.transport,
            "readings": int(sum(s.messages for s in self.streams)),
            "received": o.received,
            "published": o.published,
            "dropped": dict(sorted(o.dropped.items())),
            "gap_resets": o.gap_resets,
            "unmatched_forecasts": self.unmatched_forecasts,
            "accepted": {"expected": self.expected["accept"], "observed": self.accepted_observed},
            "expected": self.expected,
            "faults": {"injected": self.injected, **self.run_faults, "checks": self.fault_checks()},
            "total": self.summary(),
            "profiles": self.profiles,
            "streams": [
                {
                    "stream": s.stream,
                    "profile": s.profile,
                    "messages": s.messages,
                    "accepted": s.accepted,
                    "forecasts": s.forecasts,
                    **_metrics(*s.errors()),
                }
                for s in self.streams
            ],
            "timing": {
                "wall_s": round(o.wall_s, 4),
                "readings_per_s": round(o.received / o.wall_s, 1) if o.wall_s > 0 else None,
                "latency": {"kind": o.latency_kind, **o.latency_ms},
                **{k: v for k, v in o.extra.items() if k in ("batches", "warmup")},
            },
        }

    # -- text ------------------------------------------------------------------------------
    def table(self) -> str:
        o = self.outcome
        m = self.meta
        head = (
            f"edge-gru simulate: {len(self.streams)} stream{'s' if len(self.streams) != 1 else ''}, "
            f"{m['readings_label']}, seed {m['seed']}, "
            f"{o.transport}, model {o.model_id} ({o.backend})"
        )
        cols: tuple[str, ...] = (
            "profile", "streams", "readings", "forecasts", "MAE", "RMSE", "persist MAE", "persist RMSE", "ratio"
        )  # fmt: skip
        banded = bool(self.profiles) and all("coverage" in p for p in self.profiles)
        if banded:
            cols += ("coverage", "width", "anomalies")
        rows = []
        for p in [*self.profiles, {"profile": "all", **self._totals_row()}]:
            extra: tuple[str, ...] = ()
            if banded:
                cov = p.get("coverage")
                extra = (
                    "-" if cov is None else f"{cov:.3f}",
                    _fmt(p.get("interval_width")),
                    str(p.get("anomalies", 0)),
                )
            rows.append(
                (
                    p["profile"],
                    str(p["streams"]),
                    f"{p['readings']:,}",
                    f"{p['forecasts']:,}",
                    _fmt(p["mae"]),
                    _fmt(p["rmse"]),
                    _fmt(p["persistence_mae"]),
                    _fmt(p["persistence_rmse"]),
                    "-" if p["mae_ratio"] is None else f"{p['mae_ratio']:.3f}",
                    *extra,
                )
            )
        widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
        lines = [head, ""]
        lines.append(
            "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cols, widths, strict=True)))
        )
        for j, r in enumerate(rows):
            if j == len(rows) - 1:
                lines.append("  ".join("-" * w for w in widths))
            lines.append(
                "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
            )
        lines.append("ratio = model MAE / persistence MAE on the same pairs (below 1: the model beats persistence);")
        lines.append("the 'all' row pools errors in units of each stream's standard deviation")
        if banded:
            lines.append("coverage = share of next readings inside the forecast's interval; width = mean upper - lower")
        lines.append("")
        drops = ", ".join(f"{k} {v:,}" for k, v in sorted(o.dropped.items())) or "none"
        if not o.extra.get("stats_complete", True):
            drops = (
                "unknown (the daemon's stats topic did not report before and after the run: "
                "set [stats] interval_s = 1 in its config)"
            )
        lines.append(f"readings   {o.received:,} received, {o.published:,} forecasts published; dropped: {drops}")
        if o.gap_resets is not None:
            lines.append(f"gap resets {o.gap_resets:,}")
        for stream, counts in self.meta.get("replay_dropped", {}).items():
            shown = ", ".join(f"{reason} {n:,}" for reason, n in counts.items())
            lines.append(f"replay     {stream}: file rows dropped as the daemon would, not sent: {shown}")
        if any(self.injected.values()) or any(self.run_faults.values()):
            parts = []
            for name, c in self.fault_checks().items():
                if not c["injected"]:
                    continue
                seen = "" if c["observed"] is None else f" -> {c['counter']} {c['observed']:,}"
                parts.append(f"{name} {c['injected']:,}{seen}")
            parts += [f"{k} {v}" for k, v in self.run_faults.items() if v]
            lines.append("faults     " + "; ".join(parts))
        if not self.accepted_consistent and o.extra.get("stats_complete", True):
            lines.append(
                f"WARNING    the daemon accepted {self.accepted_observed:,} readings, the simulator expected "
                f"{self.expected['accept']:,}: scores pair forecasts with the readings it expected"
            )
        if self.unmatched_forecasts:
            lines.append(f"WARNING    {self.unmatched_forecasts} forecasts matched no accepted reading")
        lat = o.latency_ms
        if lat.get("p50_ms") is not None:
            lines.append(f"latency    p50 {lat['p50_ms']:.3f} ms, p99 {lat['p99_ms']:.3f} ms ({o.latency_kind})")
        rate = o.received / o.wall_s if o.wall_s > 0 else float("nan")
        lines.append(f"throughput {o.received:,} readings in {o.wall_s:.2f} s = {rate:,.0f} readings/s")
        warmup = o.extra.get("warmup")
        if warmup:
            what = {True: "numba compiled the kernels; cached for later runs", False: "kernels from numba's cache"}
            detail = what.get(warmup.get("compiled"), f"{o.backend} backend")
            lines.append(f"warm-up    {warmup['s']:.2f} s before the clock started ({detail}), not in the throughput")
        return "\n".join(lines)

    def _totals_row(self) -> dict[str, Any]:
        return {
            "streams": len(self.streams),
            "readings": sum(s.messages for s in self.streams),
            "forecasts": sum(s.forecasts for s in self.streams),
            **self.summary(),
        }


def _fmt(x: float | None) -> str:
    if x is None or not math.isfinite(x):
        return "-"
    return f"{x:.4g}"


def score(schedule: Schedule, outcome: Outcome, meta: dict[str, Any], run_faults: dict[str, int]) -> Report:
    """Pair every published forecast with its stream's next accepted reading and build the report."""
    n_streams = len(schedule.streams)
    acc_mask = schedule.fates == FATES.index("accept")
    acc_idx = np.flatnonzero(acc_mask)
    order = np.argsort(schedule.stream[acc_idx], kind="stable")
    acc_idx = acc_idx[order]
    acc_counts = np.bincount(schedule.stream[acc_idx], minlength=n_streams)
    acc_split = np.split(acc_idx, np.cumsum(acc_counts)[:-1])
    msg_counts = np.bincount(schedule.stream, minlength=n_streams)

    valid = outcome.stream >= 0
    f_order = np.argsort(outcome.stream[valid], kind="stable")
    f_stream = outcome.stream[valid][f_order]
    f_ts = outcome.ts[valid][f_order]
    f_val = outcome.value[valid][f_order]
    f_counts = np.bincount(f_stream, minlength=n_streams)
    f_bounds = np.r_[0, np.cumsum(f_counts)]
    unmatched = int((~valid).sum())

    scores: list[StreamScore] = []
    for k, series in enumerate(schedule.streams):
        acc = acc_split[k]
        a_ts, a_v = schedule.ts[acc], schedule.values[acc]
        lo, hi = f_bounds[k], f_bounds[k + 1]
        ts_k, val_k = f_ts[lo:hi], f_val[lo:hi]
        pos = np.searchsorted(a_ts, ts_k)
        hit = pos < a_ts.size
        hit[hit] = a_ts[pos[hit]] == ts_k[hit]
        unmatched += int((~hit).sum())
        fc = np.full(a_ts.size, np.nan)
        fc[pos[hit]] = val_k[hit]
        bands: dict[str, Any] = {}
        if outcome.lower is not None and outcome.upper is not None and outcome.anomaly is not None:
            lo_k = np.full(a_ts.size, np.nan)
            hi_k = np.full(a_ts.size, np.nan)
            lo_k[pos[hit]] = outcome.lower[valid][f_order][lo:hi][hit]
            hi_k[pos[hit]] = outcome.upper[valid][f_order][lo:hi][hit]
            bands = {"anomalies": int(outcome.anomaly[valid][f_order][lo:hi].sum()), "_lo": lo_k, "_hi": hi_k}
        # the one pairing rule (edge_gru.scoring): the next accepted reading, about one period later
        pair = next_reading_pairs(a_ts, np.isfinite(fc), series.period)
        scores.append(
            StreamScore(
                stream=series.stream,
                profile=series.profile,
                messages=int(msg_counts[k]),
                accepted=int(acc.size),
                forecasts=int(hi - lo),
                target_ts=a_ts[pair + 1],
                actual=a_v[pair + 1],
                forecast=fc[pair],
                persistence=a_v[pair],
                scale=float(np.std(series.values)) or 1.0,
                lower=bands["_lo"][pair] if bands else None,
                upper=bands["_hi"][pair] if bands else None,
                anomalies=bands.get("anomalies", 0),
            )
        )
    profiles = []
    for name in dict.fromkeys(s.profile for s in scores):
        group = [s for s in scores if s.profile == name]
        me = np.concatenate([s.errors()[0] for s in group])
        pe = np.concatenate([s.errors()[1] for s in group])
        profiles.append(
            {
                "profile": name,
                "streams": len(group),
                "readings": sum(s.messages for s in group),
                "forecasts": sum(s.forecasts for s in group),
                **_metrics(me, pe),
                **_intervals(group),
            }
        )
    fates = np.bincount(schedule.fates.astype(np.int64), minlength=len(FATES))
    expected = {name: int(fates[i]) for i, name in enumerate(FATES)}
    injected = {k: int(schedule.injected.get(k, 0)) for k in STREAM_FAULTS}
    return Report(meta, scores, outcome, injected, run_faults, expected, unmatched, profiles)
