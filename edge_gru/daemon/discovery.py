"""Home Assistant MQTT discovery: one forecast sensor per stream, announced on its first forecast.

With ``homeassistant.anomaly_sensor`` (and the adaptation on, so payloads carry
``anomaly``) each stream also gets a ``binary_sensor`` that is on while its latest reading
is flagged.

The config message is retained, so Home Assistant picks the sensors up after its own
restarts; availability follows the daemon's status topic. Each sensor's unit and device
class come from the first ``[[homeassistant.streams]]`` entry whose pattern matches the
stream id, else from ``[homeassistant]`` itself: one daemon serves thermometers, meters
and hygrometers side by side. A model with a horizon of k samples adds one sensor per later
step (``<stream>_forecast_2`` ... ``_k``) reading ``values[k-1]`` of the same payload.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from edge_gru.daemon.config import Config
from edge_gru.daemon.logs import event
from edge_gru.daemon.payload import output_topic
from edge_gru.daemon.worker import Publisher

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
MAX_TOPIC_BYTES = 65_535  # MQTT's limit on a topic name
log = logging.getLogger(__name__)


def object_id(text: str) -> str:
    """Home Assistant ids allow ``[A-Za-z0-9_-]`` only."""
    return _UNSAFE.sub("_", text)


class Discovery:
    """Publishes ``<prefix>/sensor/<node>/<stream>_forecast/config`` for each new stream."""

    def __init__(self, cfg: Config, publisher: Publisher, *, version: str = "", horizon: int = 1) -> None:
        self.cfg = cfg
        self.publisher = publisher
        self.version = version
        self.horizon = horizon  # the served model's; the service updates it when a reload changes it

    def config_topic(self, stream: str) -> str:
        ha = self.cfg.homeassistant
        return f"{ha.discovery_prefix}/sensor/{object_id(self.cfg.mqtt.client_id)}/{object_id(stream)}_forecast/config"

    def config_payload(self, stream: str) -> dict[str, Any]:
        cfg, ha = self.cfg, self.cfg.homeassistant
        node = cfg.mqtt.client_id
        state = output_topic(cfg.streams.output, stream)
        doc: dict[str, Any] = {
            "name": f"{stream} forecast",
            "unique_id": f"{object_id(node)}_{object_id(stream)}_forecast",
            "object_id": f"{object_id(stream)}_forecast",
            "state_topic": state,
            "value_template": "{{ value_json.value }}",
            "json_attributes_topic": state,
            "state_class": "measurement",
            "availability_topic": cfg.mqtt.status_topic,
            "payload_available": "online",
            "payload_not_available": "offline",
            "device": {
                "identifiers": [f"edge-gru-{node}"],
                "name": f"edge-gru {node}",
                "manufacturer": "edge-gru",
                "model": "GRU forecaster",
                **({"sw_version": self.version} if self.version else {}),
            },
        }
        unit, device_class = ha.sensor_class(stream)
        if unit:
            doc["unit_of_measurement"] = unit
        if device_class:
            doc["device_class"] = device_class
        return doc

    def step_topic(self, stream: str, step: int) -> str:
        return self.config_topic(stream).replace("_forecast/config", f"_forecast_{step}/config")

    def step_payload(self, stream: str, step: int) -> dict[str, Any]:
        """The forecast ``step`` samples ahead (a model with a horizon > 1)."""
        doc = self.config_payload(stream)
        sid = object_id(stream)
        doc.update(
            name=f"{stream} forecast +{step}",
            unique_id=f"{object_id(self.cfg.mqtt.client_id)}_{sid}_forecast_{step}",
            object_id=f"{sid}_forecast_{step}",
            value_template=f"{{{{ value_json['values'][{step - 1}].value }}}}",
        )
        doc.pop("json_attributes_topic", None)
        return doc

    def anomaly_topic(self, stream: str) -> str:
        ha = self.cfg.homeassistant
        node = object_id(self.cfg.mqtt.client_id)
        return f"{ha.discovery_prefix}/binary_sensor/{node}/{object_id(stream)}_anomaly/config"

    def anomaly_payload(self, stream: str) -> dict[str, Any]:
        """A ``binary_sensor`` on: the stream's latest reading was flagged (adaptation on)."""
        doc = self.config_payload(stream)
        for key in ("value_template", "state_class", "unit_of_measurement", "device_class"):
            doc.pop(key, None)
        sid = object_id(stream)
        doc.update(
            name=f"{stream} anomaly",
            unique_id=f"{object_id(self.cfg.mqtt.client_id)}_{sid}_anomaly",
            object_id=f"{sid}_anomaly",
            value_template="{{ 'ON' if value_json.anomaly else 'OFF' }}",
            device_class="problem",
        )
        return doc

    def announce(self, stream: str) -> None:
        """Publish the stream's config; one it cannot carry is one log line, never a traceback."""
        topic = self.config_topic(stream)
        if len(topic.encode()) > MAX_TOPIC_BYTES:
            event(
                log, logging.WARNING, "discovery_skipped", stream=stream[:64], detail="config topic too long for MQTT"
            )
            return
        payload = json.dumps(self.config_payload(stream), separators=(",", ":")).encode()
        self.publisher.publish(topic, payload, qos=1, retain=True)
        for step in range(2, self.horizon + 1):
            doc = json.dumps(self.step_payload(stream, step), separators=(",", ":")).encode()
            self.publisher.publish(self.step_topic(stream, step), doc, qos=1, retain=True)
        if self.cfg.homeassistant.anomaly_sensor:
            doc = json.dumps(self.anomaly_payload(stream), separators=(",", ":")).encode()
            self.publisher.publish(self.anomaly_topic(stream), doc, qos=1, retain=True)
