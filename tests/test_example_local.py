"""``examples/local/run.sh`` runs for real: mosquitto, ``edge-gru serve`` with the example config,
readings sent with ``mosquitto_pub``, forecasts read with ``mosquitto_sub``.

Its forecasts are checked against the Python API's pool fed the same readings in process
(the same model and backend), and the clean stop against the checkpoint it leaves.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import edge_gru
from edge_gru.harness import free_port
from tests.conftest import DEFAULT_MODEL, ROOT

SCRIPT = ROOT / "examples" / "local" / "run.sh"
T0 = 1732600000
STREAMS = {"kitchen_temperature": (21.0, 2.0), "cellar_humidity": (60.0, 5.0)}  # base, amplitude in run.sh


def test_local_example_script_serves_forecasts_equal_to_the_api(tmp_path: Path) -> None:
    readings = 24
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "PORT": str(free_port()),
        "READINGS": str(readings),
        "STATE_DIR": str(tmp_path / "state"),
        "EDGE_GRU": f"{sys.executable} -m edge_gru.cli",
        "EDGE_GRU_MODEL_BACKEND": "numpy",
        "TIMEOUT_S": "60",
    }
    res = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stderr[-4000:]
    got: dict[tuple[str, float], float] = {}
    for line in res.stdout.splitlines():
        topic, payload = line.split(" ", 1)
        doc = json.loads(payload)
        assert topic == f"predictions/{doc['stream']}" and doc["forecast_ts"] == doc["ts"] + 300
        got[doc["stream"], doc["ts"]] = doc["value"]

    pool = edge_gru.load(DEFAULT_MODEL, backend="numpy").pool(10)
    want: dict[tuple[str, float], float] = {}
    for k in range(readings):
        for stream, (base, amp) in STREAMS.items():
            value = float(f"{base + amp * math.sin(k / 4.0):.3f}")  # awk's printf "%.3f" in run.sh
            ts = float(T0 + 300 * k)
            y = pool.update([stream], [value], timestamps=[ts])[0]
            if not math.isnan(y):
                want[stream, ts] = float(y)
    assert len(want) == 2 * (readings - 9)  # the default model forecasts from its 10th reading on
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-9), key

    checkpoint = tmp_path / "state" / "edge-gru-local.checkpoint.npz"
    assert stat.S_IMODE(checkpoint.stat().st_mode) == 0o600
    assert "stopped    exit 0" in res.stderr


def test_local_example_script_passes_shellcheck() -> None:
    shellcheck = shutil.which("shellcheck") or str(Path(sys.executable).parent / "shellcheck")
    out = subprocess.run([shellcheck, "-S", "style", str(SCRIPT)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout


def test_local_example_config_is_valid_and_local() -> None:
    from edge_gru.daemon.config import load_config

    cfg = load_config(SCRIPT.parent / "edge-gru.toml", environ={})
    assert cfg.mqtt.host == "127.0.0.1" and not Path(cfg.state.dir).is_absolute()
    assert (SCRIPT.parent / cfg.model.path / "manifest.json").is_file()
    assert cfg.homeassistant.sensor_class("kitchen_temperature") == ("°C", "temperature")
