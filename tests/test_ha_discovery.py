"""Home Assistant discovery through a real broker: each stream's sensor gets its own unit and device class.

The daemon announces a forecast sensor per stream with a retained config message; a client
that connects afterwards (as Home Assistant after a restart) reads them from the broker.
Units and device classes come from ``[[homeassistant.streams]]`` patterns on the stream id,
the first match winning, and ``[homeassistant]`` itself for streams no pattern matches.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_gru.daemon.config import load_config
from edge_gru.errors import ConfigError
from edge_gru.harness import Broker, Daemon, Publisher, Watcher

PATTERNS = [  # [[homeassistant.streams]], first match wins
    {"match": "*_temperature", "unit_of_measurement": "°C", "device_class": "temperature"},
    {"match": "*_humidity", "unit_of_measurement": "%", "device_class": "humidity"},
    {"match": "meter-?", "unit_of_measurement": "kWh", "device_class": "energy"},
]


def test_retained_discovery_carries_each_streams_unit_and_device_class(
    broker: Broker, tmp_path: Path, topic_prefix: str
) -> None:
    ha_prefix = f"{topic_prefix}-ha"
    daemon = Daemon(
        tmp_path,
        host=broker.host,
        port=broker.port,
        sections={
            "streams": {"input": [f"{topic_prefix}/{{stream}}/value"], "output": f"{topic_prefix}/pred/{{stream}}"},
            "homeassistant": {
                "enabled": True,
                "discovery_prefix": ha_prefix,
                "unit_of_measurement": "W",
                "streams": PATTERNS,
            },
        },
    )
    assert "[[homeassistant.streams]]" not in daemon.config_path.read_text()  # inline tables, as TOML allows
    streams = {  # stream -> (unit, device class) expected
        "kitchen_temperature": ("°C", "temperature"),
        "cellar_humidity": ("%", "humidity"),
        "meter-1": ("kWh", "energy"),
        "meter-10": ("W", None),  # '?' is one character: falls through to [homeassistant]
        "pump": ("W", None),
    }
    retained: list[str] = []
    daemon.start()
    watcher = Watcher(broker.host, broker.port, [f"{topic_prefix}/pred/#"])
    publisher = Publisher(broker.host, broker.port)
    try:
        daemon.wait_ready()
        readings = [
            (f"{topic_prefix}/{s}/value", json.dumps({"value": 20.0 + (t % 4), "ts": 1_700_000_000 + 60 * t}).encode())
            for t in range(14)
            for s in streams
        ]
        publisher.publish_all(readings)
        watcher.wait_for(
            lambda: all(watcher.on(f"{topic_prefix}/pred/{s}") for s in streams), 60, "a forecast of every stream"
        )
        # Home Assistant, connecting later, gets the retained config of every sensor from the broker.
        ha = Watcher(broker.host, broker.port, [f"{ha_prefix}/#"])
        try:
            ha.wait_for(lambda: len(ha.on(f"{ha_prefix}/#")) >= len(streams), 30, "the retained discovery messages")
            found = {}
            for topic, payload, was_retained in ha.messages:
                assert was_retained, topic
                retained.append(topic)
                doc = json.loads(payload)
                found[doc["state_topic"].rsplit("/", 1)[1]] = doc
        finally:
            ha.close()
        assert set(found) == set(streams)
        for stream, (unit, device_class) in streams.items():
            doc = found[stream]
            assert doc.get("unit_of_measurement") == unit, (stream, doc)
            assert doc.get("device_class") == device_class, (stream, doc)
            assert doc["state_class"] == "measurement" and doc["availability_topic"] == daemon.status_topic
    finally:
        publisher.close()
        watcher.close()
        assert daemon.stop() == 0
        clear = Publisher(broker.host, broker.port)  # remove the retained configs from the shared broker
        clear.publish_all([(t, b"") for t in retained], qos=1)
        clear.close()


def test_stream_patterns_are_validated_naming_the_entry(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[[homeassistant.streams]]\nunit_of_measurement = "°C"\n')
    with pytest.raises(ConfigError, match=r"homeassistant\.streams\[0\]: missing 'match'"):
        load_config(path, environ={})
    path.write_text('[[homeassistant.streams]]\nmatch = "*_t"\nunit = "°C"\n')
    with pytest.raises(ConfigError, match=r"homeassistant\.streams\[0\]: unknown key 'unit'"):
        load_config(path, environ={})
    path.write_text('[homeassistant]\nstreams = ["*_t"]\n')
    with pytest.raises(ConfigError, match=r"homeassistant\.streams\[0\]: expected a table"):
        load_config(path, environ={})
    env = {"EDGE_GRU_HOMEASSISTANT_STREAMS": '[{"match": "boiler*", "device_class": "temperature"}]'}
    cfg = load_config(None, environ=env)
    assert cfg.homeassistant.sensor_class("boiler_flow") == (None, "temperature")
    assert cfg.homeassistant.sensor_class("flow_boiler") == (None, None)


class _Kept:
    """A Publisher that keeps what it is given."""

    def __init__(self) -> None:
        self.messages: dict[str, tuple[dict[str, object], bool]] = {}

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        self.messages[topic] = (json.loads(payload), retain)


def test_a_horizon_adds_one_retained_sensor_per_later_step(tmp_path: Path) -> None:
    """With a Dense(3) model, steps 2 and 3 get their own sensors reading values[1] and values[2]."""
    from edge_gru.daemon.discovery import Discovery
    from edge_gru.daemon.payload import decode_forecast, encode_forecast

    path = tmp_path / "c.toml"
    path.write_text('[homeassistant]\nenabled = true\nunit_of_measurement = "W"\n[mqtt]\nclient_id = "node 1"\n')
    kept = _Kept()
    Discovery(load_config(path), kept, horizon=3).announce("pump")
    topics = sorted(kept.messages)
    assert topics == [
        "homeassistant/sensor/node_1/pump_forecast/config",
        "homeassistant/sensor/node_1/pump_forecast_2/config",
        "homeassistant/sensor/node_1/pump_forecast_3/config",
    ]
    docs = [kept.messages[t][0] for t in topics]
    assert all(kept.messages[t][1] for t in topics)
    assert len({d["unique_id"] for d in docs}) == 3 and {d["unit_of_measurement"] for d in docs} == {"W"}
    assert docs[2]["value_template"] == "{{ value_json['values'][2].value }}"
    payload = encode_forecast(stream="pump", ts=0, forecast_ts=60, value=1, model_id="m", backend="b", steps=[1, 2, 3])
    assert decode_forecast(payload).values == ((60.0, 1.0), (120.0, 2.0), (180.0, 3.0))  # what the template reads
    one = _Kept()
    Discovery(load_config(path), one).announce("pump")
    assert list(one.messages) == ["homeassistant/sensor/node_1/pump_forecast/config"]
