"""Fault injection: what real sensors and networks do to a clean stream, counted.

``--faults`` takes per-reading rates (``nan=0.01,garbage=0.005``), a preset (``all``,
``none``) or both (``all,nan=0.05``). Every injection is counted, and each one has a
known fate in the daemon, so the report can set what was injected beside what the
daemon counted:

=============  ===========================================  ==============================
fault          what the simulated sensor does                  expected in the daemon
=============  ===========================================  ==============================
dropout        one reading is never sent                      nothing (one reading fewer)
gap            6-24 readings in a row are never sent          one gap reset
nan            sends NaN instead of its value                 one ``not_finite`` drop
spike          sends value +- 5-10 standard deviations        accepted (hurts the forecast)
stuck          repeats one value for 6-30 readings            accepted
out_of_order   sends two readings swapped                     one ``out_of_order`` drop
duplicate      sends a reading twice                          one ``duplicate`` drop
garbage        sends a malformed payload instead              one payload drop (by reason)
clock_jump     its clock jumps 12-120 periods ahead           one gap reset
=============  ===========================================  ==============================

With a broker, ``broker_restart=N`` and ``daemon_restart=N`` are counts per run: the
simulator restarts the broker or the daemon N times, evenly spread, mid-run.

Faults start after ``GUARD`` readings (so a stream has learned its sample period) and
are separated by at least ``COOLDOWN`` clean readings (none starts in a stream's last
``TAIL``), so that their effects are distinct
and countable (two dropouts in a row would make a gap).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edge_gru.errors import ConfigError
from sim.profiles import Stream

STREAM_FAULTS: tuple[str, ...] = (
    "dropout",
    "gap",
    "nan",
    "spike",
    "stuck",
    "out_of_order",
    "duplicate",
    "garbage",
    "clock_jump",
)
RUN_FAULTS: tuple[str, ...] = ("broker_restart", "daemon_restart")
PRESETS: dict[str, dict[str, float]] = {
    "none": {},
    "all": {
        "dropout": 0.004,
        "gap": 0.001,
        "nan": 0.004,
        "spike": 0.002,
        "stuck": 0.001,
        "out_of_order": 0.003,
        "duplicate": 0.003,
        "garbage": 0.003,
        "clock_jump": 0.0005,
    },
}
GUARD = 16
COOLDOWN = 3
TAIL = 32  # no fault starts this close to a stream's end, so every one has an effect

# What the daemon should make of each message (the simulator's ground truth).
ACCEPT, NOT_FINITE, GARBAGE, DUPLICATE, OUT_OF_ORDER = 0, 1, 2, 3, 4
FATES = ("accept", "not_finite", "garbage", "duplicate", "out_of_order")

# Malformed payloads a broken sensor or bridge really sends: bad UTF-8, truncated JSON,
# text, a JSON object without the value, an empty message, a JSON array.
GARBAGE_PAYLOADS: tuple[bytes, ...] = (
    b"\xff\xfe\x00\x81garbage",
    b'{"value": 21.5, "ts": ',
    b"hello",
    b'{"temperature": 21.5}',
    b"",
    b"[1, 2, 3]",
)


@dataclass(frozen=True)
class FaultSpec:
    """Per-reading fault rates and per-run restart counts."""

    rates: dict[str, float] = field(default_factory=dict)
    broker_restart: int = 0
    daemon_restart: int = 0

    @property
    def any_stream_faults(self) -> bool:
        return any(r > 0 for r in self.rates.values())

    def describe(self) -> str:
        parts = [f"{k}={v:g}" for k, v in self.rates.items() if v > 0]
        parts += [f"{k}={getattr(self, k)}" for k in RUN_FAULTS if getattr(self, k)]
        return ",".join(parts) or "none"


def parse_faults(spec: str | dict[str, float] | None) -> FaultSpec:
    """``"all,nan=0.05,broker_restart=1"`` or a mapping -> :class:`FaultSpec`; errors name the fault."""
    if spec is None:
        return FaultSpec()
    items: list[tuple[str, object]] = []
    if isinstance(spec, dict):
        items = list(spec.items())
    else:
        for part in (p.strip() for p in spec.split(",")):
            if not part:
                continue
            if "=" not in part:
                if part not in PRESETS:
                    raise ConfigError(
                        f"faults: {part!r} is not a preset ({', '.join(PRESETS)}) or NAME=RATE; "
                        f"faults are {', '.join(STREAM_FAULTS + RUN_FAULTS)}"
                    )
                items.extend(PRESETS[part].items())
                continue
            name, _, value = part.partition("=")
            items.append((name.strip(), value.strip()))
    rates: dict[str, float] = {}
    runs = {"broker_restart": 0, "daemon_restart": 0}
    for name, raw in items:
        if name in RUN_FAULTS:
            try:
                count = int(str(raw))
            except ValueError:
                raise ConfigError(f"faults: {name} is a count of restarts per run, got {raw!r}") from None
            if count < 0:
                raise ConfigError(f"faults: {name} must be >= 0, got {count}")
            runs[name] = count
            continue
        if name not in STREAM_FAULTS:
            raise ConfigError(f"faults: unknown fault {name!r}; choose from {', '.join(STREAM_FAULTS + RUN_FAULTS)}")
        try:
            rate = float(str(raw))
        except ValueError:
            raise ConfigError(f"faults: {name} takes a rate per reading such as 0.01, got {raw!r}") from None
        if not 0.0 <= rate <= 1.0:
            raise ConfigError(f"faults: {name} rate must be between 0 and 1, got {rate}")
        rates[name] = rate
    total = sum(rates.values())
    if total > 0.5:
        raise ConfigError(f"faults: the rates add up to {total:g}; keep their sum at or below 0.5")
    return FaultSpec(rates, runs["broker_restart"], runs["daemon_restart"])


@dataclass
class Emitted:
    """The messages one stream sends, in its own send order."""

    elapsed: np.ndarray  # (M,) seconds since the stream's first reading when the message is sent
    ts: np.ndarray  # (M,) the ``ts`` in the payload
    values: np.ndarray  # (M,) the ``value`` in the payload (NaN for a NaN fault)
    fates: np.ndarray  # (M,) int8 expected fate (ACCEPT, NOT_FINITE, ...)
    garbage: dict[int, bytes]  # message index -> malformed payload sent instead of a reading
    injected: dict[str, int]


def clean(series: Stream) -> Emitted:
    n = series.values.size
    return Emitted(series.ts - series.ts[0], series.ts.copy(), series.values.copy(), np.zeros(n, np.int8), {}, {})


def inject(series: Stream, spec: FaultSpec, rng: np.random.Generator) -> Emitted:
    """Apply ``spec``'s per-reading faults to one stream; every injection is counted in ``injected``."""
    injected = dict.fromkeys(STREAM_FAULTS, 0)
    if not spec.any_stream_faults:
        out = clean(series)
        out.injected = injected
        return out
    names = [k for k in STREAM_FAULTS if spec.rates.get(k, 0.0) > 0]
    cum = np.cumsum([spec.rates[k] for k in names])
    ts, values = series.ts, series.values
    n = values.size
    diffs = np.diff(ts)
    period = float(np.median(diffs)) if diffs.size else 1.0
    scale = float(np.std(values)) or 1.0
    draws = rng.random(n)
    el: list[float] = []
    out_ts: list[float] = []
    out_v: list[float] = []
    fates: list[int] = []
    garbage: dict[int, bytes] = {}
    offset = 0.0  # clock-jump offset added to the sensor's timestamps
    t0 = ts[0]

    def send(i: int, value: float, fate: int = ACCEPT, at: int | None = None) -> None:
        el.append(ts[i if at is None else at] - t0)
        out_ts.append(ts[i] + offset)
        out_v.append(value)
        fates.append(fate)

    i = 0
    while i < n:
        u = draws[i]
        if i < GUARD or u >= cum[-1] or i + TAIL >= n:
            send(i, values[i])
            i += 1
            continue
        fault = names[int(np.searchsorted(cum, u, side="right"))]
        injected[fault] += 1
        if fault == "dropout":
            i += 1
        elif fault == "gap":
            i += int(rng.integers(6, 25))
        elif fault == "nan":
            send(i, float("nan"), NOT_FINITE)
            i += 1
        elif fault == "spike":
            send(i, values[i] + float(rng.choice((-1.0, 1.0))) * rng.uniform(5.0, 10.0) * scale)
            i += 1
        elif fault == "stuck":
            length = int(rng.integers(6, 31))
            for j in range(i, min(n, i + length)):
                send(j, values[i])
            i += length
        elif fault == "out_of_order":
            send(i + 1, values[i + 1])
            send(i, values[i], OUT_OF_ORDER, at=i + 1)  # delivered late, after its successor
            i += 2
        elif fault == "duplicate":
            send(i, values[i])
            send(i, values[i], DUPLICATE)
            i += 1
        elif fault == "garbage":
            garbage[len(el)] = GARBAGE_PAYLOADS[int(rng.integers(len(GARBAGE_PAYLOADS)))]
            send(i, float("nan"), GARBAGE)
            i += 1
        elif fault == "clock_jump":
            offset += float(rng.integers(12, 121)) * period
            send(i, values[i])
            i += 1
        for _ in range(COOLDOWN):
            if i >= n:
                break
            send(i, values[i])
            i += 1
    return Emitted(
        np.asarray(el, dtype=np.float64),
        np.asarray(out_ts, dtype=np.float64),
        np.asarray(out_v, dtype=np.float64),
        np.asarray(fates, dtype=np.int8),
        garbage,
        injected,
    )
