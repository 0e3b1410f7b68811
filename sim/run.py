"""One simulation run from settings to report: streams -> faults -> schedule -> transport -> score.

>>> from sim.config import SimConfig
>>> result = simulate(SimConfig(streams=2, duration_s=6 * 3600, backend="numpy"))
>>> result.report.outcome.transport, result.report.to_json()["readings"]
('in-process', 144)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_gru.series import Series
from sim.clock import SimClock
from sim.config import DEFAULT_DURATION_S, SimConfig, default_model_path
from sim.faults import inject
from sim.profiles import REPLAY, Stream, build_streams
from sim.report import Report, score
from sim.schedule import Schedule, build_schedule

if TYPE_CHECKING:
    from edge_gru.model import Model

#: Seconds into the backend's warm-up after which the user is told that kernels are compiling.
SLOW_START_S = 0.5
COMPILE_MESSAGE = (
    "compiling the numba kernels (first run only: ~15 s on a desktop, minutes on a Pi; "
    "`edge-gru build-kernels` compiles them ahead of time)..."
)

# Fault streams draw from their own generator family, so adding faults never changes the clean readings.
FAULT_STREAM = 1_000_003


@dataclass
class SimResult:
    config: SimConfig
    schedule: Schedule
    report: Report


def build_run(config: SimConfig) -> Schedule:
    """The run's messages: streams from profiles and replays, with faults applied, in send order."""
    samples = config.samples
    series = build_streams(
        streams=config.streams,
        profiles=config.profiles,
        samples=samples,
        period_s=config.period_s,
        seed=config.seed,
        replays=config.replays,
    )
    if config.duration_s is not None:
        # A replay plays as much of its file as the duration covers.
        series = [s if s.ts[-1] - s.ts[0] < config.duration_s else _head(s, config.duration_s) for s in series]
    emitted = [
        inject(s, config.faults, np.random.default_rng([config.seed, FAULT_STREAM, k])) for k, s in enumerate(series)
    ]
    return build_schedule(series, emitted)


def _head(stream: Stream, duration_s: float) -> Stream:
    keep = stream.ts - stream.ts[0] < duration_s
    ts, values = stream.ts[keep], stream.values[keep]
    if stream.profile.startswith(REPLAY):  # its period is the median step of the readings it plays
        head = Series.from_arrays(values, times=ts, source=stream.series.source)
        return Stream(stream.stream, stream.profile, head, stream.file_dropped)
    return Stream.regular(stream.stream, stream.profile, ts, values, stream.period)


def load_model(config: SimConfig) -> Model:
    import edge_gru

    return edge_gru.load(config.model or default_model_path(), backend=config.backend)


def warm_up(model: Model, on_slow_start: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Pay the backend's one-time costs before the clock starts; says how long that took and what it was.

    ``on_slow_start(message)`` is called (from a timer thread) when the numba JIT is still
    busy after :data:`SLOW_START_S`: it is compiling, which the first run on a machine does.
    """
    kind = getattr(model.backend, "kernel_kind", None)
    timer = None
    if on_slow_start is not None and kind == "jit":
        timer = threading.Timer(SLOW_START_S, on_slow_start, args=(COMPILE_MESSAGE,))
        timer.daemon = True
        timer.start()
    t0 = time.perf_counter()
    try:
        model.warm_up()
    finally:
        if timer is not None:
            timer.cancel()
    info: dict[str, Any] = {"s": round(time.perf_counter() - t0, 3), "kernels": kind}
    if kind == "jit":
        from edge_gru import kernels

        info["compiled"] = kernels.compiled_here() > 0
    return info


def simulate(
    config: SimConfig,
    *,
    model: Model | None = None,
    progress: Callable[[int], None] | None = None,
    on_schedule: Callable[[Schedule], None] | None = None,
    on_slow_start: Callable[[str], None] | None = None,
) -> SimResult:
    """Run ``config`` and score it. ``progress(n)`` is called as messages are sent; ``on_schedule`` once before.

    In process, the backend is warmed up first (:func:`warm_up`): the reported throughput
    is the daemon's steady state, and the warm-up time is reported beside it.
    """
    warmup: dict[str, Any] | None = None
    if config.transport == "in-process":
        model = model or load_model(config)  # before the progress bar starts: numba loads here
        warmup = warm_up(model, on_slow_start)
    schedule = build_run(config)
    if on_schedule is not None:
        on_schedule(schedule)
    clock = SimClock(speed=config.speed)
    run_faults = {"broker_restart": 0, "daemon_restart": 0}
    if config.transport == "in-process":
        from sim.transport import InProcessTransport

        assert model is not None
        outcome = InProcessTransport(
            model,
            input_template=config.input_template,
            output_template=config.output_template,
            adaptation=config.adaptation,
        ).run(schedule, clock, progress)
        outcome.extra["warmup"] = warmup
    else:
        from sim.mqtt import MqttTransport

        transport = MqttTransport.from_config(config)
        outcome = transport.run(schedule, clock, progress)
        run_faults = dict(transport.restarts)
    synthetic = config.streams > 0
    seconds = config.duration_s or (DEFAULT_DURATION_S if synthetic else None)
    meta: dict[str, Any] = {
        "scenario": config.name,
        "seed": config.seed,
        "stream_count": len(schedule.streams),
        "profiles_run": sorted({s.profile for s in schedule.streams}),
        "duration_s": seconds,
        "period_s": config.period_s if synthetic else None,
        "faults_spec": config.faults.describe(),
        "clock": "virtual" if config.speed is None else f"speed {config.speed:g}x",
        "readings_label": _label(schedule, seconds, config.period_s if synthetic else None),
    }
    file_dropped = {s.stream: dict(s.file_dropped) for s in schedule.streams if s.file_dropped}
    if file_dropped:  # rows of replayed files that the pool's rules drop (duplicate, out_of_order): never sent
        meta["replay_dropped"] = file_dropped
    return SimResult(config, schedule, score(schedule, outcome, meta, run_faults))


def _label(schedule: Schedule, seconds: float | None, period_s: float | None) -> str:
    span = f"{_human(seconds)} every {_human(period_s)}" if seconds and period_s else None
    return f"{span} ({len(schedule):,} messages)" if span else f"{len(schedule):,} messages"


def _human(seconds: float) -> str:
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g} {unit}"
    return f"{seconds:g} s"
