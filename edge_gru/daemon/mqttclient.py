"""The MQTT connection: paho-mqtt 2.x, callback API v2, MQTT 5 or 3.1.1, TLS, persistent session.

What a daemon that must not lose readings needs from its client:

- a persistent session (MQTT 5 ``clean_start=False`` with a session expiry, 3.1.1
  ``clean_session=False``) and QoS 1 subscriptions, so the broker keeps readings while
  the daemon restarts;
- subscriptions renewed on every connect (a broker that lost its state forgets them);
- reconnects with capped exponential back-off (paho's, between ``reconnect_min_s`` and
  ``reconnect_max_s``), each failed attempt logged with the time of the next one while the
  back-off grows, then at most once a minute;
- manual acknowledgement: a reading is acknowledged once it is in the worker's queue, and
  not at all once the daemon is stopping, so the broker redelivers it to the next run;
- the retained status topic ``edge-gru/<client_id>/status``: ``online`` once subscribed,
  ``offline`` on a clean stop and, as the last will, when the connection dies.
"""

from __future__ import annotations

import logging
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from edge_gru.daemon.config import MqttConfig
from edge_gru.daemon.logs import event

log = logging.getLogger(__name__)

CONNECT_FAIL_LOG_S = 60.0  # once the back-off is at its cap, at most one warning a minute
SHORT_CONNECTION_S = 30.0  # connections this short, several in a row, mean something fights us for the session
ONLINE = b"online"
OFFLINE = b"offline"


class MqttClient:
    """One broker connection; ``on_message(topic, payload, received) -> bool`` says whether to acknowledge."""

    def __init__(
        self,
        cfg: MqttConfig,
        *,
        subscriptions: list[str],
        on_message: Callable[[str, bytes, float], bool],
        on_ready: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cfg = cfg
        self.subscriptions = subscriptions
        self.on_message_cb = on_message
        self.on_ready = on_ready
        self._clock = clock
        self.connected = threading.Event()
        self.ready = threading.Event()  # connected, subscribed and online published
        self.connects = 0
        self.reconnects = 0
        self.last_error: str | None = None
        self._sub_mid: int | None = None
        self._closing = False
        self._connected_at = time.monotonic()
        self._short_connections = 0
        self.failed_attempts = 0  # since the last successful connect
        self._last_fail_log = 0.0
        self._logged_delay: float | None = None
        self._retry_delay: float | None = None  # paho's current back-off, mirrored (see _next_retry_delay)
        self.v5 = cfg.protocol == "5"
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=cfg.client_id,
            clean_session=None if self.v5 else False,
            protocol=mqtt.MQTTv5 if self.v5 else mqtt.MQTTv311,
            manual_ack=True,
        )
        if cfg.username is not None:
            client.username_pw_set(cfg.username, cfg.resolved_password())
        if cfg.tls or cfg.tls_ca or cfg.tls_cert:
            client.tls_set(
                ca_certs=cfg.tls_ca,
                certfile=cfg.tls_cert,
                keyfile=cfg.tls_key,
                cert_reqs=ssl.CERT_NONE if cfg.tls_insecure else ssl.CERT_REQUIRED,
            )
            client.tls_insecure_set(cfg.tls_insecure)
        client.will_set(cfg.status_topic, OFFLINE, qos=1, retain=True)
        client.reconnect_delay_set(cfg.reconnect_min_s, cfg.reconnect_max_s)  # type: ignore[arg-type]
        client.max_queued_messages_set(cfg.max_queued_out)
        client.max_inflight_messages_set(cfg.max_inflight)  # forecasts in flight awaiting PUBACK
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        if logging.getLogger("paho").isEnabledFor(logging.DEBUG):
            client.enable_logger(logging.getLogger("paho"))
        self.client = client

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        """Connect in the background (retrying until the broker answers) and start the network thread."""
        properties = None
        kwargs: dict[str, Any] = {}
        if self.v5:
            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = self.cfg.session_expiry_s
            kwargs["clean_start"] = False
        self.client.connect_async(
            self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive_s, properties=properties, **kwargs
        )
        self.client.loop_start()
        event(
            log,
            logging.INFO,
            "mqtt_connecting",
            host=self.cfg.host,
            port=self.cfg.port,
            client_id=self.cfg.client_id,
            protocol=self.cfg.protocol,
            tls=bool(self.cfg.tls or self.cfg.tls_ca),
        )

    def stop(self, *, timeout: float = 5.0) -> None:
        """Publish ``offline`` (retained), disconnect cleanly (no last will), stop the network thread."""
        if self.connected.is_set():
            try:
                info = self.client.publish(self.cfg.status_topic, OFFLINE, qos=1, retain=True)
                info.wait_for_publish(timeout)
            except (RuntimeError, ValueError) as exc:
                event(log, logging.WARNING, "status_offline_not_sent", detail=str(exc))
        self.ready.clear()
        self._closing = True
        self.client.disconnect()
        self.client.loop_stop()
        event(log, logging.INFO, "mqtt_disconnected", reason="shutdown")

    # -- publishing (any thread) -----------------------------------------------------------------
    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        """Queue a message; raises ConnectionError when it cannot be (outgoing queue full, or QoS 0 offline)."""
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            if info.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
                raise ConnectionError(f"outgoing queue full ({self.cfg.max_queued_out} messages)")
            if info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN and qos > 0:
                return  # queued by paho and sent after the reconnect
            raise ConnectionError(mqtt.error_string(info.rc))

    @property
    def queued_out(self) -> int:
        return len(self.client._out_messages)

    # -- paho callbacks (network thread) ---------------------------------------------------------
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            self.last_error = str(reason_code)
            event(
                log,
                logging.ERROR,
                "mqtt_connect_refused",
                host=self.cfg.host,
                port=self.cfg.port,
                reason=str(reason_code),
                hint=_hint(str(reason_code)),
            )
            return
        self.connects += 1
        self.failed_attempts = 0
        self._retry_delay = self._logged_delay = None  # paho resets its back-off on a successful CONNACK
        self._connected_at = time.monotonic()
        if self.connects > 1:
            self.reconnects += 1
        self.connected.set()
        self.last_error = None
        event(
            log,
            logging.INFO,
            "mqtt_connected",
            host=self.cfg.host,
            port=self.cfg.port,
            session_present=bool(getattr(flags, "session_present", False)),
            connects=self.connects,
        )
        if self.v5:
            topics: list[tuple[str, Any]] = [(t, SubscribeOptions(qos=self.cfg.qos)) for t in self.subscriptions]
        else:
            topics = [(t, self.cfg.qos) for t in self.subscriptions]
        rc, mid = client.subscribe(topics)
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            event(log, logging.ERROR, "mqtt_subscribe_failed", reason=mqtt.error_string(rc))
        self._sub_mid = mid

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reason_codes: Any, properties: Any) -> None:
        if mid != self._sub_mid:
            return
        failed = [t for t, rc in zip(self.subscriptions, reason_codes, strict=False) if rc.is_failure]
        if failed:
            event(
                log,
                logging.ERROR,
                "mqtt_subscribe_refused",
                topics=",".join(failed),
                hint="check the broker ACL for these topic filters",
            )
        granted = [int(rc.value) for rc in reason_codes]
        event(log, logging.INFO, "mqtt_subscribed", topics=",".join(self.subscriptions), granted_qos=granted)
        client.publish(self.cfg.status_topic, ONLINE, qos=1, retain=True)
        first = not self.ready.is_set()
        self.ready.set()
        if first and self.on_ready is not None:
            self.on_ready()

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        # paho calls this while handling the OSError of the attempt, so the cause is at hand
        exc = sys.exc_info()[1]
        reason = f"{type(exc).__name__}: {exc}" if exc is not None else "connection failed"
        self.last_error = reason
        self.failed_attempts += 1
        delay = self._next_retry_delay()
        now = time.monotonic()
        # Every attempt while the back-off still grows (1, 2, 4 ... s: a few lines), then one a minute.
        if delay != self._logged_delay or now - self._last_fail_log >= CONNECT_FAIL_LOG_S:
            self._last_fail_log, self._logged_delay = now, delay
            event(
                log,
                logging.WARNING,
                "mqtt_connect_failed",
                host=self.cfg.host,
                port=self.cfg.port,
                reason=reason,
                attempts=self.failed_attempts,
                retry_in_s=round(delay, 3),
                next_retry=_utc_after(delay),
                hint=_connect_hint(exc),
            )

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        was = self.connected.is_set()
        self.connected.clear()
        self.ready.clear()
        lasted = time.monotonic() - self._connected_at
        self._short_connections = self._short_connections + 1 if lasted < SHORT_CONNECTION_S else 0
        hint = _hint(str(reason_code)) if "taken over" in str(reason_code).lower() else None
        if self._short_connections >= 3:
            hint = (
                f"{self._short_connections} connections in a row lasted under {SHORT_CONNECTION_S:g} s: another client "
                "may use the same mqtt.client_id (each daemon needs its own), or the broker refuses a topic (ACL)"
            )
        if self._closing:
            return
        delay = self._next_retry_delay()  # paho waits once after every disconnect it did not ask for
        if was:
            event(
                log,
                logging.WARNING,
                "mqtt_connection_lost",
                reason=str(reason_code),
                connected_for_s=round(lasted, 1),
                retry_in_s=round(delay, 3),
                next_retry=_utc_after(delay),
                **({"hint": hint} if hint else {}),
            )

    def _next_retry_delay(self) -> float:
        """The wait paho takes after this failure: ``reconnect_min_s``, doubled per failure, capped.

        paho's documented back-off (``reconnect_delay_set``), which it reports nowhere: called
        once per failed attempt or lost connection, as paho waits once for each.
        """
        cfg = self.cfg
        if self._retry_delay is None:
            self._retry_delay = cfg.reconnect_min_s
        else:
            self._retry_delay = min(self._retry_delay * 2, cfg.reconnect_max_s)
        return self._retry_delay

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        received = self._clock()
        try:
            topic = msg.topic
        except UnicodeDecodeError:
            topic = msg._topic.decode("utf-8", "replace")
        try:
            accept = self.on_message_cb(topic, bytes(msg.payload), received)
        except Exception:  # the network thread must survive anything
            log.exception("on_message_failed", extra={"fields": {"topic": topic}})
            accept = True
        if accept:
            client.ack(msg.mid, msg.qos)


def _utc_after(seconds: float) -> str:
    """ISO 8601 UTC time ``seconds`` from now, to the millisecond (what a reader of the journal compares)."""
    return datetime.fromtimestamp(time.time() + seconds, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _connect_hint(exc: BaseException | None) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return "the broker's certificate does not verify: check mqtt.tls_ca and that mqtt.host matches the certificate"
    if isinstance(exc, ssl.SSLError):
        return "TLS failed: check mqtt.tls_ca, tls_cert and tls_key, and that mqtt.port is the broker's TLS port"
    if isinstance(exc, ConnectionRefusedError):
        return "nothing listens there: check mqtt.host and mqtt.port and that the broker runs"
    if isinstance(exc, socket.gaierror):
        return "mqtt.host does not resolve"
    return "retrying with back-off; check the network and the broker"


def _hint(reason: str) -> str:
    lowered = reason.lower()
    if "not authorized" in lowered or "bad user" in lowered or "password" in lowered:
        return "check mqtt.username and the password (EDGE_GRU_MQTT_PASSWORD or mqtt.password_file)"
    if "taken over" in lowered:
        return "another client connected with the same mqtt.client_id; give each daemon its own"
    if "identifier" in lowered:
        return "the broker refused mqtt.client_id; make it unique per device"
    return "see the broker log"
