"""The harness writes the daemon's config from a ``Config`` that the daemon's own loader reads back unchanged."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from edge_gru.daemon.config import Config, HomeAssistantConfig, MqttConfig, SensorClass, StreamsConfig, load_config
from edge_gru.harness import DEFAULT_MODEL, Daemon, toml_text


def test_a_config_object_round_trips_through_the_toml_writer(tmp_path: Path) -> None:
    cfg = Config(
        mqtt=MqttConfig(host="127.0.0.1", port=18830, client_id="round-trip", protocol="3.1.1", keepalive_s=7),
        streams=StreamsConfig(input=("a/{stream}/v", "b/{stream}"), output="out/{stream}", queue_size=17),
        homeassistant=HomeAssistantConfig(
            enabled=True,
            streams=(
                SensorClass(match="*_t", unit_of_measurement="°C"),
                SensorClass(match="m?", device_class="energy"),
            ),
        ),
    )
    path = tmp_path / "edge-gru.toml"
    path.write_text(toml_text(cfg))
    path.chmod(0o600)
    back = load_config(path, environ={})
    assert dataclasses.replace(back, source=cfg.source) == cfg


def test_the_daemon_launcher_writes_sections_over_its_defaults(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path, host="127.0.0.1", port=18831, sections={"streams": {"max_streams": 5}})
    cfg = load_config(daemon.config_path, environ={})
    assert cfg.mqtt.client_id == daemon.client_id and cfg.mqtt.port == 18831
    assert cfg.streams.max_streams == 5 and cfg.streams.input == ("sensors/{stream}/value",)
    assert Path(cfg.model.path) == DEFAULT_MODEL and cfg.state.dir == str(tmp_path / "state")
    assert cfg.checkpoint_path == daemon.checkpoint_path
