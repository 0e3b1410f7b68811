"""A simulation's settings: validated, keyword-only, shared by the CLI, scenarios and Python.

>>> parse_duration("7d"), parse_duration("90m"), parse_duration(30)
(604800.0, 5400.0, 30.0)
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from edge_gru.daemon.config import DEFAULT_INPUT, DEFAULT_OUTPUT
from edge_gru.errors import ConfigError
from sim.faults import FaultSpec
from sim.profiles import STANDARD_PROFILES, ReplaySource

DEFAULT_SENML_TOPIC = "senml/edge-gru-sim"  # where --pack sends its SenML packs (the daemon's senml_input)

_UNITS = {"s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(s|min|m|h|d|w)?\s*$")
DEFAULT_DURATION_S = 7 * 86400.0
DEFAULT_PERIOD_S = 300.0
TRANSPORTS = ("in-process", "mqtt")


def parse_duration(value: str | float | int, *, name: str = "duration") -> float:
    """``"7d"``, ``"12h"``, ``"30m"``, ``"90s"``, ``"1w"`` or a number of seconds."""
    if isinstance(value, bool):
        raise ConfigError(f"{name}: expected a duration such as '7d' or '300s', got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ConfigError(f"{name}: {value!r} is not a duration; write e.g. '7d', '12h', '30m' or '300s'")
        seconds = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    if not seconds > 0:
        raise ConfigError(f"{name}: must be positive, got {value!r}")
    return seconds


@dataclass(frozen=True, kw_only=True)
class SimConfig:
    """Everything that decides a run. Defaults: 12 streams over the standard profiles, 7 days at 5 minutes."""

    streams: int = 12
    profiles: tuple[str, ...] = STANDARD_PROFILES
    duration_s: float | None = None  # None: 7 days for synthetic streams, whole files for replays
    period_s: float = DEFAULT_PERIOD_S
    seed: int = 0
    faults: FaultSpec = field(default_factory=FaultSpec)
    replays: tuple[ReplaySource, ...] = ()
    model: str | None = None
    backend: str = "auto"
    adaptation: str = "bundle"  # bundle | on | off (in-process runs; a daemon follows its own config)
    broker: str | None = None  # mqtt://host:port of a running broker and daemon
    spawn_broker: bool = False
    daemon_id: str | None = None  # with broker: the client_id of the daemon to drive (default: the first online)
    speed: float | None = None  # None: virtual clock; 1.0: real time
    input_template: str = DEFAULT_INPUT
    output_template: str = DEFAULT_OUTPUT
    pack: int = 1  # > 1: send readings as SenML packs of up to this many records (MQTT transports)
    senml_topic: str = DEFAULT_SENML_TOPIC
    name: str | None = None  # the scenario's name, when one was loaded
    description: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.streams, bool) or not isinstance(self.streams, int) or self.streams < 0:
            raise ConfigError(f"streams: expected a whole number >= 0, got {self.streams!r}")
        if self.streams == 0 and not self.replays:
            raise ConfigError("streams: 0 synthetic streams and no replay; nothing to simulate")
        if not self.period_s > 0:
            raise ConfigError(f"period: must be positive, got {self.period_s!r}")
        if self.duration_s is not None and self.duration_s < 2 * self.period_s:
            raise ConfigError(
                f"duration: {self.duration_s:g} s is shorter than two sample periods ({self.period_s:g} s)"
            )
        if self.speed is not None and not self.speed > 0:
            raise ConfigError(f"speed: must be > 0 (1 = real time), got {self.speed!r}")
        if self.broker is not None and self.spawn_broker:
            raise ConfigError("broker and spawn_broker exclude each other: use a running broker or start a private one")
        if self.broker is not None and not re.match(r"^mqtts?://[^/:]+(:\d+)?/?$", self.broker):
            raise ConfigError(f"broker: {self.broker!r} is not a URL like mqtt://127.0.0.1:1883")
        if (self.faults.broker_restart or self.faults.daemon_restart) and not self.spawn_broker:
            raise ConfigError(
                "faults: broker_restart and daemon_restart need --spawn-broker (the simulator must own the "
                "broker and the daemon it restarts)"
            )
        if isinstance(self.pack, bool) or not isinstance(self.pack, int) or self.pack < 1:
            raise ConfigError(f"pack: expected a whole number >= 1 (records per SenML pack), got {self.pack!r}")
        if self.pack > 1 and not (self.broker or self.spawn_broker):
            raise ConfigError("pack: SenML packs go through a broker; add --spawn-broker or --broker")
        if "{stream}" in self.senml_topic or "+" in self.senml_topic or "#" in self.senml_topic:
            raise ConfigError(f"senml_topic: name one topic without {{stream}} or wildcards, got {self.senml_topic!r}")
        for key in ("input_template", "output_template"):
            if getattr(self, key).count("{stream}") != 1:
                raise ConfigError(f"{key}: must contain '{{stream}}' exactly once, got {getattr(self, key)!r}")

    @property
    def transport(self) -> str:
        return "mqtt" if self.broker or self.spawn_broker else "in-process"

    @property
    def samples(self) -> int:
        return int((self.duration_s or DEFAULT_DURATION_S) // self.period_s)


def default_model_path() -> Path:
    """The bundle used when none is named: ``$EDGE_GRU_MODEL``, ``./models/default``, or the project's own."""
    env = os.environ.get("EDGE_GRU_MODEL")
    if env:
        return Path(env)
    here = Path("models/default")
    if (here / "manifest.json").exists():
        return here
    project = Path(__file__).resolve().parent.parent / "models" / "default"
    if (project / "manifest.json").exists():
        return project
    raise ConfigError(
        "no model named and no models/default found; pass --model DIR (a bundle directory) or set EDGE_GRU_MODEL"
    )
