"""Who the daemon is to the broker: TLS (private CA, client certificate), username/password, a unique client id."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

import edge_gru
from edge_gru.daemon.config import load_config
from edge_gru.daemon.logs import LogfmtFormatter
from edge_gru.daemon.service import Service
from edge_gru.harness import Broker, free_port
from tests.conftest import DEFAULT_MODEL

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(not shutil.which("openssl") or not shutil.which("mosquitto_passwd"), reason="needs openssl"),
]
PASSWORD = "correct-horse-battery"


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Broker, int, Path]]:
    d = tmp_path_factory.mktemp("tls")
    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=edge-gru test CA",
        cwd=d,
    )
    for name, ext in (
        ("server", "subjectAltName=IP:127.0.0.1,DNS:localhost"),
        ("client", "extendedKeyUsage=clientAuth"),
    ):
        openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            "-subj",
            f"/CN={name}",
            cwd=d,
        )
        (d / f"{name}.ext").write_text(ext + "\n")
        openssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            f"{name}.crt",
            "-days",
            "2",
            "-extfile",
            f"{name}.ext",
            cwd=d,
        )
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(d / "passwd"), "edge", PASSWORD], check=True, timeout=30)
    tls_port = free_port()
    broker = Broker(
        d / "mosquitto",
        extra_config=(
            # security settings are global here: the plain listener stays open for the test client,
            # and a client that presents a user name must present its password
            f"password_file {d / 'passwd'}\n"
            f"listener {tls_port} 127.0.0.1\n"
            f"cafile {d / 'ca.crt'}\ncertfile {d / 'server.crt'}\nkeyfile {d / 'server.key'}\n"
            "require_certificate true\n"
        ),
    ).start()
    yield broker, tls_port, d
    broker.stop()


def rendered(caplog: pytest.LogCaptureFixture) -> str:
    """The log lines as the daemon writes them, fields included."""
    return "\n".join(LogfmtFormatter().format(r) for r in caplog.records)


def config(tmp_path: Path, port: int, certs: Path, password: str, prefix: str) -> Path:
    path = tmp_path / "tls.toml"
    path.write_text(
        f"""
[mqtt]
host = "127.0.0.1"
port = {port}
client_id = "tls-{prefix}"
username = "edge"
tls_ca = "{certs / "ca.crt"}"
tls_cert = "{certs / "client.crt"}"
tls_key = "{certs / "client.key"}"
reconnect_min_s = 0.2
reconnect_max_s = 1
[streams]
input = ["{prefix}/in/{{stream}}"]
output = "{prefix}/out/{{stream}}"
[state]
dir = "{tmp_path / "state"}"
"""
    )
    path.chmod(0o600)
    return path


def test_tls_client_certificate_and_password(
    tls_broker: tuple[Broker, int, Path], tmp_path: Path, topic_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    broker, port, certs = tls_broker
    model = edge_gru.load(DEFAULT_MODEL, backend="numpy")
    cfg = load_config(
        config(tmp_path, port, certs, PASSWORD, topic_prefix), environ={"EDGE_GRU_MQTT_PASSWORD": PASSWORD}
    )
    got: list[dict] = []
    sub = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)  # plain listener, same broker
    sub.on_message = lambda c, u, m: got.append(json.loads(m.payload))
    sub.connect(broker.host, broker.port)
    sub.subscribe(f"{topic_prefix}/out/+", qos=1)
    sub.loop_start()
    service = Service(cfg, model=model)
    with caplog.at_level(logging.DEBUG, logger="edge_gru"):
        service.start()
        try:
            assert service.mqtt.ready.wait(20), service.mqtt.last_error
            for t in range(15):
                sub.publish(f"{topic_prefix}/in/k", json.dumps({"value": 20 + t % 4, "ts": t}), qos=1)
            deadline = time.monotonic() + 20
            while len(got) < 15 - model.manifest.warmup + 1 and time.monotonic() < deadline:
                time.sleep(0.05)
            ref = model.pool(1).update(["k"] * 15, [20 + t % 4 for t in range(15)], list(range(15)))
            assert [d["value"] for d in got] == [float(v) for v in ref[model.manifest.warmup - 1 :]]
        finally:
            service.shutdown()
            sub.loop_stop()
    lines = rendered(caplog)
    assert PASSWORD not in lines and "tls=true" in lines and "event=mqtt_subscribed" in lines


def test_wrong_password_is_refused_clearly_and_retried(
    tls_broker: tuple[Broker, int, Path], tmp_path: Path, topic_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    _, port, certs = tls_broker
    cfg = load_config(config(tmp_path, port, certs, "", topic_prefix), environ={"EDGE_GRU_MQTT_PASSWORD": "wrong-pw-1"})
    service = Service(cfg, model=edge_gru.load(DEFAULT_MODEL, backend="numpy"))
    with caplog.at_level(logging.INFO, logger="edge_gru"):
        service.start()
        try:
            deadline = time.monotonic() + 20
            while caplog.text.count("mqtt_connect_refused") < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert caplog.text.count("mqtt_connect_refused") >= 2  # refused, and tried again
            assert not service.mqtt.ready.is_set()
            assert threading.active_count() >= 2  # still running: a password fixed by the broker admin is picked up
        finally:
            service.shutdown(timeout=2)
    assert "wrong-pw-1" not in rendered(caplog)
    refused = [r for r in caplog.records if r.getMessage() == "mqtt_connect_refused"]
    assert "password" in refused[0].fields["hint"]  # type: ignore[attr-defined]


def test_a_second_client_with_the_same_id_is_named_in_the_log(
    tls_broker: tuple[Broker, int, Path], tmp_path: Path, topic_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Two clients with one client_id take the session from each other forever; the log must say why."""
    broker, _, _ = tls_broker
    path = tmp_path / "dup.toml"
    path.write_text(
        f"[mqtt]\nhost = '{broker.host}'\nport = {broker.port}\nclient_id = 'dup-{topic_prefix}'\n"
        f"reconnect_min_s = 0.2\nreconnect_max_s = 0.5\n[state]\ndir = '{tmp_path}'\n"
    )
    service = Service(load_config(path, environ={}), model=edge_gru.load(DEFAULT_MODEL, backend="numpy"))
    intruder = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"dup-{topic_prefix}", protocol=mqtt.MQTTv5)
    intruder.reconnect_delay_set(0.2, 0.5)  # type: ignore[arg-type]
    with caplog.at_level(logging.INFO, logger="edge_gru"):
        service.start()
        try:
            assert service.mqtt.ready.wait(20)
            intruder.connect(broker.host, broker.port)
            intruder.loop_start()

            def hinted() -> list[logging.LogRecord]:
                return [r for r in caplog.records if "hint" in getattr(r, "fields", {})]

            deadline = time.monotonic() + 20
            while not hinted() and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            intruder.loop_stop()
            intruder.disconnect()
            service.shutdown(timeout=2)
    assert hinted() and "client_id" in hinted()[0].fields["hint"]  # type: ignore[attr-defined]


@pytest.mark.parametrize("case", ["wrong_ca", "nothing_listens"])
def test_connect_failures_say_why(
    tls_broker: tuple[Broker, int, Path], tmp_path: Path, topic_prefix: str, caplog: pytest.LogCaptureFixture, case: str
) -> None:
    _, port, certs = tls_broker
    path = config(tmp_path, free_port() if case == "nothing_listens" else port, certs, "", topic_prefix)
    text = path.read_text()
    if case == "wrong_ca":
        text = text.replace(str(certs / "ca.crt"), str(certs / "client.crt"))  # not the CA that signed the broker
    path.write_text(text)
    service = Service(
        load_config(path, environ={"EDGE_GRU_MQTT_PASSWORD": PASSWORD}),
        model=edge_gru.load(DEFAULT_MODEL, backend="numpy"),
    )
    with caplog.at_level(logging.INFO, logger="edge_gru"):
        service.start()
        try:
            deadline = time.monotonic() + 15
            while service.mqtt.failed_attempts < 3 and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            service.shutdown(timeout=2)
    failed = [r for r in caplog.records if r.getMessage() == "mqtt_connect_failed"]
    # One warning per attempt while the back-off grows (0.2, 0.4, 0.8, 1 s), then none until a minute has passed.
    assert service.mqtt.failed_attempts >= 3 and len(failed) == min(service.mqtt.failed_attempts, 4)
    assert [r.fields["retry_in_s"] for r in failed] == [0.2, 0.4, 0.8, 1.0][: len(failed)]  # type: ignore[attr-defined]
    fields = failed[0].fields  # type: ignore[attr-defined]
    if case == "wrong_ca":
        assert "SSLCertVerificationError" in fields["reason"] and "tls_ca" in fields["hint"]
    else:
        assert "ConnectionRefusedError" in fields["reason"] and "mqtt.port" in fields["hint"]
