"""Helpers for the deployment tests: the shipped mosquitto config on free ports, systemd-analyze."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from edge_gru.harness import Broker, free_port, stay_root

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
MOSQUITTO = DEPLOY / "mosquitto"


def replace_once(text: str, old: str, new: str) -> str:
    """Replace a line or path that the shipped file must contain exactly once (else the test is stale)."""
    count = text.count(old)
    if count != 1:
        raise AssertionError(f"expected {old!r} exactly once in the shipped file, found it {count} times")
    return text.replace(old, new)


def make_certs(out: Path, *args: str) -> None:
    """Run the shipped deploy/mosquitto/make-certs.sh."""
    subprocess.run(
        ["bash", str(MOSQUITTO / "make-certs.sh"), "--out", str(out), *args],
        check=True,
        capture_output=True,
        timeout=60,
    )


def write_passwords(path: Path, users: dict[str, str]) -> None:
    """A mosquitto password file made with mosquitto_passwd, as deploy/mosquitto/README.md says."""
    first = True
    for user, password in users.items():
        flags = ["-c", "-b"] if first else ["-b"]
        subprocess.run(["mosquitto_passwd", *flags, str(path), user, password], check=True, timeout=30)
        first = False


class DeployBroker(Broker):
    """mosquitto running deploy/mosquitto/edge-gru.conf with this test's paths and free ports.

    ``port`` is the TLS listener; ``plain_port`` the loopback plain listener.
    """

    def __init__(self, workdir: Path, *, certs: Path, passwd: Path, acl: Path, as_root: bool = True) -> None:
        super().__init__(workdir)
        self.plain_port = free_port()
        self.certs, self.passwd, self.acl = certs, passwd, acl
        self.as_root = as_root

    def write_config(self) -> None:
        conf = (MOSQUITTO / "edge-gru.conf").read_text()
        conf = replace_once(conf, "\nlistener 8883\n", f"\nlistener {self.port} 127.0.0.1\n")
        conf = replace_once(conf, "\nlistener 1883 127.0.0.1\n", f"\nlistener {self.plain_port} 127.0.0.1\n")
        for key, name in (("cafile", "ca.crt"), ("certfile", "server.crt"), ("keyfile", "server.key")):
            conf = replace_once(conf, f"\n{key} /etc/mosquitto/certs/{name}\n", f"\n{key} {self.certs / name}\n")
        conf = replace_once(
            conf, "\npassword_file /etc/mosquitto/edge-gru.passwd\n", f"\npassword_file {self.passwd}\n"
        )
        conf = replace_once(conf, "\nacl_file /etc/mosquitto/edge-gru.acl\n", f"\nacl_file {self.acl}\n")
        self.config_path.write_text(
            # test-only: keep state and log in the work directory (and, if asked, stay root)
            (stay_root() if self.as_root else "")
            + f"persistence true\npersistence_location {self.workdir}/\n"
            + f"log_dest file {self.log_path}\nlog_type all\n"
            + conf
        )


def logfmt_events(text: str) -> list[str]:
    return re.findall(r"event=(\S+)", text)


def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        raise RuntimeError("systemd-analyze is missing: apt-get install -y systemd (.ci/run installs it)")
    return found


def verify_problems(unit: Path) -> list[str]:
    """Everything ``systemd-analyze verify`` reports about ``unit``: its exit status and its warnings.

    verify exits 0 on many warnings (an unknown key, a bad value), so its output counts too.
    Lines about other units on the machine (their own files, which may use system calls
    this systemd does not know) are not the unit's problem and are left out.
    """
    env = {**os.environ, "SYSTEMD_LOG_LEVEL": "notice", "SYSTEMD_LOG_COLOR": "0", "SYSTEMD_PAGER": ""}
    out = subprocess.run(
        [systemd_analyze(), "verify", "--man=no", str(unit)], capture_output=True, text=True, env=env, timeout=60
    )
    lines = [line for line in (out.stdout + out.stderr).splitlines() if line.strip()]
    foreign = ("/lib/systemd/", "/usr/lib/systemd/", "/etc/systemd/system/")
    problems = [line for line in lines if not line.startswith(foreign)]
    if out.returncode != 0:
        problems.insert(0, f"exit status {out.returncode}")
    return problems
