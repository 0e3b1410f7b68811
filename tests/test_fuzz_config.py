"""Fuzzing the daemon's config loader: any TOML gives a valid Config or a ConfigError naming the key.

Random documents are built over the real schema (every section and key of
``edge_gru.daemon.config``, plus unknown ones) with values of the right type, the wrong
type, out of range, NaN/inf, nested tables, dates and odd strings. The loader must never
raise anything but :class:`ConfigError`, its message must name the file and the
offending ``section.key``, and every accepted value must be the one in the file.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import typing
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from edge_gru.backends import BACKEND_CHOICES
from edge_gru.daemon import config as config_module
from edge_gru.daemon.config import ENV_PREFIX, load_config
from edge_gru.errors import ConfigError

SECTIONS: dict[str, type] = config_module._SECTION_TYPES
SCHEMA: dict[str, dict[str, Any]] = {name: typing.get_type_hints(cls) for name, cls in SECTIONS.items()}
FUZZ = settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def toml_string(text: str) -> str:
    out = json.dumps(text, ensure_ascii=False)
    return out.replace("\x7f", "\\u007f")


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_string(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(value)


def toml_document(doc: dict[str, Any]) -> str:
    lines = []
    for key, value in doc.items():
        if isinstance(value, dict):
            lines.append(f"[{toml_string(key)}]")
            lines += [f"{toml_string(k)} = {toml_value(v)}" for k, v in value.items()]
        else:
            lines.insert(0, f"{toml_string(key)} = {toml_value(value)}")
    return "\n".join(lines) + "\n"


i64 = st.integers(-(2**63), 2**63 - 1)
text = st.text(st.characters(codec="utf-8"), max_size=30)
scalar = st.one_of(
    st.booleans(),
    i64,
    st.floats(),
    text,
    st.datetimes(timezones=st.just(dt.UTC)),
    st.dates(),
)
anything = st.recursive(
    scalar, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=2), max_leaves=6
)
GOOD: dict[str, list[Any]] = {
    "protocol": ["5", "3.1.1"],
    "backend": list(BACKEND_CHOICES),
    "queue_policy": ["drop_oldest", "drop_newest"],
    "level": ["debug", "info", "warning", "error"],
    "format": ["logfmt", "json"],
    "input": [["sensors/{stream}/value"], ["a/{stream}", "b/{stream}/c"], "x/{stream}"],
    "output": ["predictions/{stream}", "p/{stream}/f"],
    "host": ["127.0.0.1", "broker.lan"],
    "port": [1, 1883, 65535],
    "client_id": ["node1", "edge-gru-ü"],
}


def typed(tp: Any) -> st.SearchStrategy[Any]:
    """Values of the field's own type (often out of range): what a careless edit produces."""
    base, _ = config_module._unwrap(tp)
    if base is bool:
        return st.booleans()
    if base is int:
        return st.one_of(st.integers(-5, 70_000), i64)
    if base is float:
        return st.one_of(st.floats(), st.integers(-10, 10**6))
    if base is str or base is config_module.Secret:
        return text
    return st.one_of(text, st.lists(text, max_size=3))


@st.composite
def documents(draw: st.DrawFn) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    for section in draw(st.lists(st.sampled_from([*SCHEMA, "mqtt", "streams"]), max_size=4, unique=True)):
        hints = SCHEMA[section]
        keys = draw(st.lists(st.sampled_from(sorted(hints)), max_size=4, unique=True))
        table: dict[str, Any] = {}
        for key in keys:
            choices = [typed(hints[key]), anything]
            if key in GOOD:
                choices.insert(0, st.sampled_from(GOOD[key]))
            table[key] = draw(st.one_of(*choices))
        doc[section] = table
    if draw(st.integers(0, 9)) == 0:
        section = draw(st.sampled_from([*SCHEMA, "extra"]))
        doc.setdefault(section, {})[draw(st.text(min_size=1, max_size=8))] = draw(scalar)
    if draw(st.integers(0, 14)) == 0:
        doc[draw(st.text(min_size=1, max_size=8))] = draw(st.one_of(scalar, st.just({"k": 1})))
    return doc


def expected_value(value: Any, tp: Any) -> Any:
    base, _ = config_module._unwrap(tp)
    if base is float:
        return float(value)
    if typing.get_origin(base) is tuple:
        return (value,) if isinstance(value, str) else tuple(value)
    return value


def names_a_key(message: str, doc: dict[str, Any]) -> bool:
    """The error names ``section.key`` of a section in the document, the section itself, or TOML syntax."""
    for section in doc:
        if f"{section}." in message or f"[{section}]" in message or f"{section} must be a table" in message:
            return True
    return any(f"{section}." in message for section in SCHEMA) or "not valid TOML" in message


@FUZZ
@given(doc=documents())
@example(doc={"mqtt": {"port": 2**63 - 1}})
@example(doc={"streams": {"idle_timeout_s": math.nan}})
@example(doc={"state": {"checkpoint_interval_s": math.inf}})
@example(doc={"state": {"dir": "\x00"}})
@example(doc={"mqtt": {"tls_ca": "\x00"}})
@example(doc={"mqtt": {"password": 12345}})
@example(doc={"mqtt": "flat"})
@example(doc={"streams": {"input": []}})
@example(doc={"streams": {"input": [1, 2]}})
@example(doc={"stats": {"interval_s": -math.inf}})
@example(doc={"logging": {"warn_interval_s": math.nan}})
def test_any_document_loads_or_names_the_key(tmp_path: Path, doc: dict[str, Any]) -> None:
    path = tmp_path / "edge-gru.toml"
    path.write_text(toml_document(doc), encoding="utf-8")
    try:
        cfg = load_config(path, environ={})
    except ConfigError as exc:
        message = str(exc)
        assert str(path) in message, message
        assert names_a_key(message, doc), (message, doc)
        secret = doc["mqtt"].get("password") if isinstance(doc.get("mqtt"), dict) else None
        if isinstance(secret, str) and len(secret) >= 4 and path.read_text().count(secret) == 1:
            assert secret not in message  # a secret is never echoed back
        return
    for section, table in doc.items():
        for key, value in table.items():
            got = getattr(getattr(cfg, section), key)
            want = expected_value(value, SCHEMA[section][key])
            if isinstance(want, float) and math.isnan(want):
                assert math.isnan(got)
            else:
                assert got == want, (section, key, got, want)


@FUZZ
@given(raw=st.binary(max_size=200))
@example(raw=b"[mqtt]\nport = 1883\nport = 1884\n")
@example(raw=b"\xff\xfe[mqtt]")
@example(raw=b"[mqtt\n")
@example(raw=b"mqtt = 1\n")
@example(raw=b"[[mqtt]]\nport = 1\n")
@example(raw=b"[mqtt.sub]\nx = 1\n")
def test_any_bytes_load_or_fail_with_a_config_error(tmp_path: Path, raw: bytes) -> None:
    path = tmp_path / "edge-gru.toml"
    path.write_bytes(raw)
    try:
        load_config(path, environ={})
    except ConfigError as exc:
        assert str(path) in str(exc)


env_keys = [(s, k) for s, hints in SCHEMA.items() for k in hints]


env_text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=20)


@FUZZ
@given(overrides=st.dictionaries(st.sampled_from(env_keys), env_text, max_size=3))
@example(overrides={("mqtt", "port"): "99999"})
@example(overrides={("streams", "input"): "[1]"})
@example(overrides={("streams", "input"): "[not json"})
@example(overrides={("streams", "idle_timeout_s"): ""})
@example(overrides={("mqtt", "tls"): "maybe"})
def test_environment_overrides_load_or_name_the_variable(overrides: dict[tuple[str, str], str]) -> None:
    environ = {f"{ENV_PREFIX}{s.upper()}_{k.upper()}": v for (s, k), v in overrides.items()}
    try:
        cfg = load_config(None, environ=environ)
    except ConfigError as exc:
        message = str(exc)
        named = [var for var in environ if var in message] + [s for s, _ in overrides if f"{s}." in message]
        assert named, message
        for (_s, k), v in overrides.items():
            if k == "password" and len(v) >= 4 and list(overrides.values()).count(v) == 1:
                assert v not in message
        return
    for (s, k), v in overrides.items():
        base, optional = config_module._unwrap(SCHEMA[s][k])
        if base is str or base is config_module.Secret:
            assert getattr(getattr(cfg, s), k) == (None if optional and v == "" else v)  # '' unsets


def test_errors_name_the_key_for_every_field_given_the_wrong_type(tmp_path: Path) -> None:
    """Exhaustive over the schema: a table where a scalar belongs is refused with ``section.key``."""
    path = tmp_path / "c.toml"
    for section, hints in SCHEMA.items():
        for key in hints:
            path.write_text(f"[{section}]\n{key} = {{ nested = 1 }}\n")
            with pytest.raises(ConfigError) as err:
                load_config(path, environ={})
            assert f"{section}.{key}" in str(err.value), str(err.value)
