"""Saved runs: TOML scenario files, validated, with errors that name the file and the key.

A scenario holds the same settings as the command line (command-line options override
it). Named scenarios ship in ``sim/scenarios/`` and run from an installed wheel:
``edge-gru simulate --scenario electricity``. Paths inside a scenario are relative to
the scenario file.

.. code-block:: toml

    description = "Two weeks of building sensors with flaky radios"
    streams = 24
    profiles = ["daily", "weekly"]
    duration = "14d"
    period = "5m"
    seed = 7
    faults = "dropout=0.01,nan=0.002"      # or a table: [faults] dropout = 0.01

    [[replay]]
    file = "../data/taylor_electricity_30min.csv"
    column = "demand_MW"

>>> sorted(named_scenarios())[:2]
['beijing-air', 'default']
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from edge_gru.errors import ConfigError
from sim.config import parse_duration
from sim.faults import parse_faults
from sim.profiles import ReplaySource

SCENARIO_DIR = Path(__file__).resolve().parent / "scenarios"
_KEYS = {
    "name": str,
    "description": str,
    "streams": int,
    "profiles": list,
    "duration": (str, int, float),
    "period": (str, int, float),
    "seed": int,
    "faults": (str, dict),
    "model": str,
    "backend": str,
    "speed": (int, float),
    "realtime": bool,
    "input_template": str,
    "output_template": str,
    "replay": list,
}
_REPLAY_KEYS = {"file": str, "column": str, "time_column": str, "stream": str}


def named_scenarios() -> dict[str, Path]:
    """The scenarios shipped with the simulator, by name."""
    return {p.stem: p for p in sorted(SCENARIO_DIR.glob("*.toml"))}


def resolve(name_or_path: str | os.PathLike[str]) -> Path:
    """A scenario file path, or the name of a shipped scenario."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise ConfigError(f"scenario {str(path)!r}: no such file")
        return path
    named = named_scenarios()
    if str(name_or_path) in named:
        return named[str(name_or_path)]
    raise ConfigError(f"scenario {str(name_or_path)!r}: not a file and not one of {', '.join(named)}")


def load_scenario(name_or_path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate a scenario; returns keyword arguments for :class:`sim.config.SimConfig`."""
    path = resolve(name_or_path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from exc
    for key, value in data.items():
        if key not in _KEYS:
            raise ConfigError(f"{path}: unknown key {key!r}; known keys are {', '.join(_KEYS)}")
        expected = _KEYS[key]
        if isinstance(value, bool) and expected is not bool:
            raise ConfigError(f"{path}: key {key!r} must not be a boolean")
        if not isinstance(value, expected):  # type: ignore[arg-type]
            raise ConfigError(f"{path}: key {key!r} has the wrong type ({type(value).__name__}); see docs/simulator.md")
    out: dict[str, Any] = {"name": data.get("name", path.stem)}
    if "streams" in data:
        out["streams"] = data["streams"]
    if "profiles" in data:
        if not all(isinstance(p, str) for p in data["profiles"]):
            raise ConfigError(f"{path}: key 'profiles' must be a list of profile names")
        out["profiles"] = tuple(data["profiles"])
    if "duration" in data:
        out["duration_s"] = parse_duration(data["duration"], name=f"{path}: key 'duration'")
    if "period" in data:
        out["period_s"] = parse_duration(data["period"], name=f"{path}: key 'period'")
    if "seed" in data:
        out["seed"] = data["seed"]
    if "faults" in data:
        try:
            out["faults"] = parse_faults(data["faults"])
        except ConfigError as exc:
            raise ConfigError(f"{path}: key {exc}") from None
    if "model" in data:
        out["model"] = str((path.parent / data["model"]).resolve())
    for key in ("backend", "input_template", "output_template", "description"):
        if key in data:
            out[key] = data[key]
    if data.get("realtime"):
        out["speed"] = 1.0
    if "speed" in data:
        out["speed"] = float(data["speed"])
    replays = []
    for i, item in enumerate(data.get("replay", [])):
        where = f"{path}: replay[{i}]"
        if not isinstance(item, dict):
            raise ConfigError(f"{where} must be a table with 'file' and 'column'")
        for key, value in item.items():
            if key not in _REPLAY_KEYS:
                raise ConfigError(f"{where}: unknown key {key!r}; known keys are {', '.join(_REPLAY_KEYS)}")
            if not isinstance(value, str):
                raise ConfigError(f"{where}: key {key!r} must be a string")
        for key in ("file", "column"):
            if key not in item:
                raise ConfigError(f"{where}: key {key!r} is missing")
        replays.append(
            ReplaySource(
                path=str((path.parent / item["file"]).resolve()),
                column=item["column"],
                time_column=item.get("time_column"),
                stream=item.get("stream"),
            )
        )
    if replays:
        out["replays"] = tuple(replays)
        out.setdefault("streams", 0)
    return out
