"""Train a GRU forecaster on series and write a complete bundle.

The network is a layer list (``layers`` GRU widths, ``dense`` hidden relu widths, then
``Dense(horizon)``: the next ``horizon`` samples). ``window`` mode fits it on windows of W samples.
``stateful`` mode trains with truncated back-propagation through time: each batch lane
carries its hidden state from one chunk of ``bptt`` steps to the next along a run of
consecutive samples, and starts from a zero state where a segment starts (after a gap),
which is exactly how the pool serves a stream. Either way the split is chronological,
early stopping watches the validation loss, and the final test metrics come from running
the written bundle through the pool (``edge_gru.evaluation``), the way the daemon serves.

Same seed, same data, same result: the seed fixes every random choice (weights, shuffles,
dropout, chunk cuts) and TensorFlow op determinism is enabled.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from edge_gru.bundle import STEP_F32, STEP_INT8, Bundle, Manifest, Normalization, write_bundle
from edge_gru.errors import ConfigError, DataError
from edge_gru.evaluation import StreamRun, run_streams, score
from edge_gru.layers import DenseLayer, GRULayer, Layer, Network, NetworkWeights
from edge_gru.model import Model
from edge_gru.pool import Status
from edge_gru.scoring import Scores
from edge_gru.series import Series
from edge_gru.train import datasets, networks, tfruntime
from edge_gru.train.datasets import Prepared

log = logging.getLogger(__name__)
METRICS = "metrics.json"
Echo = Callable[[str], None]


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Everything that shapes a trained model; validated on construction."""

    layers: tuple[int, ...] = (50,)  # GRU units, first layer first
    dense: tuple[int, ...] = ()  # hidden Dense(relu) widths between the GRUs and the head
    horizon: int = 1  # Dense(horizon) head: forecasts of the next ``horizon`` samples
    window: int = 10
    mode: str = "window"
    epochs: int = 100
    batch_size: int = 64
    dropout: float = 0.0
    patience: int = 10
    seed: int = 0
    learning_rate: float = 1e-3
    lstm: bool = False
    season: int | None = None
    normalization: str = "fixed"
    halflife: float = 96.0
    clip: float = 8.0
    warmup: int | None = None
    bptt: int = 64
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    tflite: bool = True  # write the TFLite step models (False: a bundle for numba/numpy only)
    int8: bool = True
    name: str = "model"
    sample_period_s: float | None = None
    balance: bool = True
    calibration_samples: int = 1000
    cosine_decay: bool = False  # learning rate decays along a cosine to 5 % over all epochs
    loss: str = "mse"  # "mse", "mae" or "huber" (delta 1 in network units); MAE-like losses keep spikes
    # from pulling forecasts away from the median, which is what an MAE comparison rewards

    def __post_init__(self) -> None:
        checks = [
            (len(self.layers) >= 1 and all(u >= 1 for u in self.layers), "layers must be one or more widths >= 1"),
            (all(u >= 1 for u in self.dense), "dense widths must be >= 1"),
            (self.horizon >= 1, "horizon must be >= 1"),
            (self.window >= 1, "window must be >= 1"),
            (self.mode in ("window", "stateful"), f"mode must be 'window' or 'stateful', not {self.mode!r}"),
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (0.0 <= self.dropout < 1.0, "dropout must be in [0, 1)"),
            (self.patience >= 0, "patience must be >= 0"),
            (self.learning_rate > 0, "learning_rate must be > 0"),
            (self.season is None or self.season >= 1, "season must be >= 1"),
            (self.normalization in ("fixed", "causal"), "normalization must be 'fixed' or 'causal'"),
            (self.halflife >= 1.0, "halflife must be >= 1 sample"),
            (self.clip >= 0.0, "clip must be >= 0"),
            (self.bptt >= 2, "bptt must be >= 2"),
            (self.loss in ("mse", "mae", "huber"), f"loss must be 'mse', 'mae' or 'huber', not {self.loss!r}"),
            (
                0.0 < self.val_fraction < 0.5 and 0.0 < self.test_fraction < 0.5,
                "val/test fractions must be in (0, 0.5)",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"training configuration: {message}")

    def network(self, features: int) -> Network:
        """The layer list this configuration trains on ``features`` inputs."""
        layers: list[Layer] = [GRULayer(u) for u in self.layers]
        layers += [DenseLayer(u, "relu") for u in self.dense]
        layers.append(DenseLayer(self.horizon))
        return Network(features, tuple(layers))

    @property
    def served_warmup(self) -> int:
        if self.warmup is not None:
            return self.warmup
        if self.mode == "window":
            return self.window
        return 10 if self.normalization == "causal" else 1


@dataclass
class TrainResult:
    bundle: Bundle
    metrics: dict[str, Any]
    table: str
    history: list[dict[str, float]] = field(default_factory=list)


# -- the public entry point ---------------------------------------------------------------------------


def train(
    series: Series | Sequence[Series],
    out: str | Path,
    config: TrainConfig | None = None,
    *,
    echo: Echo | None = None,
    names: Sequence[str] | None = None,
) -> TrainResult:
    """Train on one or more series (same features), write the bundle to ``out``, return it with metrics."""
    keras = tfruntime.keras()
    tf = tfruntime.tensorflow()

    cfg = config or TrainConfig()
    say = echo or (lambda _msg: None)
    items = [series] if isinstance(series, Series) else list(series)
    if not items:
        raise DataError("no series to train on")
    names = list(names) if names else [Path(s.source).stem or f"series{i}" for i, s in enumerate(items)]
    features = items[0].features
    for s in items[1:]:
        if s.features != features:
            raise DataError(f"{s.source}: features {list(s.features)} differ from {list(features)}")
    min_run = cfg.window + cfg.horizon if cfg.mode == "window" else 1 + cfg.horizon
    ahead = "the next sample" if cfg.horizon == 1 else f"the next {cfg.horizon} samples"
    for s in items:
        s.require(min_run, f"a window of {cfg.window} plus {ahead}" if cfg.mode == "window" else "training")
    min_rows = max(4 * min_run, 20)
    splits = [datasets.chronological_split(s, cfg.val_fraction, cfg.test_fraction, min_rows=min_rows) for s in items]

    if cfg.normalization == "causal":
        normalization = Normalization(kind="causal", halflife=cfg.halflife, clip=cfg.clip)
    else:
        normalization = datasets.fit_fixed(list(zip(items, splits, strict=True)), cfg.clip)
    prepared = [datasets.prepare(s, sp, normalization, cfg.horizon) for s, sp in zip(items, splits, strict=True)]
    if cfg.balance and len(prepared) > 1:
        prepared = datasets.with_balanced_weights(prepared, settle=int(2 * cfg.halflife), absolute=cfg.loss != "mse")

    keras.utils.set_random_seed(cfg.seed)
    tf.config.experimental.enable_op_determinism()
    started = time.monotonic()
    network_spec = cfg.network(len(features))
    say(
        f"training {network_spec.describe()} {cfg.mode} on {len(items)} series, "
        f"{sum(sp.train for sp in splits):,} training rows"
    )
    if cfg.mode == "window":
        network, history = _fit_windows(prepared, cfg, network_spec, "gru", say)
    else:
        network, history = _fit_stateful(prepared, cfg, network_spec, "gru", say)
    weights = networks.weights_of(network)
    seconds = time.monotonic() - started

    lstm_forecasts = None
    if cfg.lstm:
        say("training the LSTM baseline")
        keras.utils.set_random_seed(cfg.seed)
        fit = _fit_windows if cfg.mode == "window" else _fit_stateful
        lstm, _ = fit(prepared, cfg, network_spec, "lstm", say)
        lstm_forecasts = [_network_forecasts(lstm, p, cfg, network_spec, "lstm") for p in prepared]

    period = cfg.sample_period_s
    if period is None and len(items) == 1 and cfg.normalization == "fixed":
        period = items[0].period
    manifest = Manifest(
        network=network_spec,
        window=cfg.window,
        mode=cfg.mode,
        features=features,
        target=features[0],
        normalization=normalization,
        sample_period_s=period,
        warmup=cfg.served_warmup,
        name=cfg.name,
        training={},
    )
    int8 = cfg.tflite and cfg.int8
    extra: dict[str, bytes] = {}
    calibration: list[tuple[np.ndarray, np.ndarray]] = []
    if cfg.tflite:
        from edge_gru.train import tflite_export  # the converter loads only when a TFLite model is made

        extra[STEP_F32] = tflite_export.convert_float(weights)
        if int8:
            calibration = _calibration(weights, prepared, cfg)
            extra[STEP_INT8] = tflite_export.convert_int8(weights, calibration, int8_io=False)
    bundle = write_bundle(out, manifest, weights, extra)

    streams = {name: s for name, s in zip(names, items, strict=True)}
    runs = {"gru": _runs(bundle, "numba", streams)}
    if cfg.tflite:
        runs["tflite"] = _runs(bundle, "tflite", streams)
    int8_report: dict[str, Any] = {}
    if int8:
        runs["tflite-int8"] = _runs(bundle, "tflite-int8", streams)
        float_io_blob = extra[STEP_INT8]
        int8_io_blob = tflite_export.convert_int8(weights, calibration, int8_io=True)
        bundle = write_bundle(out, manifest, weights, {**extra, STEP_INT8: int8_io_blob})
        int8_io_runs = _runs(bundle, "tflite-int8", streams)
        rmse_f = _pooled_rmse(streams, runs["tflite-int8"], prepared)
        rmse_i = _pooled_rmse(streams, int8_io_runs, prepared)
        # int8 inputs/outputs quantize the carried state every step; keep them only when that costs < 2 %.
        use_int8_io = rmse_i <= 1.02 * rmse_f
        if use_int8_io:
            runs["tflite-int8"] = int8_io_runs
            extra[STEP_INT8] = int8_io_blob
        else:
            extra[STEP_INT8] = float_io_blob
        int8_report = {
            "int8_io": use_int8_io,
            "test_rmse_int8_float_io": rmse_f,
            "test_rmse_int8_int8_io": rmse_i,
            "calibration_samples": len(calibration),
            "calibration": "closed-loop hidden states of the float model over training segments",
        }

    metrics = _metrics(streams, runs, prepared, cfg, lstm_forecasts)
    if cfg.horizon > 1:
        _add_horizon_metrics(metrics, bundle, prepared, names, cfg)
    metrics["training"] = {
        "seconds": round(seconds, 1),
        "epochs_run": len(history),
        "best_epoch": int(np.argmin([h["val_loss"] for h in history])) + 1 if history else 0,
        "best_val_loss": min((h["val_loss"] for h in history), default=float("nan")),
        "config": asdict(cfg),
    }
    sizes = {"step_f32_bytes": len(extra[STEP_F32])} if cfg.tflite else {}
    if int8:
        sizes["step_int8_bytes"] = len(extra[STEP_INT8])
        test = metrics["test"]
        rmse_float = test["tflite"]["rmse"]
        rmse_int8 = test["tflite-int8"]["rmse"]
        int8_report.update(
            {
                "test_rmse_float": rmse_float,
                "test_rmse_int8": rmse_int8,
                "rmse_ratio": rmse_int8 / rmse_float if rmse_float > 0 else float("nan"),
                "max_abs_forecast_diff": _max_diff(runs["tflite"], runs["tflite-int8"]),
            }
        )
    metrics["tflite"] = {**sizes, **int8_report}
    metrics["guard"] = persistence_guard(metrics, normalization=cfg.normalization)
    for warning in metrics["guard"]["warnings"]:
        log.warning("%s", warning)
        say(f"WARNING: {warning}")
    training_summary = {
        "source": "edge-gru train",
        "data": [s.source for s in items],
        "mode": cfg.mode,
        "seed": cfg.seed,
        "epochs_run": len(history),
        "seconds": round(seconds, 1),
        "test_mae": metrics["test"]["gru"]["mae"],
        "test_rmse": metrics["test"]["gru"]["rmse"],
        "test_persistence_mae": metrics["test"]["persistence"]["mae"],
        "test_persistence_rmse": metrics["test"]["persistence"]["rmse"],
        "test_units": metrics["test"].get("units", "raw units of the target"),
        **{f"tflite_{k}": v for k, v in metrics["tflite"].items() if isinstance(v, int | float | bool)},
        "guard_warnings": len(metrics["guard"]["warnings"]),
    }
    manifest = replace(manifest, training=training_summary)
    extra[METRICS] = (json.dumps(jsonable(metrics), indent=2) + "\n").encode()
    bundle = write_bundle(out, manifest, weights, extra)
    table = format_table(metrics)
    say(table)
    return TrainResult(bundle, metrics, table, history)


# -- fitting ------------------------------------------------------------------------------------------


def _progress(say: Echo, epoch: int, epochs: int, loss: float, val: float, best: bool, seconds: float) -> None:
    width = 20
    done = int(width * epoch / epochs)
    bar = "#" * done + "." * (width - done)
    mark = " *" if best else ""
    say(f"epoch {epoch:>4}/{epochs} [{bar}] loss {loss:.5f}  val {val:.5f}{mark}  {seconds:.1f}s")


def _fit_windows(
    items: Sequence[Prepared], cfg: TrainConfig, spec: Network, cell: str, say: Echo
) -> tuple[Any, list[dict]]:
    keras = tfruntime.keras()

    x, y, w = datasets.windows(items, "train", cfg.window)
    xv, yv, wv = datasets.windows(items, "val", cfg.window)
    if x.shape[0] == 0 or xv.shape[0] == 0:
        raise DataError("not enough complete windows in the training or validation part; use a shorter window")
    network = networks.window_model(spec, cfg.window, dropout=cfg.dropout, cell=cell)
    updates = cfg.epochs * math.ceil(x.shape[0] / cfg.batch_size)
    loss_fn = {"mse": "mse", "mae": "mae", "huber": keras.losses.Huber(delta=1.0)}[cfg.loss]
    network.compile(optimizer=keras.optimizers.Adam(_learning_rate(cfg, updates), clipnorm=1.0), loss=loss_fn)
    history: list[dict[str, float]] = []
    best = (math.inf, network.get_weights())
    rng = np.random.default_rng(cfg.seed)
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.monotonic()
        order = rng.permutation(x.shape[0])
        fit = network.fit(
            x[order], y[order], sample_weight=w[order], batch_size=cfg.batch_size, epochs=1, shuffle=False, verbose=0
        )
        pred = network.predict(xv, batch_size=4096, verbose=0)
        val = float(np.sum(wv * _pointwise_loss(pred - yv, cfg.loss).mean(axis=1)) / np.sum(wv))
        loss = float(fit.history["loss"][-1])
        improved = val < best[0]
        if improved:
            best = (val, network.get_weights())
        history.append({"loss": loss, "val_loss": val})
        _progress(say, epoch, cfg.epochs, loss, val, improved, time.monotonic() - t0)
        if _stop(history, cfg.patience):
            break
    network.set_weights(best[1])
    return network, history


def _learning_rate(cfg: TrainConfig, updates: int) -> Any:
    keras = tfruntime.keras()

    if not cfg.cosine_decay:
        return cfg.learning_rate
    return keras.optimizers.schedules.CosineDecay(cfg.learning_rate, decay_steps=max(updates, 1), alpha=0.05)


def _stop(history: list[dict[str, float]], patience: int) -> bool:
    vals = [h["val_loss"] for h in history]
    return patience > 0 and len(vals) - 1 - int(np.argmin(vals)) >= patience


def _fit_stateful(
    items: Sequence[Prepared], cfg: TrainConfig, spec: Network, cell: str, say: Echo
) -> tuple[Any, list[dict]]:
    keras = tfruntime.keras()
    tf = tfruntime.tensorflow()

    warmup = cfg.served_warmup
    train_tracks = datasets.tracks(items, "train", warmup=warmup)
    burn_in = max(4 * cfg.bptt, int(2 * cfg.halflife))
    val_tracks = _split_tracks(datasets.tracks(items, "val", warmup=warmup, burn_in=burn_in), 8 * cfg.bptt, burn_in)
    if not train_tracks or not val_tracks:
        raise DataError("not enough consecutive samples in the training or validation part")
    features = train_tracks[0].z.shape[1]
    network = networks.sequence_model(spec, dropout=cfg.dropout, cell=cell)
    state_units = networks.state_units(spec, cell)
    total = sum(t.z.shape[0] for t in train_tracks)
    updates = cfg.epochs * math.ceil(1.2 * total / (cfg.batch_size * cfg.bptt))
    optimizer = keras.optimizers.Adam(_learning_rate(cfg, updates), clipnorm=1.0)
    variables = network.trainable_variables
    b, length, horizon = cfg.batch_size, cfg.bptt, cfg.horizon

    @tf.function(
        input_signature=[
            tf.TensorSpec([b, length, features], tf.float32),
            tf.TensorSpec([b, length], tf.bool),
            tf.TensorSpec([b, length], tf.float32),
            tf.TensorSpec([b, length, horizon], tf.float32),
            [tf.TensorSpec([b, u], tf.float32) for u in state_units],
        ]
    )
    def train_step(x: Any, mask: Any, w: Any, y: Any, states: Any) -> Any:
        with tf.GradientTape() as tape:
            pred, *final = network([x, mask, *states], training=True)
            err = pred - y
            if cfg.loss == "mse":
                point = err * err
            elif cfg.loss == "mae":
                point = tf.abs(err)
            else:
                point = tf.where(tf.abs(err) <= 1.0, 0.5 * err * err, tf.abs(err) - 0.5)
            point = tf.reduce_mean(point, axis=-1)  # the mean over the horizon's steps
            loss = tf.reduce_sum(w * point) / tf.maximum(tf.reduce_sum(w), 1.0)
        grads = tape.gradient(loss, variables)
        optimizer.apply_gradients(zip(grads, variables, strict=True))
        return loss, final

    val_batch = _pad_tracks(val_tracks)
    forward = _compiled_forward(network)
    rng = np.random.default_rng(cfg.seed)
    history: list[dict[str, float]] = []
    best = (math.inf, network.get_weights())
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.monotonic()
        x, m, w, y, resets = _lanes(train_tracks, b, length, rng)
        states = [np.zeros((b, u), np.float32) for u in state_units]
        losses, weights_sum = 0.0, 0.0
        for k in range(resets.shape[1]):
            sl = slice(k * length, (k + 1) * length)
            keep = (~resets[:, k])[:, None].astype(np.float32)
            states = [s * keep for s in states]
            wk = w[:, sl]
            if not m[:, sl].any():
                continue
            loss, final = train_step(x[:, sl], m[:, sl], wk, y[:, sl], states)
            states = [np.asarray(s) for s in final]
            losses += float(loss) * float(wk.sum())
            weights_sum += float(wk.sum())
        val = _sequence_loss(forward, val_batch, state_units, cfg.loss)
        loss_mean = losses / max(weights_sum, 1e-12)
        improved = val < best[0]
        if improved:
            best = (val, network.get_weights())
        history.append({"loss": loss_mean, "val_loss": val})
        _progress(say, epoch, cfg.epochs, loss_mean, val, improved, time.monotonic() - t0)
        if _stop(history, cfg.patience):
            break
    network.set_weights(best[1])
    return network, history


def _lanes(
    tracks: Sequence[datasets.Track], lanes: int, length: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Cut tracks into pieces and lay them end to end on ``lanes`` batch rows, chunk-aligned.

    Every piece starts at a chunk boundary with a zero state (flag in ``resets``) and is
    padded with masked steps to a whole number of chunks; cut points move every epoch.
    """
    total = sum(t.z.shape[0] for t in tracks)
    piece = max(4 * length, math.ceil(total / lanes))
    pieces = []
    for t in tracks:
        n = t.z.shape[0]
        pos, cut = 0, int(rng.integers(piece // 2, piece + 1))
        while pos < n:
            end = min(n, pos + cut)
            if end - pos >= 2:
                pieces.append((t, pos, end))
            pos, cut = end, piece
    order = rng.permutation(len(pieces))
    loads = np.zeros(lanes, dtype=np.int64)
    plan: list[list[tuple[datasets.Track, int, int]]] = [[] for _ in range(lanes)]
    for i in order:
        t, a, e = pieces[i]
        lane = int(np.argmin(loads))
        plan[lane].append((t, a, e))
        loads[lane] += math.ceil((e - a) / length) * length
    steps = int(loads.max())
    features = tracks[0].z.shape[1]
    x = np.zeros((lanes, steps, features), np.float32)
    m = np.zeros((lanes, steps), bool)
    w = np.zeros((lanes, steps), np.float32)
    y = np.zeros((lanes, steps, tracks[0].y.shape[1]), np.float32)
    resets = np.zeros((lanes, steps // length), bool)
    for lane, items in enumerate(plan):
        pos = 0
        for t, a, e in items:
            n = e - a
            x[lane, pos : pos + n] = t.z[a:e]
            m[lane, pos : pos + n] = True
            w[lane, pos : pos + n] = t.w[a:e]
            y[lane, pos : pos + n] = t.y[a:e]
            resets[lane, pos // length] = True
            pos += math.ceil(n / length) * length
    return x, m, w, y, resets


def _split_tracks(tracks: Sequence[datasets.Track], piece: int, burn_in: int) -> list[datasets.Track]:
    """Long validation tracks as overlapping pieces: ``burn_in`` unscored steps, then ``piece`` scored ones.

    Many short sequences run as one batch, far faster than one long sequence step by step.
    """
    out = []
    for t in tracks:
        n = t.z.shape[0]
        if n <= piece + burn_in:
            out.append(t)
            continue
        scored = np.flatnonzero(t.w > 0)
        start = int(scored[0]) if scored.size else n
        while start < n:
            a, b = max(0, start - burn_in), min(n, start + piece)
            w = t.w[a:b].copy()
            w[: start - a] = 0.0
            out.append(datasets.Track(t.z[a:b], t.y[a:b], w))
            start = b
    return [t for t in out if (t.w > 0).any()]


def _pad_tracks(tracks: Sequence[datasets.Track]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    n = max(t.z.shape[0] for t in tracks)
    features = tracks[0].z.shape[1]
    x = np.zeros((len(tracks), n, features), np.float32)
    m = np.zeros((len(tracks), n), bool)
    w = np.zeros((len(tracks), n), np.float32)
    y = np.zeros((len(tracks), n, tracks[0].y.shape[1]), np.float32)
    for i, t in enumerate(tracks):
        k = t.z.shape[0]
        x[i, :k], m[i, :k], w[i, :k], y[i, :k] = t.z, True, t.w, t.y
    return x, m, w, y


def _compiled_forward(network: Any) -> Callable[..., Any]:
    """The sequence network's outputs as a compiled graph: run eagerly, the RNN loop is ~50x slower."""
    tf = tfruntime.tensorflow()

    @tf.function(reduce_retracing=True)
    def forward(x: Any, m: Any, states: Any) -> Any:
        return network([x, m, *states], training=False)[0]

    return lambda x, m, states: np.asarray(forward(x, m, states))


def _sequence_loss(
    forward: Callable[..., Any], batch: tuple[np.ndarray, ...], state_units: Sequence[int], loss: str
) -> float:
    x, m, w, y = batch
    states = [np.zeros((x.shape[0], u), np.float32) for u in state_units]
    pred = forward(x, m, states)
    return float(np.sum(w * _pointwise_loss(pred - y, loss).mean(axis=-1)) / max(float(np.sum(w)), 1e-12))


def _pointwise_loss(err: np.ndarray, loss: str) -> np.ndarray:
    a = np.abs(err)
    if loss == "mse":
        return err * err
    if loss == "mae":
        return a
    return np.where(a <= 1.0, 0.5 * err * err, a - 0.5)


def _network_forecasts(network: Any, p: Prepared, cfg: TrainConfig, spec: Network, cell: str) -> np.ndarray:
    """Raw next-sample forecasts of a Keras network (the LSTM baseline) for every row, NaN where it has none."""
    n = len(p.series)
    y = np.full(n, np.nan)
    if cfg.mode == "window":
        for a, b in p.runs(0, n, min_len=cfg.window):
            ends = np.arange(a + cfg.window - 1, b)
            idx = ends[:, None] + np.arange(-cfg.window + 1, 1)[None, :]
            y[ends] = network.predict(p.z[idx], batch_size=4096, verbose=0)[:, 0]
    else:
        runs = p.runs(0, n, min_len=1)
        if runs:
            longest = max(b - a for a, b in runs)
            x = np.zeros((len(runs), longest, p.z.shape[1]), np.float32)
            m = np.zeros((len(runs), longest), bool)
            for i, (a, b) in enumerate(runs):
                x[i, : b - a], m[i, : b - a] = p.z[a:b], True
            states = [np.zeros((len(runs), u), np.float32) for u in networks.state_units(spec, cell)]
            pred = _compiled_forward(network)(x, m, states)[:, :, 0]
            for i, (a, b) in enumerate(runs):
                y[a + cfg.served_warmup - 1 : b] = pred[i, cfg.served_warmup - 1 : b - a]
    return p.offset + p.scale * y


# -- export and metrics -------------------------------------------------------------------------------


def _calibration(
    weights: NetworkWeights, items: Sequence[Prepared], cfg: TrainConfig
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Closed-loop (x_t, h_prev) pairs over training segments (window mode: window-long runs from zero)."""
    rng = np.random.default_rng(cfg.seed)
    sequences = []
    budget = 30_000  # steps of the numpy reference: about a second
    runs = [(p, a, b) for p in items for a, b in p.runs(0, p.split.train, min_len=2)]
    for i in rng.permutation(len(runs)):
        p, a, b = runs[i]
        if cfg.mode == "window":
            for start in rng.integers(a, max(a + 1, b - cfg.window), size=min(200, b - a)):
                sequences.append(p.z[start : start + cfg.window])
        else:
            sequences.append(p.z[a : min(b, a + 2000)])
        if sum(s.shape[0] for s in sequences) >= budget:
            break
    from edge_gru.train import tflite_export

    return tflite_export.calibration_states(weights, sequences, samples=cfg.calibration_samples, seed=cfg.seed)


def _model(bundle: Bundle, backend: str) -> Model:
    from edge_gru.backends import create_backend
    from edge_gru.errors import BackendUnavailableError

    try:
        return Model(bundle, create_backend(backend, bundle))
    except BackendUnavailableError:
        if backend != "numba":
            raise
        return Model(bundle, create_backend("numpy", bundle))


def _runs(bundle: Bundle, backend: str, streams: dict[str, Series]) -> dict[str, StreamRun]:
    return run_streams(_model(bundle, backend), streams)


def _horizon_outputs(bundle: Bundle, p: Prepared, cfg: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``t`` that forecast and their raw forecasts (N, horizon) of rows t+1 .. t+k, as the pool makes them.

    Window mode: the window ending at ``t`` inside one segment; stateful mode: every segment
    from a zero state, all segments stepped side by side, the first ``warmup - 1`` rows silent.
    """
    backend = _model(bundle, "numba").backend
    runs = p.runs(0, len(p.series), min_len=1)
    if cfg.mode == "window":
        ends_list, outs = [], []
        for a, b in runs:
            if b - a >= cfg.window:
                ends = np.arange(a + cfg.window - 1, b)
                idx = ends[:, None] + np.arange(-cfg.window + 1, 1)[None, :]
                ends_list.append(ends)
                outs.append(backend.run_windows(np.ascontiguousarray(p.z[idx], dtype=np.float32)))
        if not outs:
            return np.zeros(0, np.int64), np.zeros((0, cfg.horizon))
        rows, y = np.concatenate(ends_list), np.concatenate(outs)
    else:
        starts = np.array([a for a, _ in runs], np.int64)
        lengths = np.array([b - a for a, b in runs], np.int64)
        h = np.zeros((len(runs), backend.state_size), np.float32)
        y_all = np.full((len(p.series), cfg.horizon), np.nan, np.float32)
        for t in range(int(lengths.max(initial=0))):
            live = np.flatnonzero(lengths > t)
            at = starts[live] + t
            y_all[at] = backend.step(np.ascontiguousarray(p.z[at], dtype=np.float32), h, live)
        keep = np.concatenate([np.arange(a + cfg.served_warmup - 1, b) for a, b in runs] or [np.zeros(0, np.int64)])
        rows, y = keep.astype(np.int64), y_all[keep]
    return rows, p.offset[rows, None] + p.scale[rows, None] * y.astype(np.float64)


def _add_horizon_metrics(
    metrics: dict[str, Any], bundle: Bundle, items: Sequence[Prepared], names: Sequence[str], cfg: TrainConfig
) -> None:
    """Test MAE of every horizon step (the float model and persistence, raw units) into ``metrics``.

    Step j of the forecast made at row t is scored against row t + j when that row lies in
    the same segment and in the test split; persistence forecasts it with row t.
    """
    ratios = []
    for name, p in zip(names, items, strict=True):
        rows, raw = _horizon_outputs(bundle, p, cfg)
        x = p.series.target_values
        seg_end = np.zeros(len(p.series), np.int64)
        for a, b in p.series.segments:
            seg_end[a:b] = b
        mae, persistence, counts = [], [], []
        for j in range(cfg.horizon):
            actual = rows + j + 1
            ok = (actual < seg_end[rows]) & (actual >= p.split.val) & (actual < p.split.total)
            ok &= np.isfinite(raw[:, j])
            err = raw[ok, j] - x[actual[ok]]
            base = x[rows[ok]] - x[actual[ok]]
            counts.append(int(ok.sum()))
            mae.append(float(np.mean(np.abs(err))) if err.size else float("nan"))
            persistence.append(float(np.mean(np.abs(base))) if base.size else float("nan"))
        metrics["per_series"][name]["horizon"] = {"mae": mae, "persistence_mae": persistence, "n": counts}
        ratios.append([m / q if q > 0 else float("nan") for m, q in zip(mae, persistence, strict=True)])
    if len(items) > 1:
        metrics["test"]["horizon"] = {"mae_relative_to_persistence": np.mean(ratios, axis=0).tolist()}


def _test_scores(
    streams: dict[str, Series], runs: dict[str, StreamRun], items: Sequence[Prepared], season: int | None
) -> dict[str, Scores]:
    return {
        name: score(s, runs[name], start=p.split.val, stop=p.split.total, season=season)
        for (name, s), p in zip(streams.items(), items, strict=True)
    }


def _pooled_rmse(streams: dict[str, Series], runs: dict[str, StreamRun], items: Sequence[Prepared]) -> float:
    """Mean over series of test RMSE relative to persistence (unit-free when series differ)."""
    scores = _test_scores(streams, runs, items, None)
    if len(scores) == 1:
        return next(iter(scores.values())).rmse
    return float(np.mean([s.rmse / s.persistence_rmse for s in scores.values()]))


def _max_diff(a: dict[str, StreamRun], b: dict[str, StreamRun]) -> float:
    diffs = [np.nanmax(np.abs(a[k].forecasts - b[k].forecasts), initial=0.0) for k in a]
    return float(max(diffs))


def _metrics(
    streams: dict[str, Series],
    runs: dict[str, dict[str, StreamRun]],
    items: Sequence[Prepared],
    cfg: TrainConfig,
    lstm_forecasts: list[np.ndarray] | None,
) -> dict[str, Any]:
    per_series: dict[str, Any] = {}
    for i, ((name, s), p) in enumerate(zip(streams.items(), items, strict=True)):
        base = runs["gru"][name]
        pairs = base.pairs.copy()
        lstm_run = None
        if lstm_forecasts is not None:
            f = lstm_forecasts[i]
            pairs &= np.isfinite(f)
            lstm_run = StreamRun(f, np.where(np.isfinite(f), Status.FORECAST, Status.WARMUP), base.resets, pairs)
        entry: dict[str, Any] = {
            "rows": len(s),
            "split": {
                "train": [0, p.split.train],
                "val": [p.split.train, p.split.val],
                "test": [p.split.val, p.split.total],
            },
        }
        for key, backend_runs in runs.items():
            r = backend_runs[name]
            sc = score(
                s, StreamRun(r.forecasts, r.status, r.resets, pairs & r.pairs), start=p.split.val, season=cfg.season
            )
            entry[key] = {"mae": sc.mae, "rmse": sc.rmse}
            if key == "gru":
                entry["n"] = sc.n
                entry["persistence"] = {"mae": sc.persistence_mae, "rmse": sc.persistence_rmse}
                if cfg.season:
                    entry["seasonal_naive"] = {"mae": sc.seasonal_mae, "rmse": sc.seasonal_rmse, "season": cfg.season}
        if lstm_run is not None:
            sc = score(s, lstm_run, start=p.split.val, season=cfg.season)
            entry["lstm"] = {"mae": sc.mae, "rmse": sc.rmse}
        per_series[name] = entry
    metrics: dict[str, Any] = {"per_series": per_series}
    if len(per_series) == 1:
        metrics["test"] = next(iter(per_series.values()))
    else:
        # Unit-free summary across series: each error relative to that series' persistence error.
        first = next(iter(per_series.values()))
        keys = [k for k, v in first.items() if isinstance(v, dict) and "mae" in v]
        summary: dict[str, Any] = {"n": sum(e["n"] for e in per_series.values()), "units": "relative to persistence"}
        for k in keys:
            summary[k] = {
                "mae": float(np.mean([e[k]["mae"] / e["persistence"]["mae"] for e in per_series.values()])),
                "rmse": float(np.mean([e[k]["rmse"] / e["persistence"]["rmse"] for e in per_series.values()])),
            }
        metrics["test"] = summary
    return metrics


def persistence_guard(metrics: dict[str, Any], *, normalization: str = "") -> dict[str, Any]:
    """Does the float model, and the int8 one, beat persistence on every series' test split?

    A trained model that loses to "the next reading equals this one" should not ship
    silently; an int8 model that loses while the float one wins is a calibration problem, and
    the float step model (numba, or ``tflite``) is what should serve. With ``fixed``
    normalization the network outputs the level of the next reading, which 8-bit weights
    resolve to a fraction of a percent of its range, often more than one step's change
    (measured on the SST series: int8 MAE / persistence 3.16 fixed, 0.97 causal; float 1.16
    and 0.96); ``causal`` has the network output the change, so the advice says so.
    """
    fixed = normalization == "fixed"
    per: dict[str, dict[str, float]] = {}
    warnings: list[str] = []
    for name, entry in metrics["per_series"].items():
        pers = entry["persistence"]["mae"]
        ratios = {k: entry[k]["mae"] / pers for k in ("gru", "tflite-int8") if k in entry and pers > 0}
        per[name] = ratios
        float_ratio, int8_ratio = ratios.get("gru"), ratios.get("tflite-int8")
        if float_ratio is not None and not float_ratio < 1.0:
            warnings.append(
                f"{name}: the float model loses to persistence on the test split (MAE / persistence "
                f"{float_ratio:.3f}); serve it with the per-stream adaptation on, train longer, or add data"
                + ("; or train with --normalization causal (the network then predicts the change)" if fixed else "")
            )
        if int8_ratio is not None and not int8_ratio < 1.0:
            also = "while the float model wins " if float_ratio is not None and float_ratio < 1.0 else ""
            warnings.append(
                f"{name}: the int8 model loses to persistence {also}on the test split (MAE / persistence "
                f"{int8_ratio:.3f}); serve the float step model (--backend numba or tflite), not tflite-int8"
                + (
                    "; or train with --normalization causal: the network then outputs the change from the"
                    " current reading, which int8 resolves finely, not the level"
                    if fixed
                    else ""
                )
            )
    float_ok = all(r.get("gru", 0.0) < 1.0 for r in per.values())
    int8_ok = all(r.get("tflite-int8", 0.0) < 1.0 for r in per.values())
    return {
        "mae_ratio": per,
        "float_beats_persistence": float_ok,
        "int8_beats_persistence": int8_ok if any("tflite-int8" in r for r in per.values()) else None,
        "int8_loses_while_float_wins": bool(float_ok and not int8_ok),
        "warnings": warnings,
    }


LABELS = {
    "gru": "GRU (numba)",
    "tflite": "GRU tflite float32",
    "tflite-int8": "GRU tflite int8",
    "persistence": "persistence",
    "seasonal_naive": "seasonal-naive",
    "lstm": "LSTM",
}


def format_table(metrics: dict[str, Any]) -> str:
    """The final table: test MAE/RMSE of every model and baseline, per series."""
    lines = []
    for name, entry in metrics["per_series"].items():
        test = entry["split"]["test"]
        lines.append(f"{name}: test rows {test[0]}..{test[1]}, {entry['n']} forecasts")
        lines.append(f"  {'model':<22}{'MAE':>14}{'RMSE':>14}{'MAE/persistence':>17}")
        pers = entry["persistence"]["mae"]
        for key, label in LABELS.items():
            if key in entry:
                e = entry[key]
                if key == "seasonal_naive":
                    label = f"{label} ({e['season']})"
                lines.append(f"  {label:<22}{e['mae']:>14.5g}{e['rmse']:>14.5g}{e['mae'] / pers:>17.3f}")
    tfl = metrics.get("tflite", {})
    if tfl:
        sizes = ", ".join(f"{k} {v:,}" for k, v in tfl.items() if k.endswith("_bytes"))
        lines.append(f"tflite: {sizes}" + (f"; int8 i/o: {tfl['int8_io']}" if "int8_io" in tfl else ""))
    return "\n".join(lines)


def jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, np.generic):
        return jsonable(value.item())
    return value
