"""Per-stream online adaptation: a forecast combination, conformal intervals and anomaly flags.

A generic GRU cannot be the best forecaster on every sensor: on a random walk nothing beats
persistence, on a slow trend a Holt smoother is hard to beat, on a daily cycle the value
one season ago is. So every stream keeps a few cheap online forecasters beside the GRU
and publishes a convex combination of them, weighted by each candidate's recent absolute
errors *on that stream*:

candidates (``k``)
    ``gru`` (the network's forecast), ``persistence`` (the last reading), ``holt``
    (damped level + trend smoother) and, when ``season`` > 0 samples, ``seasonal``
    (the reading one season ago).

weights
    ``L_k`` is the exponentially weighted mean absolute error of candidate ``k`` (half-life
    ``halflife`` readings, bias-corrected), and ``w_k ∝ (min_j L_j / L_k) ** sharpness``.
    Absolute loss is convex, so the combination's error is at most the weighted mean of the
    candidates' errors; a large ``sharpness`` puts almost all the weight on the candidate
    that has recently been best, so after warm-up the combination is never materially worse
    than its best candidate (and beats it where two candidates err differently).

interval
    Online conformal (a quantile tracker on a scale-free multiplier): ``radius = m * s``
    where ``s`` is the EW mean absolute residual of the published forecast and ``m`` is
    updated after each reading by ``m += gamma * (miss - (1 - coverage))``. Whatever the
    stream does, the long-run miss rate converges to ``1 - coverage`` because ``m`` stays
    bounded (``|miss rate - (1 - coverage)| <= range(m) / (gamma * T)``).

anomaly
    A reading whose residual exceeds ``anomaly_sigmas`` robust sigmas (``1.2533 * s``), or
    the reading that makes a run of identical readings improbable for this stream
    (``p0 ** run < 1e-3`` where ``p0`` is the stream's EW rate of exact repeats): a
    stuck sensor. With ``hold_out`` the state advances with the previous forecast in place of
    a residual anomaly (at most ``MAX_HELD`` readings in a row, so a true level shift is
    accepted after that).

State: a few dozen float64 per stream plus a ring of ``season`` readings, in preallocated
row arrays owned by :class:`~edge_gru.pool.StreamPool`; no allocation per step beyond numpy
temporaries. ``enabled = false`` (the default for bundles without an ``adaptation``
object) leaves the pool's forecasts bit-identical to the pure GRU.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields, replace
from statistics import NormalDist
from typing import Any

import numpy as np

from edge_gru.errors import BundleError

GRU, PERSISTENCE, HOLT = 0, 1, 2  # candidate columns: gru, persistence, one per Holt smoother, seasonal last
SIGMA_PER_MAE = 1.2533  # sigma / mean absolute deviation of a normal distribution
MIN_SCORED = 3.0  # effective scored readings before a candidate's error counts
MIN_ANOMALY = 20.0  # residuals seen before a reading can be called an anomaly
MAX_HELD = 2  # hold-out never skips more readings than this in a row
STUCK_P = 1e-3  # a run of repeats this improbable for the stream is a stuck sensor
STUCK_MIN_RUN = 3
M_MAX = 50.0


@dataclass(frozen=True)
class AdaptationSpec:
    """The manifest's optional ``adaptation`` object (every field optional)."""

    enabled: bool = True
    halflife: float = 200.0  # readings: memory of each candidate's error
    sharpness: float = 30.0  # weight exponent; large = follow the recently best candidate
    # one Holt smoother per (alpha, beta) pair: a fast one (level = the reading, damped trend of its
    # changes) and a smooth one, so noisy and clean streams both find a good smoother
    holt_alpha: tuple[float, ...] = (1.0, 0.3)
    holt_beta: tuple[float, ...] = (0.3, 0.3)
    holt_phi: float = 0.9  # trend damping
    season: int = 0  # samples; 0 = no seasonal-naive candidate
    coverage: float = 0.9
    interval_gamma: float = 0.05
    scale_halflife: float = 48.0  # readings: memory of the residual scale
    anomaly_sigmas: float = 5.0  # 0 = no residual anomalies
    stuck: bool = True
    hold_out: bool = False

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["holt_alpha"], data["holt_beta"] = list(self.holt_alpha), list(self.holt_beta)
        return data

    @classmethod
    def from_json(cls, data: Any, *, where: str = "manifest.json: field 'adaptation'") -> AdaptationSpec:
        if isinstance(data, bool):
            return cls(enabled=data)
        if not isinstance(data, dict):
            raise BundleError(f"{where} must be an object (or true/false)")
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise BundleError(f"{where}.{unknown[0]} is not a known setting ({', '.join(known)})")
        out: dict[str, Any] = {}
        for name, value in data.items():
            default = getattr(cls, name)
            if isinstance(default, tuple):
                value = [value] if isinstance(value, int | float) and not isinstance(value, bool) else value
                if (
                    not isinstance(value, list)
                    or not value
                    or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
                ):
                    raise BundleError(f"{where}.{name} is {value!r}, expected a number or a list of numbers")
                value = tuple(float(v) for v in value)
            elif isinstance(default, bool):
                if not isinstance(value, bool):
                    raise BundleError(f"{where}.{name} is {value!r}, expected true or false")
            elif isinstance(default, int):
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise BundleError(f"{where}.{name} is {value!r}, expected an integer >= 0")
            elif isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise BundleError(f"{where}.{name} is {value!r}, expected a finite number")
            out[name] = value
        spec = cls(**out)
        checks = (
            ("halflife", spec.halflife >= 1.0, ">= 1"),
            ("scale_halflife", spec.scale_halflife >= 1.0, ">= 1"),
            ("sharpness", spec.sharpness >= 0.0, ">= 0"),
            ("holt_alpha", all(0.0 < a <= 1.0 for a in spec.holt_alpha), "in (0, 1]"),
            ("holt_beta", all(0.0 <= b <= 1.0 for b in spec.holt_beta), "in [0, 1]"),
            ("holt_beta", len(spec.holt_beta) == len(spec.holt_alpha), "as many entries as holt_alpha"),
            ("holt_phi", 0.0 <= spec.holt_phi <= 1.0, "in [0, 1]"),
            ("coverage", 0.0 < spec.coverage < 1.0, "in (0, 1)"),
            ("interval_gamma", 0.0 < spec.interval_gamma <= 1.0, "in (0, 1]"),
            ("anomaly_sigmas", spec.anomaly_sigmas >= 0.0, ">= 0"),
        )
        for name, ok, rule in checks:
            if not ok:
                raise BundleError(f"{where}.{name} is {getattr(spec, name)!r}, expected {rule}")
        return spec

    def with_overrides(self, **changes: Any) -> AdaptationSpec:
        return replace(self, **changes)

    def key(self) -> str:
        return json.dumps(self.to_json(), sort_keys=True)


OFF = AdaptationSpec(enabled=False)


def manifest_spec(extra: dict[str, Any]) -> AdaptationSpec:
    """The bundle's adaptation settings; a bundle without the object serves the pure GRU."""
    data = extra.get("adaptation")
    return OFF if data is None else AdaptationSpec.from_json(data)


MODES = ("bundle", "on", "off")


def resolve_spec(extra: dict[str, Any], mode: str = "bundle", *, hold_out: bool | None = None) -> AdaptationSpec:
    """The settings a pool runs with: the bundle's (``bundle``), or forced ``on`` (the bundle's
    settings, else the defaults) or ``off``; ``hold_out`` overrides the bundle's hold-out."""
    if mode not in MODES:
        raise ValueError(f"adaptation {mode!r}: choose one of {', '.join(MODES)}")
    spec = manifest_spec(extra)
    if mode == "on" and not spec.enabled:
        spec = replace(spec, enabled=True)
    elif mode == "off":
        spec = OFF
    if hold_out is not None and spec.enabled:
        spec = replace(spec, hold_out=hold_out)
    return spec


def _alpha(halflife: float) -> float:
    return 1.0 - math.exp(math.log(0.5) / halflife)


# Per-row float arrays: (name, trailing shape as a function of K and season, fill).
_STATE = (
    "pred",  # (K,) each candidate's forecast of the next reading; NaN when none
    "loss",  # (K,) EW sum of absolute errors
    "lw",  # (K,) EW sum of weights (bias correction of loss)
    "last",  # () newest reading (the state's, i.e. after hold-out)
    "level",
    "trend",
    "n",  # () readings seen since the last reset
    "ring",  # (season,) the last ``season`` readings
    "fc",  # () the published forecast of the next reading; NaN when none
    "radius",  # () its interval half-width
    "scale",  # () EW sum of absolute residuals of the published forecast
    "sw",  # () EW sum of weights of ``scale``
    "mult",  # () conformal multiplier
    "p0",  # () EW rate of exact repeats
    "run",  # () length of the current run of identical readings
    "held",  # () readings held out in a row
)


# What a gap reset clears; the rest describes the stream and survives it.
_SOFT = ("pred", "last", "level", "trend", "n", "ring", "fc", "radius", "run", "held")


class Adapter:
    """The combination, interval and anomaly state of many streams, indexed by pool row."""

    pred: np.ndarray
    loss: np.ndarray
    lw: np.ndarray
    last: np.ndarray
    level: np.ndarray
    trend: np.ndarray
    n: np.ndarray
    ring: np.ndarray
    fc: np.ndarray
    radius: np.ndarray
    scale: np.ndarray
    sw: np.ndarray
    mult: np.ndarray
    p0: np.ndarray
    run: np.ndarray
    held: np.ndarray

    def __init__(self, spec: AdaptationSpec) -> None:
        self.spec = spec
        self.holts = len(spec.holt_alpha)
        self.seasonal = HOLT + self.holts if spec.season > 0 else -1  # its column, -1: none
        self.k = HOLT + self.holts + (1 if spec.season > 0 else 0)
        self.holt_alpha = np.array(spec.holt_alpha)
        self.holt_beta = np.array(spec.holt_beta)
        self.a = _alpha(spec.halflife)
        self.a_scale = _alpha(spec.scale_halflife)
        self.a_p0 = _alpha(200.0)
        # EW weight sums after this many residuals: enough to publish an interval / to judge an anomaly
        self.sw_interval = 1.0 - (1.0 - self.a_scale) ** MIN_SCORED
        self.sw_anomaly = 1.0 - (1.0 - self.a_scale) ** MIN_ANOMALY
        self.m0 = NormalDist().inv_cdf(0.5 + spec.coverage / 2) * SIGMA_PER_MAE
        self.stuck_log = math.log(STUCK_P)
        self.capacity = 0
        self._kernels: Any = None  # edge_gru.adaptation_kernels once compile() ran
        for name in _STATE:
            setattr(self, name, np.zeros((0, *self._shape(name))))

    def compile(self) -> None:
        """Run the two phases as numba loops (same numbers as the numpy reference; needs numba)."""
        from edge_gru import adaptation_kernels

        spec = self.spec
        self._obs_params = np.array(
            [
                self.a, 1.0 - self.a, SIGMA_PER_MAE, self.sw_anomaly, spec.anomaly_sigmas, spec.interval_gamma,
                1.0 - spec.coverage, M_MAX, self.a_scale, 1.0 - self.a_scale, self.a_p0, float(spec.stuck),
                self.stuck_log, float(STUCK_MIN_RUN), float(spec.hold_out), float(MAX_HELD),
            ]
        )  # fmt: skip
        self._fc_params = np.array(
            [spec.holt_phi, 1.0 / self.a, MIN_SCORED, spec.sharpness, self.sw_interval, float(self.seasonal)]
        )
        self._kernels = adaptation_kernels

    def warm_up(self) -> None:
        """Compile (or load from numba's cache) both compiled phases on a scratch row, so that
        neither the first reading's latency nor a throughput figure pays for it."""
        scratch = Adapter(self.spec)
        scratch.compile()
        scratch.grow(1)
        scratch.reset(np.zeros(1, dtype=np.int64))
        rows, x = np.zeros(1, dtype=np.int64), np.zeros(1)
        scratch.observe(rows, x)
        scratch.forecast(rows, x, np.zeros(1))

    def _shape(self, name: str) -> tuple[int, ...]:
        if name in ("pred", "loss", "lw"):
            return (self.k,)
        if name in ("level", "trend"):
            return (self.holts,)
        if name == "ring":
            return (self.spec.season,)
        return ()

    def grow(self, capacity: int) -> None:
        old = self.capacity
        if capacity <= old:
            return
        for name in _STATE:
            arr = np.zeros((capacity, *self._shape(name)))
            arr[:old] = getattr(self, name)
            setattr(self, name, arr)
        self.capacity = capacity
        self.reset(np.arange(old, capacity))

    def reset(self, rows: np.ndarray, *, full: bool = True) -> None:
        """Forget a stream's recent readings (after a gap, ``full=False``) or everything it taught (new stream).

        A gap does not change what a stream is like: its candidates' track records, residual
        scale, conformal multiplier and repeat rate carry over; its forecasters restart.
        """
        for name in _SOFT if not full else _STATE:
            getattr(self, name)[rows] = 0.0
        self.pred[rows] = np.nan
        self.fc[rows] = np.nan
        self.radius[rows] = np.nan
        if full:
            self.mult[rows] = self.m0

    # -- per reading -------------------------------------------------------------------------
    def observe(self, rows: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Score the forecasts made for readings ``x`` of distinct ``rows``; before the model steps.

        Returns ``(anomaly, hold, replacement)``: flags per reading, which readings the state
        should not learn from, and the value to advance the state with instead.
        """
        if self._kernels is not None:
            s = rows.shape[0]
            anomaly, hold, replacement = np.empty(s, dtype=np.bool_), np.empty(s, dtype=np.bool_), np.empty(s)
            state = (self.pred, self.loss, self.lw, self.last, self.fc, self.radius, self.scale, self.sw, self.mult,
                     self.p0, self.run, self.held, self.n)  # fmt: skip
            self._kernels.observe(rows, np.ascontiguousarray(x, dtype=np.float64), state, self._obs_params,
                                  anomaly, hold, replacement)  # fmt: skip
            return anomaly, hold, replacement
        spec = self.spec
        fc = self.fc[rows]
        has_fc = np.isfinite(fc)
        resid = np.abs(x - fc)
        # candidates: EW absolute error where each made a forecast
        pred = self.pred[rows]
        scored = np.isfinite(pred)
        err = np.where(scored, np.abs(pred - x[:, None]), 0.0)
        keep = 1.0 - self.a
        self.loss[rows] = np.where(scored, keep * self.loss[rows] + self.a * err, self.loss[rows])
        self.lw[rows] = np.where(scored, keep * self.lw[rows] + self.a, self.lw[rows])
        # interval coverage and the scale of residuals
        scale = self._scale(rows)
        radius = self.radius[rows]
        miss = has_fc & (resid > radius)
        sigma = SIGMA_PER_MAE * scale
        seasoned = self.sw[rows] >= self.sw_anomaly
        outlier = has_fc & (spec.anomaly_sigmas > 0) & (resid > spec.anomaly_sigmas * sigma) & seasoned
        anomaly = outlier.copy()
        m = self.mult[rows] + spec.interval_gamma * (miss - (1.0 - spec.coverage))
        self.mult[rows] = np.where(has_fc, np.clip(m, 0.0, M_MAX), self.mult[rows])
        # a spike must not blow the scale up: clip the residual it learns from
        r = np.where(seasoned, np.minimum(resid, 4.0 * sigma), resid)
        ka = 1.0 - self.a_scale
        self.scale[rows] = np.where(has_fc, ka * self.scale[rows] + self.a_scale * r, self.scale[rows])
        self.sw[rows] = np.where(has_fc, ka * self.sw[rows] + self.a_scale, self.sw[rows])
        # stuck sensor: a run of exact repeats that is improbable for this stream
        n = self.n[rows]
        repeat = (n > 0) & (x == self.last[rows])
        run = np.where(repeat, self.run[rows] + 1.0, 0.0)
        self.run[rows] = run
        p0 = self.p0[rows]
        learn = (n > 0) & (run <= 1.0)
        self.p0[rows] = np.where(learn, p0 + self.a_p0 * (repeat - p0), p0)
        if spec.stuck:
            # flagged once per run, on the reading that makes it improbable: p0 ** run < STUCK_P
            need = np.maximum(STUCK_MIN_RUN, np.ceil(self.stuck_log / np.log(np.clip(p0, 1e-12, 0.999))))
            anomaly |= (run == need) & (n > 20)
        hold = np.zeros(rows.shape[0], dtype=bool)
        if spec.hold_out:
            hold = outlier & (self.held[rows] < MAX_HELD)
            self.held[rows] = np.where(hold, self.held[rows] + 1.0, 0.0)
        return anomaly, hold, np.where(hold, fc, x)

    def forecast(self, rows: np.ndarray, x: np.ndarray, gru: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Advance the candidates with readings ``x`` and combine them with the GRU's forecasts ``gru``
        (NaN where the network has none yet) -> ``(forecast, lower, upper)`` of the next reading."""
        if self._kernels is not None:
            s = rows.shape[0]
            out_fc, out_radius = np.empty(s), np.empty(s)
            state = (self.pred, self.loss, self.lw, self.last, self.level, self.trend, self.ring, self.n, self.fc,
                     self.radius, self.scale, self.sw, self.mult)  # fmt: skip
            self._kernels.forecast(
                rows, np.ascontiguousarray(x, dtype=np.float64), np.ascontiguousarray(gru, dtype=np.float64), state,
                self.holt_alpha, self.holt_beta, self._fc_params, out_fc, out_radius,
            )  # fmt: skip
            return out_fc, out_fc - out_radius, out_fc + out_radius
        spec = self.spec
        n = self.n[rows] + 1.0
        self.n[rows] = n
        first = (n == 1.0)[:, None]
        # Holt: damped level + trend, one column per smoother
        xc = x[:, None]
        a, b, phi = self.holt_alpha, self.holt_beta, spec.holt_phi
        level0, trend0 = self.level[rows], self.trend[rows]
        level = np.where(first, xc, a * xc + (1.0 - a) * (level0 + phi * trend0))
        trend = np.where(first, 0.0, b * (level - level0) + (1.0 - b) * phi * trend0)
        self.level[rows], self.trend[rows] = level, trend
        self.last[rows] = x
        pred = np.empty((rows.shape[0], self.k))
        pred[:, GRU] = gru
        pred[:, PERSISTENCE] = x
        pred[:, HOLT : HOLT + self.holts] = level + phi * trend
        if self.seasonal >= 0:
            season = spec.season
            ring = self.ring
            pos = (n.astype(np.int64) - 1) % season
            ring[rows, pos] = x
            # the reading one season before the next one was written season - 1 readings ago
            nxt = n.astype(np.int64) % season
            pred[:, self.seasonal] = np.where(n >= season, ring[rows, nxt], np.nan)
        self.pred[rows] = pred
        fc = self._combine(rows, pred)
        radius = self.mult[rows] * self._scale(rows)
        radius = np.where(self.sw[rows] >= self.sw_interval, radius, np.nan)
        self.fc[rows] = fc
        self.radius[rows] = radius
        return fc, fc - radius, fc + radius

    def _weights(self, rows: np.ndarray, pred: np.ndarray) -> np.ndarray:
        """Combination weights (R, K); a row of zeros where no candidate has a track record yet."""
        lw = self.lw[rows]
        usable = np.isfinite(pred) & (lw * (1.0 / self.a) >= MIN_SCORED)
        mae = np.where(usable, self.loss[rows] / np.maximum(lw, 1e-300), np.inf)
        best = mae.min(axis=1, keepdims=True)
        best = np.where(np.isfinite(best), np.maximum(best, 1e-300), 1.0)
        ratio = np.where(usable, best / np.maximum(mae, 1e-300), 0.0)
        w: np.ndarray = np.where(usable, ratio**self.spec.sharpness, 0.0)
        return w

    def _combine(self, rows: np.ndarray, pred: np.ndarray) -> np.ndarray:
        w = self._weights(rows, pred)
        total = w.sum(axis=1)
        combo = (w * np.where(w > 0, pred, 0.0)).sum(axis=1) / np.where(total > 0, total, 1.0)
        # before any candidate has a track record: the GRU when it has a forecast, else persistence
        fallback = np.where(np.isfinite(pred[:, GRU]), pred[:, GRU], pred[:, PERSISTENCE])
        return np.where(total > 0, combo, fallback)

    def _scale(self, rows: np.ndarray) -> np.ndarray:
        sw = self.sw[rows]
        return self.scale[rows] / np.where(sw > 0, sw, 1.0)

    def weights(self, rows: np.ndarray) -> np.ndarray:
        """Current combination weights (R, K), normalized; for reports and tests."""
        w = self._weights(rows, self.pred[rows])
        total = w.sum(axis=1, keepdims=True)
        return w / np.where(total > 0, total, 1.0)

    # -- checkpoints ---------------------------------------------------------------------------
    def state(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        return {f"adapt_{name}": getattr(self, name)[rows] for name in _STATE}

    def restore(self, rows: np.ndarray, arrays: dict[str, np.ndarray]) -> bool:
        """Load saved rows; False (state left fresh) when the checkpoint has none of this shape."""
        n = rows.shape[0]
        for name in _STATE:
            arr = arrays.get(f"adapt_{name}")
            if arr is None or arr.shape != (n, *self._shape(name)):
                return False
        for name in _STATE:
            getattr(self, name)[rows] = arrays[f"adapt_{name}"]
        return True
