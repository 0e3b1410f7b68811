"""The daemon config: TOML + environment into typed values; errors name section.key and the file."""

from __future__ import annotations

import dataclasses
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from edge_gru.daemon.config import Config, describe, load_config
from edge_gru.errors import ConfigError
from tests.conftest import DEFAULT_MODEL, ROOT

EXAMPLE = ROOT / "deploy" / "edge-gru.toml"
EDGE_GRU = Path(sys.executable).parent / "edge-gru"


def write(tmp_path: Path, text: str, name: str = "edge-gru.toml", mode: int = 0o600) -> Path:
    path = tmp_path / name
    path.write_text(text)
    path.chmod(mode)
    return path


def test_example_config_has_every_key_and_loads() -> None:
    cfg = load_config(EXAMPLE, environ={})
    assert cfg.mqtt.client_id == "edge-gru-node1" and cfg.streams.input == ("sensors/{stream}/value",)
    text = EXAMPLE.read_text()
    for section, values in describe(Config()).items():
        assert f"[{section}]" in text
        for key in values:
            if key != "client_id":
                assert f"{key} =" in text, f"deploy/edge-gru.toml does not document {section}.{key}"


def test_contract_keys_and_types(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[mqtt]
host = "broker.lan"
port = 8883
client_id = "node7"
[model]
path = "models/default"
backend = "numba"
[streams]
input = ["sensors/{stream}/value", "home/{stream}"]
output = "predictions/{stream}"
[state]
dir = "/tmp/x"
checkpoint_interval_s = 30
""",
    )
    cfg = load_config(path, environ={})
    assert (cfg.mqtt.host, cfg.mqtt.port, cfg.mqtt.client_id) == ("broker.lan", 8883, "node7")
    assert cfg.state.checkpoint_interval_s == 30.0 and isinstance(cfg.state.checkpoint_interval_s, float)
    assert cfg.mqtt.status_topic == "edge-gru/node7/status"
    assert cfg.stats_topic == "edge-gru/node7/stats"
    assert cfg.checkpoint_path == Path("/tmp/x/node7.checkpoint.npz")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.mqtt.host = "x"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[mqtt]\nhots = 'x'\n", "mqtt.hots"),
        ("[mqtt]\nport = '1883'\n", "mqtt.port"),
        ("[mqtt]\nport = 70000\n", "mqtt.port"),
        ("[mqtt]\nport = true\n", "mqtt.port"),
        ("[mqtt]\nprotocol = '4'\n", "mqtt.protocol"),
        ("[mqtt]\nclient_id = 'a/b'\n", "mqtt.client_id"),
        ("[streams]\ninput = ['sensors/value']\n", "streams.input"),
        ("[streams]\ninput = [1]\n", "streams.input"),
        ("[streams]\noutput = 'predictions'\n", "streams.output"),
        ("[streams]\nqueue_policy = 'block'\n", "streams.queue_policy"),
        ("[streams]\nmax_abs_value = 0\n", "streams.max_abs_value"),
        ("[streams]\nmax_abs_value = inf\n", "streams.max_abs_value"),
        ("[streams]\nmax_id_bytes = 0\n", "streams.max_id_bytes"),
        ("[model]\nbackend = 'tensorflow'\n", "model.backend"),
        ("[state]\ncheckpoint_interval_s = 0\n", "state.checkpoint_interval_s"),
        ("[logging]\nlevel = 'loud'\n", "logging.level"),
        ("[mqtt]\ntls_ca = '/nonexistent/ca.crt'\n", "mqtt.tls_ca"),
        ("[mqtt]\npassword = 'a'\npassword_file = '/x'\n", "mqtt.password_file"),
        ("[sensors]\nx = 1\n", "[sensors]"),
        ("mqtt = 5\n", "mqtt"),
        ("[mqtt\nhost='x'", "not valid TOML"),
    ],
)
def test_errors_name_the_key_and_the_file(tmp_path: Path, text: str, needle: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert needle in str(info.value) and str(path) in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "nope.toml", environ={})


def test_environment_overrides_with_types(tmp_path: Path) -> None:
    path = write(tmp_path, "[mqtt]\nhost = 'file-host'\nport = 1883\n[streams]\nmax_streams = 5\n")
    env = {
        "EDGE_GRU_MQTT_HOST": "env-host",
        "EDGE_GRU_MQTT_PORT": "8883",
        "EDGE_GRU_MQTT_TLS": "true",
        "EDGE_GRU_MQTT_USERNAME": "bob",
        "EDGE_GRU_MQTT_PASSWORD": "hunter2",
        "EDGE_GRU_STREAMS_INPUT": "a/{stream},b/{stream}/v",
        "EDGE_GRU_STREAMS_IDLE_TIMEOUT_S": "",
        "EDGE_GRU_STATE_CHECKPOINT_INTERVAL_S": "2.5",
    }
    cfg = load_config(path, environ=env)
    assert (cfg.mqtt.host, cfg.mqtt.port, cfg.mqtt.tls, cfg.mqtt.username) == ("env-host", 8883, True, "bob")
    assert cfg.mqtt.password == "hunter2"
    assert cfg.streams.input == ("a/{stream}", "b/{stream}/v") and cfg.streams.max_streams == 5
    assert cfg.streams.idle_timeout_s is None and cfg.state.checkpoint_interval_s == 2.5
    with pytest.raises(ConfigError, match=r"EDGE_GRU_MQTT_PORT \(mqtt.port\)"):
        load_config(path, environ={"EDGE_GRU_MQTT_PORT": "eighty"})


def test_secrets_never_show(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write(tmp_path, "[mqtt]\nusername = 'u'\npassword = 's3cr3t-pw'\n")
    cfg = load_config(path, environ={})
    assert cfg.mqtt.password == "s3cr3t-pw"
    for text in (repr(cfg), str(cfg.mqtt), repr(describe(cfg)), f"{cfg!r}"):
        assert "s3cr3t-pw" not in text
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={"EDGE_GRU_MQTT_PORT": "s3cr3t-pw"})
    assert "mqtt.port" in str(info.value)
    bad = write(tmp_path, "[mqtt]\npassword = 12345678\n", name="bad.toml")
    with pytest.raises(ConfigError) as info:
        load_config(bad, environ={})
    assert "12345678" not in str(info.value) and "mqtt.password" in str(info.value)


def test_world_readable_password_is_warned_about(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    text = "[mqtt]\nusername = 'u'\npassword = 'pw-123456'\n"
    with caplog.at_level(logging.WARNING, logger="edge_gru.daemon.config"):
        load_config(write(tmp_path, text, "private.toml", 0o600), environ={})
        assert not caplog.records
        load_config(write(tmp_path, text, "open.toml", 0o644), environ={})
    assert [r.getMessage() for r in caplog.records] == ["config_world_readable"]
    assert "pw-123456" not in caplog.text


def test_password_file(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("from-file\n")
    cfg = load_config(write(tmp_path, f"[mqtt]\nusername = 'u'\npassword_file = '{secret}'\n"), environ={})
    assert cfg.mqtt.resolved_password() == "from-file"
    secret.unlink()
    with pytest.raises(ConfigError, match=r"mqtt\.password_file"):
        cfg.mqtt.resolved_password()


def run_check(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(EDGE_GRU), "serve", "--config", str(config), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )


def test_serve_check_good_and_bad(tmp_path: Path) -> None:
    good = write(
        tmp_path,
        f"[mqtt]\nclient_id = 'chk'\n[model]\npath = '{DEFAULT_MODEL}'\nbackend = 'numpy'\n"
        f"[state]\ndir = '{tmp_path / 'state'}'\n",
    )
    ok = run_check(good)
    assert ok.returncode == 0, ok.stderr
    assert '"subscriptions"' in ok.stdout and "sensors/+/value" in ok.stdout
    bad_key = write(tmp_path, "[streams]\ninptu = ['a/{stream}']\n", name="bad.toml")
    res = run_check(bad_key)
    assert res.returncode == 78 and "streams.inptu" in res.stderr and str(bad_key) in res.stderr
    broken = tmp_path / "broken-bundle"
    broken.mkdir()
    for f in DEFAULT_MODEL.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    (broken / "weights.npz").write_bytes(b"not a weights file")
    bad_bundle = write(tmp_path, f"[model]\npath = '{broken}'\nbackend = 'numpy'\n", name="bad-bundle.toml")
    res = run_check(bad_bundle)
    assert res.returncode == 78 and "weights.npz" in res.stderr
