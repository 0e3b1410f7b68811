"""The daemon's configuration: TOML into frozen, typed, keyword-only dataclasses.

Every key is validated where it is read, and an error names ``section.key`` and the file,
because a daemon that starts with a typo in its config fails silently for months.
Environment variables ``EDGE_GRU_<SECTION>_<KEY>`` override the file (for secrets and
hosts that differ per device): ``EDGE_GRU_MQTT_HOST``, ``EDGE_GRU_MQTT_PASSWORD``, ...
Secrets never appear in ``repr`` or logs.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import logging
import math
import os
import re
import socket
import stat
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_gru.adaptation import MODES as ADAPTATION_CHOICES
from edge_gru.adaptation import AdaptationSpec, resolve_spec
from edge_gru.backends import BACKEND_CHOICES
from edge_gru.daemon.logs import LEVELS, event
from edge_gru.daemon.payload import MAX_PAYLOAD_BYTES, InputTopics, TopicMap, validate_output_template
from edge_gru.errors import ConfigError
from edge_gru.pool import DEFAULT_MAX_ABS_VALUE, DEFAULT_MAX_ID_BYTES, DEFAULT_MAX_STREAMS

log = logging.getLogger(__name__)

ENV_PREFIX = "EDGE_GRU_"
PROTOCOLS = ("5", "3.1.1")
QUEUE_POLICIES = ("drop_oldest", "drop_newest")
DEFAULT_INPUT = "sensors/{stream}/value"
DEFAULT_OUTPUT = "predictions/{stream}"


class Secret(str):
    """A string that shows as ``'***'`` in ``repr``, f-strings of the config, and logs."""

    def __repr__(self) -> str:
        return "'***'" if self else "''"


@dataclass(frozen=True, kw_only=True)
class MqttConfig:
    host: str = "127.0.0.1"
    port: int = 1883
    client_id: str = field(default_factory=lambda: f"edge-gru-{socket.gethostname()}")
    protocol: str = "5"
    keepalive_s: int = 30
    username: str | None = None
    password: Secret | None = None
    password_file: str | None = None
    tls: bool = False
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_insecure: bool = False
    qos: int = 1
    session_expiry_s: int = 7 * 24 * 3600
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 60.0
    max_queued_out: int = 10_000
    max_inflight: int = 1000

    @property
    def status_topic(self) -> str:
        return f"edge-gru/{self.client_id}/status"

    def resolved_password(self) -> Secret | None:
        """The password, read from ``password_file`` (e.g. a systemd credential) when that is set."""
        if self.password_file:
            try:
                return Secret(Path(self.password_file).read_text().rstrip("\r\n"))
            except OSError as exc:
                raise ConfigError(f"mqtt.password_file: cannot read {self.password_file}: {exc.strerror}") from exc
        return self.password


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    path: str = "models/default"
    backend: str = "auto"
    adaptation: str = "bundle"  # bundle | on | off: per-stream combination, intervals, anomaly flags
    hold_out_anomalies: bool = False  # true: anomalous readings do not enter the state (else: the bundle's setting)


@dataclass(frozen=True, kw_only=True)
class StreamsConfig:
    """``[streams]``: topics, the pool's limits, and the worker's queue; the one home of their defaults."""

    input: tuple[str, ...] = (DEFAULT_INPUT,)
    pack_input: tuple[str, ...] = ()  # templates whose messages are JSON arrays of the stream's readings
    senml_input: tuple[str, ...] = ()  # topic filters whose messages are SenML packs (streams from the names)
    output: str = DEFAULT_OUTPUT
    output_qos: int = 1
    output_retain: bool = False
    max_streams: int = DEFAULT_MAX_STREAMS
    idle_timeout_s: float | None = 86_400.0
    queue_size: int = 10_000
    queue_policy: str = "drop_oldest"
    batch_size: int = 512
    max_payload_bytes: int = MAX_PAYLOAD_BYTES
    use_receive_time: bool = False
    max_abs_value: float = DEFAULT_MAX_ABS_VALUE
    max_id_bytes: int = DEFAULT_MAX_ID_BYTES


@dataclass(frozen=True, kw_only=True)
class StateConfig:
    dir: str = "/var/lib/edge-gru"
    checkpoint_interval_s: float = 30.0


@dataclass(frozen=True, kw_only=True)
class StatsConfig:
    interval_s: float = 60.0
    topic: str = "edge-gru/{client_id}/stats"


@dataclass(frozen=True, kw_only=True)
class LoggingConfig:
    level: str = "info"
    format: str = "logfmt"
    warn_interval_s: float = 10.0


@dataclass(frozen=True, kw_only=True)
class SensorClass:
    """Home Assistant's unit and device class for the forecast sensors of the streams ``match`` selects.

    ``match`` is a shell-style pattern (``*``, ``?``, ``[...]``) on the stream id, the
    ``{stream}`` segment of the input topic: ``"*_temperature"``, ``"meter-?"``.
    """

    match: str
    unit_of_measurement: str | None = None
    device_class: str | None = None


@dataclass(frozen=True, kw_only=True)
class HomeAssistantConfig:
    enabled: bool = False
    discovery_prefix: str = "homeassistant"
    unit_of_measurement: str | None = None  # for streams no entry of ``streams`` matches
    device_class: str | None = None
    anomaly_sensor: bool = False  # a binary_sensor per stream from the payload's "anomaly"
    streams: tuple[SensorClass, ...] = ()  # [[homeassistant.streams]] tables; the first match wins

    def sensor_class(self, stream: str) -> tuple[str | None, str | None]:
        """(unit_of_measurement, device_class) of ``stream``'s forecast sensor."""
        for entry in self.streams:
            if fnmatch.fnmatchcase(stream, entry.match):
                return entry.unit_of_measurement, entry.device_class
        return self.unit_of_measurement, self.device_class


@dataclass(frozen=True, kw_only=True)
class ClusterConfig:
    """Scale-out over a NATS cluster (docs/scale-out.md); off by default."""

    enabled: bool = False
    servers: tuple[str, ...] = ("nats://127.0.0.1:4222",)
    member_id: str | None = None  # default: mqtt.client_id
    partitions: int = 12
    subject_prefix: str = "part"
    input_stream: str = "EDGE_GRU_IN"
    output_stream: str = "EDGE_GRU_OUT"
    bucket: str = "edge-gru"
    replicas: int = 3
    retention_s: float = 86_400.0
    output_retention_s: float = 3_600.0
    duplicate_window_s: float = 600.0
    lease_ttl_s: float = 10.0
    heartbeat_s: float = 1.0
    fetch_batch: int = 512


@dataclass(frozen=True, kw_only=True)
class Config:
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    streams: StreamsConfig = field(default_factory=StreamsConfig)
    state: StateConfig = field(default_factory=StateConfig)
    stats: StatsConfig = field(default_factory=StatsConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    homeassistant: HomeAssistantConfig = field(default_factory=HomeAssistantConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    source: str = "<defaults>"

    @property
    def stats_topic(self) -> str:
        return self.stats.topic.replace("{client_id}", self.mqtt.client_id)

    @property
    def checkpoint_path(self) -> Path:
        return Path(self.state.dir) / f"{self.mqtt.client_id}.checkpoint.npz"


_SECTION_TYPES = {
    "mqtt": MqttConfig,
    "model": ModelConfig,
    "streams": StreamsConfig,
    "state": StateConfig,
    "stats": StatsConfig,
    "logging": LoggingConfig,
    "homeassistant": HomeAssistantConfig,
    "cluster": ClusterConfig,
}


def _type_name(tp: Any) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false", Secret: "a string"}
    if tp in names:
        return names[tp]
    if typing.get_origin(tp) is tuple and dataclasses.is_dataclass(typing.get_args(tp)[0]):
        return "a list of tables (JSON objects in the environment)"
    return "a list of strings"


def _unwrap(tp: Any) -> tuple[Any, bool]:
    """(base type, optional) of ``X | None``."""
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0], True
    return tp, False


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check a TOML value against a field type (ints are fine where floats are expected)."""
    base, optional = _unwrap(tp)
    if value is None and optional:
        return None
    if base is bool:
        if isinstance(value, bool):
            return value
    elif base is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif base is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif base is str or base is Secret:
        if isinstance(value, str):
            return Secret(value) if base is Secret else value
    elif typing.get_origin(base) is tuple and dataclasses.is_dataclass(item := typing.get_args(base)[0]):
        if isinstance(value, list):
            return tuple(_table(item, v, f"{where}[{i}]") for i, v in enumerate(value))  # type: ignore[arg-type]
    elif typing.get_origin(base) is tuple:
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(value)
    shown = "***" if base is Secret else json.dumps(value, default=str)[:60]
    raise ConfigError(f"{where}: expected {_type_name(base)}, got {shown}")


def _table(cls: type, value: Any, where: str) -> Any:
    """One TOML table of a list of tables (``[[section.key]]``) as the dataclass ``cls``."""
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a table, got {json.dumps(value, default=str)[:60]}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in value:
        if key not in fields:
            raise ConfigError(f"{where}: unknown key {key!r}; a table takes {', '.join(fields)}")
    required = [n for n, f in fields.items() if f.default is dataclasses.MISSING and n not in value]
    if required:
        raise ConfigError(f"{where}: missing {required[0]!r}")
    return cls(**{key: _coerce(v, hints[key], f"{where}.{key}") for key, v in value.items()})


def _from_env(raw: str, tp: Any, where: str) -> Any:
    """Parse an environment value by the field's type (lists: JSON or comma separated; '' means unset)."""
    base, optional = _unwrap(tp)
    if optional and raw == "":
        return None
    try:
        if base is bool:
            lowered = raw.strip().lower()
            if lowered not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                raise ValueError(raw)
            return lowered in ("1", "true", "yes", "on")
        if base is int:
            return int(raw)
        if base is float:
            return float(raw)
        if typing.get_origin(base) is tuple and dataclasses.is_dataclass(typing.get_args(base)[0]):
            return _coerce(json.loads(raw), tp, where) if raw.strip() else ()  # a JSON list of objects
        if typing.get_origin(base) is tuple:
            if raw.lstrip().startswith("["):
                return _coerce(json.loads(raw), tp, where)
            return tuple(p.strip() for p in raw.split(",") if p.strip())
    except ValueError:
        shown = "***" if base is Secret else repr(raw[:60])
        raise ConfigError(f"{where}: expected {_type_name(base)}, got {shown}") from None
    return Secret(raw) if base is Secret else raw


def _check(cond: bool, where: str, message: str) -> None:
    if not cond:
        raise ConfigError(f"{where}: {message}")


def _validate(cfg: Config, source: str) -> None:
    m, s, st = cfg.mqtt, cfg.streams, cfg.state

    def at(key: str) -> str:
        return f"{source}: {key}"

    _check(bool(m.host), at("mqtt.host"), "must not be empty")
    _check(1 <= m.port <= 65535, at("mqtt.port"), f"{m.port} is not a TCP port (1-65535)")
    _check(
        bool(m.client_id) and not any(c in m.client_id for c in "+#/"),
        at("mqtt.client_id"),
        f"{m.client_id!r} must be non-empty and free of '+', '#' and '/' (it names the status topic)",
    )
    _check(m.protocol in PROTOCOLS, at("mqtt.protocol"), f'{m.protocol!r}: choose "5" or "3.1.1"')
    _check(5 <= m.keepalive_s <= 65535, at("mqtt.keepalive_s"), "must be between 5 and 65535 seconds")
    _check(m.qos in (0, 1, 2), at("mqtt.qos"), "must be 0, 1 or 2")
    _check(m.session_expiry_s >= 0, at("mqtt.session_expiry_s"), "must be >= 0")
    _check(0 < m.reconnect_min_s <= m.reconnect_max_s, at("mqtt.reconnect_min_s"), "must be > 0 and <= reconnect_max_s")
    _check(m.max_queued_out >= 1, at("mqtt.max_queued_out"), "must be >= 1")
    _check(1 <= m.max_inflight <= 65535, at("mqtt.max_inflight"), "must be between 1 and 65535")
    _check(not (m.password and m.password_file), at("mqtt.password_file"), "set password or password_file, not both")
    _check(
        not (m.tls_cert and not m.tls_key) and not (m.tls_key and not m.tls_cert),
        at("mqtt.tls_cert"),
        "tls_cert and tls_key go together",
    )
    for key in ("tls_ca", "tls_cert", "tls_key"):
        path = getattr(m, key)
        if path is not None:
            _check(Path(path).is_file(), at(f"mqtt.{key}"), f"{path} is not a readable file")
    _check(
        cfg.model.backend in BACKEND_CHOICES,
        at("model.backend"),
        f"{cfg.model.backend!r}: choose one of {', '.join(BACKEND_CHOICES)}",
    )
    _check(bool(cfg.model.path), at("model.path"), "must name a bundle directory")
    _check(
        cfg.model.adaptation in ADAPTATION_CHOICES,
        at("model.adaptation"),
        f"{cfg.model.adaptation!r}: choose one of {', '.join(ADAPTATION_CHOICES)}",
    )
    try:
        TopicMap(s.input)
    except ValueError as exc:
        raise ConfigError(at(f"streams.input: {exc}")) from None
    if s.pack_input:
        try:
            TopicMap(s.pack_input)
        except ValueError as exc:
            raise ConfigError(at(f"streams.pack_input: {exc}")) from None
    try:
        InputTopics(s.input, s.pack_input, s.senml_input)
    except ValueError as exc:
        raise ConfigError(at(f"streams.senml_input: {exc}")) from None
    _check(
        not (cfg.cluster.enabled and (s.pack_input or s.senml_input)),
        at("streams.pack_input"),
        "packs (pack_input, senml_input) are read by a single daemon, not by a cluster member; "
        "send one reading per message to a cluster",
    )
    try:
        validate_output_template(s.output)
    except ValueError as exc:
        raise ConfigError(at(f"streams.output: {exc}")) from None
    _check(s.output_qos in (0, 1, 2), at("streams.output_qos"), "must be 0, 1 or 2")
    _check(s.max_streams >= 1, at("streams.max_streams"), "must be >= 1")
    _check(s.idle_timeout_s is None or s.idle_timeout_s > 0, at("streams.idle_timeout_s"), "must be > 0")
    _check(s.queue_size >= 1, at("streams.queue_size"), "must be >= 1")
    _check(
        s.queue_policy in QUEUE_POLICIES,
        at("streams.queue_policy"),
        f'{s.queue_policy!r}: choose "drop_oldest" or "drop_newest"',
    )
    _check(s.batch_size >= 1, at("streams.batch_size"), "must be >= 1")
    _check(s.max_payload_bytes >= 16, at("streams.max_payload_bytes"), "must be >= 16")
    _check(
        math.isfinite(s.max_abs_value) and s.max_abs_value > 0,
        at("streams.max_abs_value"),
        "must be a finite number > 0 (readings beyond it in magnitude are dropped as out_of_range)",
    )
    _check(
        1 <= s.max_id_bytes <= 65_535,
        at("streams.max_id_bytes"),
        "must be between 1 and 65535 (stream ids longer in UTF-8 bytes are dropped as id_too_long)",
    )
    _check(bool(st.dir), at("state.dir"), "must name a directory")
    _check(st.checkpoint_interval_s > 0, at("state.checkpoint_interval_s"), "must be > 0")
    _check(cfg.stats.interval_s >= 0, at("stats.interval_s"), "must be >= 0 (0 turns the stats topic off)")
    _check(
        cfg.logging.level in LEVELS, at("logging.level"), f"{cfg.logging.level!r}: choose one of {', '.join(LEVELS)}"
    )
    _check(cfg.logging.format in ("logfmt", "json"), at("logging.format"), 'choose "logfmt" or "json"')
    for i, entry in enumerate(cfg.homeassistant.streams):
        _check(bool(entry.match), at(f"homeassistant.streams[{i}].match"), 'must be a pattern, e.g. "*_temperature"')
    if cfg.cluster.enabled:
        _validate_cluster(cfg, at)


def _validate_cluster(cfg: Config, at: typing.Callable[[str], str]) -> None:
    c = cfg.cluster
    name_ok = re.compile(r"^[A-Za-z0-9_-]+$").match
    _check(bool(c.servers), at("cluster.servers"), 'list at least one NATS URL, e.g. ["nats://10.0.0.1:4222"]')
    _check(1 <= c.partitions <= 4096, at("cluster.partitions"), "must be between 1 and 4096")
    for key in ("subject_prefix", "input_stream", "output_stream", "bucket"):
        value = getattr(c, key)
        _check(bool(name_ok(value)), at(f"cluster.{key}"), f"{value!r}: use letters, digits, '-' and '_' only")
    member = c.member_id if c.member_id is not None else cfg.mqtt.client_id
    _check(bool(name_ok(member)), at("cluster.member_id"), f"{member!r}: use letters, digits, '-' and '_' only")
    _check(1 <= c.replicas <= 5, at("cluster.replicas"), "must be between 1 and 5 (JetStream replicas)")
    _check(c.heartbeat_s > 0, at("cluster.heartbeat_s"), "must be > 0")
    _check(
        c.lease_ttl_s >= 3 * c.heartbeat_s,
        at("cluster.lease_ttl_s"),
        "must be >= 3 x heartbeat_s, or a busy member loses its partitions between two renewals",
    )
    _check(
        c.duplicate_window_s > cfg.state.checkpoint_interval_s + c.lease_ttl_s,
        at("cluster.duplicate_window_s"),
        "must exceed state.checkpoint_interval_s + cluster.lease_ttl_s: a survivor replays up to that "
        "much, and only forecasts inside the window are recognised as already published",
    )
    _check(c.retention_s > c.duplicate_window_s, at("cluster.retention_s"), "must exceed duplicate_window_s")
    _check(
        c.output_retention_s >= c.duplicate_window_s,
        at("cluster.output_retention_s"),
        "must be >= duplicate_window_s (JetStream keeps no duplicate window longer than the stream's max age)",
    )
    _check(1 <= c.fetch_batch <= cfg.streams.queue_size, at("cluster.fetch_batch"), "must be 1..streams.queue_size")
    _check(
        not cfg.homeassistant.enabled,
        at("homeassistant.enabled"),
        "Home Assistant discovery is per MQTT daemon; cluster members do not announce sensors (turn one off)",
    )
    for template in cfg.streams.input:
        _check(
            not template.startswith("$share/"),
            at("cluster.enabled"),
            f"streams.input {template!r}: the cluster partitions streams itself; drop the $share/ prefix",
        )


def load_config(path: str | os.PathLike[str] | None, *, environ: typing.Mapping[str, str] | None = None) -> Config:
    """Read, override from the environment, and validate; every problem raises :class:`ConfigError`."""
    environ = os.environ if environ is None else environ
    source = str(path) if path is not None else "<defaults>"
    data: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"{source}: no such config file") from None
        except OSError as exc:
            raise ConfigError(f"{source}: cannot read ({exc.strerror})") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{source}: not valid TOML ({exc})") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{source}: not valid TOML (not UTF-8 at byte {exc.start}; save it as UTF-8)") from None
    unknown = [k for k in data if k not in _SECTION_TYPES]
    if unknown:
        raise ConfigError(f"{source}: unknown section [{unknown[0]}]; sections are {', '.join(_SECTION_TYPES)}")
    sections: dict[str, Any] = {}
    for name, cls in _SECTION_TYPES.items():
        table = data.get(name, {})
        if not isinstance(table, dict):
            raise ConfigError(f"{source}: {name} must be a table ([{name}])")
        hints = typing.get_type_hints(cls)
        known = {f.name for f in dataclasses.fields(cls)}
        for key in table:
            if key not in known:
                raise ConfigError(f"{source}: unknown key {name}.{key}; [{name}] takes {', '.join(sorted(known))}")
        kwargs = {key: _coerce(value, hints[key], f"{source}: {name}.{key}") for key, value in table.items()}
        for key in known:
            var = f"{ENV_PREFIX}{name.upper()}_{key.upper()}"
            if var in environ:
                kwargs[key] = _from_env(environ[var], hints[key], f"environment {var} ({name}.{key})")
        sections[name] = cls(**kwargs)
    cfg = Config(**sections, source=source)
    _validate(cfg, source)
    if path is not None and _file_holds_password(data) and _world_readable(path):
        event(
            log,
            logging.WARNING,
            "config_world_readable",
            file=source,
            detail="the file holds mqtt.password and is readable by every user; chmod 600 it, or use "
            "EDGE_GRU_MQTT_PASSWORD or mqtt.password_file",
        )
    return cfg


def _file_holds_password(data: dict[str, Any]) -> bool:
    mqtt = data.get("mqtt")
    return isinstance(mqtt, dict) and bool(mqtt.get("password"))


def _world_readable(path: str | os.PathLike[str]) -> bool:
    try:
        return bool(os.stat(path).st_mode & stat.S_IROTH)
    except OSError:
        return False


def describe(cfg: Config) -> dict[str, Any]:
    """The effective configuration as a dict for logs and ``--check``, secrets redacted."""
    out: dict[str, Any] = {}
    for name in _SECTION_TYPES:
        section = dataclasses.asdict(getattr(cfg, name))
        if name == "mqtt" and section.get("password"):
            section["password"] = "***"
        out[name] = {k: list(v) if isinstance(v, tuple) else v for k, v in section.items()}
    return out


def adaptation_spec(model_cfg: ModelConfig, extra: dict[str, Any]) -> AdaptationSpec:
    """What ``[model] adaptation`` and ``hold_out_anomalies`` make of the bundle's ``adaptation`` setting."""
    return resolve_spec(extra, model_cfg.adaptation, hold_out=True if model_cfg.hold_out_anomalies else None)
