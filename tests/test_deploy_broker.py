"""The shipped broker security (deploy/mosquitto/): TLS, passwords and the ACL, with the daemon on top.

A real mosquitto runs deploy/mosquitto/edge-gru.conf and edge-gru.acl unchanged except for
paths and ports, with certificates from deploy/mosquitto/make-certs.sh.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge_gru.harness import Daemon, wait_until
from tests.deploy_support import MOSQUITTO, DeployBroker, make_certs, write_passwords

pytestmark = pytest.mark.timeout(180)

NODE = "edge-gru-node1"  # the client_id that the shipped ACL names
PASSWORDS = {
    "edge-gru": "daemon-secret",
    "dashboard": "dash-secret",
    "boiler": "boiler-secret",
    "kettle": "kettle-secret",
    "auditor": "audit-secret",
}


@dataclass
class SecureBroker:
    broker: DeployBroker
    certs: Path
    other_certs: Path  # a CA the broker does not use

    @property
    def port(self) -> int:
        return self.broker.port


def _mosquitto_user() -> tuple[int, int] | None:
    """(uid, gid) of the account a root-started mosquitto drops to, when we are root and it exists."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam("mosquitto")
    except KeyError:
        return None
    return entry.pw_uid, entry.pw_gid


@pytest.fixture(scope="module")
def secure() -> Iterator[SecureBroker]:
    # As deploy/mosquitto/README.md sets it up: when we are root, mosquitto drops to its own
    # user before reading the key and the password file, so the README's ownership must work.
    # (Outside pytest's 0700 temp root, which that user could not enter.)
    work = Path(tempfile.mkdtemp(prefix="edge-gru-broker-"))
    work.chmod(0o755)
    account = _mosquitto_user()
    certs, other = work / "certs", work / "other-ca"
    owner = ("--owner", "mosquitto") if account else ()
    make_certs(certs, "--host", "localhost", "--ip", "127.0.0.1", "--client", "boiler", *owner)
    make_certs(other, "--host", "localhost", "--ip", "127.0.0.1")
    passwd = work / "passwd"
    write_passwords(passwd, PASSWORDS)
    # The shipped ACL, plus one test-only user that may read everything, to watch what gets through.
    acl = work / "acl"
    acl.write_text((MOSQUITTO / "edge-gru.acl").read_text() + "\nuser auditor\ntopic read #\n")
    broker = DeployBroker(work / "mosquitto", certs=certs, passwd=passwd, acl=acl, as_root=False)
    if account:
        os.chown(passwd, 0, account[1])  # root:mosquitto 0640, as the README says
        passwd.chmod(0o640)
        os.chown(broker.workdir, *account)  # its persistence directory and log
    broker.start()
    yield SecureBroker(broker, certs, other)
    broker.stop()
    shutil.rmtree(work, ignore_errors=True)


class Client:
    """A paho MQTT 5 client over TLS that records what it receives and the acks it gets."""

    def __init__(self, port: int, *, user: str | None, ca: Path | None, tls: bool = True, name: str = "") -> None:
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"test-{name or user}", protocol=mqtt.MQTTv5)
        if user is not None:
            self.c.username_pw_set(user, PASSWORDS.get(user, "wrong"))
        if tls:
            self.c.tls_set(ca_certs=str(ca) if ca else None, cert_reqs=ssl.CERT_REQUIRED)
        self.port = port
        self.messages: list[tuple[str, bytes]] = []
        self.lock = threading.Lock()
        self.connect_rc: object = None
        self.connected = threading.Event()
        self.puback: dict[int, int] = {}
        self.c.on_connect = self._on_connect
        self.c.on_message = self._on_message
        self.c.on_publish = self._on_publish

    def _on_connect(self, client, userdata, flags, rc, props):  # type: ignore[no-untyped-def]
        self.connect_rc = rc
        self.connected.set()

    def _on_message(self, client, userdata, msg):  # type: ignore[no-untyped-def]
        with self.lock:
            self.messages.append((msg.topic, bytes(msg.payload)))

    def _on_publish(self, client, userdata, mid, rc, props):  # type: ignore[no-untyped-def]
        self.puback[mid] = int(rc.value)

    def connect(self, timeout: float = 10.0) -> Client:
        self.c.connect("localhost", self.port)
        self.c.loop_start()
        assert self.connected.wait(timeout), "no CONNACK"
        return self

    def subscribe(self, topic: str) -> None:
        done = threading.Event()
        self.c.on_subscribe = lambda *a: done.set()
        self.c.subscribe(topic, qos=1)
        assert done.wait(10), f"no SUBACK for {topic}"

    def received(self, topic_prefix: str = "") -> list[tuple[str, bytes]]:
        with self.lock:
            return [m for m in self.messages if m[0].startswith(topic_prefix)]

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def test_tls_with_a_password_is_the_only_way_in(secure: SecureBroker) -> None:
    ca = secure.certs / "ca.crt"
    ok = Client(secure.port, user="dashboard", ca=ca).connect()
    assert not ok.connect_rc.is_failure  # type: ignore[attr-defined]
    ok.close()

    for user, why in ((None, "anonymous"), ("dashboard-typo", "unknown user")):
        c = Client(secure.port, user=user, ca=ca, name=why.replace(" ", "-")).connect()
        assert c.connect_rc.is_failure, f"{why} login was accepted"  # type: ignore[attr-defined]
        c.close()
    wrong = Client(secure.port, user="dashboard", ca=ca, name="wrong-password")
    wrong.c.username_pw_set("dashboard", "not-the-password")
    wrong.connect()
    assert wrong.connect_rc.is_failure  # type: ignore[attr-defined]
    wrong.close()

    # a client that trusts another CA refuses the broker's certificate
    other = Client(secure.port, user="dashboard", ca=secure.other_certs / "ca.crt", name="other-ca")
    with pytest.raises(ssl.SSLCertVerificationError):
        other.c.connect("localhost", secure.port)
    # plain MQTT on the TLS port gets no CONNACK
    plain = Client(secure.port, user="dashboard", ca=None, tls=False, name="plain")
    plain.c.connect("127.0.0.1", secure.port)
    plain.c.loop_start()
    assert not plain.connected.wait(2.0), "the TLS listener answered plain MQTT"
    plain.c.loop_stop()
    # the loopback plain listener still wants the password
    loop = Client(secure.broker.plain_port, user=None, ca=None, tls=False, name="loopback-anon")
    loop.c.connect("127.0.0.1", secure.broker.plain_port)
    loop.c.loop_start()
    assert loop.connected.wait(10)
    assert loop.connect_rc.is_failure  # type: ignore[attr-defined]
    loop.c.loop_stop()


def test_client_certificate_from_make_certs_is_valid_for_mutual_tls(secure: SecureBroker) -> None:
    """make-certs.sh --client issues a certificate chained to the CA, for client authentication."""
    out = subprocess.run(
        ["openssl", "verify", "-purpose", "sslclient", "-CAfile", str(secure.certs / "ca.crt"),
         str(secure.certs / "client-boiler.crt")],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    server = subprocess.run(
        ["openssl", "verify", "-purpose", "sslserver", "-CAfile", str(secure.certs / "ca.crt"),
         str(secure.certs / "client-boiler.crt")],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert server.returncode != 0, "a client certificate must not be usable as a server certificate"
    assert (secure.certs / "client-boiler.key").stat().st_mode & 0o077 == 0, "private keys must be 0600"


def _daemon(tmp_path: Path, secure: SecureBroker) -> Daemon:
    """The daemon as a device runs it against this broker: TLS, its own login, the client_id the ACL names."""
    pw = tmp_path / "mqtt-password"
    pw.write_text(PASSWORDS["edge-gru"] + "\n")
    pw.chmod(0o600)
    return Daemon(
        tmp_path,
        client_id=NODE,
        sections={
            "mqtt": {
                "host": "localhost",
                "port": secure.port,
                "username": "edge-gru",
                "password_file": str(pw),
                "tls": True,
                "tls_ca": str(secure.certs / "ca.crt"),
                "reconnect_min_s": None,  # the product's defaults
                "reconnect_max_s": None,
            },
            "stats": {"interval_s": 0.5},
            "logging": {"level": None, "warn_interval_s": None},
        },
    )


def test_daemon_over_tls_and_the_acl_stops_forged_publishes(secure: SecureBroker, tmp_path: Path) -> None:
    ca = secure.certs / "ca.crt"
    auditor = Client(secure.port, user="auditor", ca=ca).connect()
    auditor.subscribe("#")
    dashboard = Client(secure.port, user="dashboard", ca=ca).connect()
    dashboard.subscribe("predictions/#")
    dashboard.subscribe(f"edge-gru/{NODE}/#")

    daemon = _daemon(tmp_path, secure).start()
    try:
        daemon.wait_for(
            lambda: (f"edge-gru/{NODE}/status", b"online") in dashboard.received(),
            60,
            "the daemon's online status over TLS",
        )

        boiler = Client(secure.port, user="boiler", ca=ca).connect()
        # Forged: another sensor's reading, a fake forecast, a fake daemon status.
        forged = [
            boiler.c.publish("sensors/kettle/value", b"99.0", qos=1),
            boiler.c.publish("predictions/boiler", b'{"stream": "boiler", "value": 1e9, "forged": true}', qos=1),
            boiler.c.publish(f"edge-gru/{NODE}/status", b"offline", qos=1, retain=True),
        ]
        t0 = 1_700_000_000.0
        readings = 25
        for i in range(readings):
            payload = json.dumps({"value": 20.0 + 0.1 * i, "ts": t0 + 60.0 * i}).encode()
            boiler.c.publish("sensors/boiler/value", payload, qos=1).wait_for_publish(10)
        for info in forged:
            info.wait_for_publish(10)
        # MQTT 5: the broker answers a denied QoS 1 publish with "Not authorized" (135).
        assert [boiler.puback.get(info.mid) for info in forged] == [135, 135, 135]

        # The allowed readings arrive, and the daemon forecasts once each stream has warmed up.
        wait_until(lambda: len(auditor.received("sensors/boiler/")) == readings, 30, "the boiler readings")
        wait_until(lambda: len(dashboard.received("predictions/boiler")) > 0, 30, "a forecast for boiler")
        forecasts = [json.loads(p) for _, p in dashboard.received("predictions/")]

        def stats() -> list[dict[str, int]]:
            return [json.loads(p) for _, p in dashboard.received(f"edge-gru/{NODE}/stats")]

        # The daemon has taken in every boiler reading; a stats period later, anything late shows up.
        wait_until(lambda: any(s["received"] >= readings for s in stats()), 30, "stats counting the readings")
        time.sleep(1.0)

        # Nothing forged got through: not to the auditor who reads everything, not to the dashboard.
        assert auditor.received("sensors/kettle") == []
        assert all(b"forged" not in p for _, p in auditor.received())
        assert (f"edge-gru/{NODE}/status", b"offline") not in auditor.received()
        assert {f["stream"] for f in forecasts} == {"boiler"}
        assert all(f["value"] < 1e6 and f["ts"] >= t0 for f in forecasts)
        # The daemon saw exactly the boiler's readings.
        assert max(s["received"] for s in stats()) == readings
        assert "kettle" not in daemon.log_text()
        boiler.close()
    finally:
        rc = daemon.stop()
        auditor.close()
        dashboard.close()
    assert rc == 0, daemon.log_text()


def test_the_daemon_is_refused_with_a_wrong_password(secure: SecureBroker, tmp_path: Path) -> None:
    daemon = _daemon(tmp_path, secure)
    (tmp_path / "mqtt-password").write_text("wrong\n")
    daemon.start()
    try:
        daemon.wait_log("mqtt_connect_refused", 60)
        assert daemon.alive(), "a refused login must not kill the daemon (it retries)"
    finally:
        daemon.stop()
    assert "hint=" in daemon.log_text()
