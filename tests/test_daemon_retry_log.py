"""With the broker unreachable, the daemon says it keeps trying and when it tries next.

``edge-gru serve`` is started against a loopback port where nothing listens. Each failed
attempt while the back-off grows is a ``mqtt_connect_failed`` line with ``attempts``,
``retry_in_s`` and ``next_retry``; the next attempt indeed comes no earlier than announced.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from edge_gru.harness import Broker, Daemon, free_port


def test_unreachable_broker_logs_each_retry_with_the_next_retry_time(tmp_path: Path) -> None:
    port = free_port()  # nothing listens here
    daemon = Daemon(
        tmp_path,
        host="127.0.0.1",
        port=port,
        sections={
            "mqtt": {"reconnect_min_s": 0.25, "reconnect_max_s": 1.0},
            "logging": {"level": "info", "format": "json"},
        },
    ).start()
    try:
        daemon.wait_log("mqtt_connect_failed", timeout=60, count=3)
        lines = [json.loads(line) for line in daemon.events("mqtt_connect_failed")[:3]]
        assert [d["attempts"] for d in lines] == [1, 2, 3]
        assert [d["retry_in_s"] for d in lines] == [0.25, 0.5, 1.0]  # doubling from reconnect_min_s to the cap
        assert all("nothing listens there" in d["hint"] for d in lines)
        announced = [datetime.fromisoformat(d["next_retry"]).timestamp() for d in lines]
        for d, at in zip(lines, announced, strict=True):
            assert abs(at - (d["ts"] + d["retry_in_s"])) < 0.05, d
        for earlier, later in zip(announced, lines[1:], strict=False):
            assert later["ts"] >= earlier - 0.01, (earlier, later)  # not before the time it announced

        # The broker comes up on that port: the daemon connects at its next retry and the back-off starts over.
        broker = Broker(tmp_path / "mosquitto", port=port).start()
        try:
            daemon.wait_ready(timeout=30)
            assert daemon.alive()
        finally:
            assert daemon.stop() == 0
            broker.stop()
    finally:
        daemon.kill()
