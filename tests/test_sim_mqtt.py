"""The simulator through a real mosquitto and a real ``edge-gru serve`` subprocess."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import edge_gru
from edge_gru.harness import DEFAULT_MODEL, Broker, Daemon, Publisher, Watcher
from sim.config import SimConfig
from sim.faults import parse_faults
from sim.mqtt import MqttTransport, daemon_process, private_broker
from sim.run import simulate


def _forecasts(result) -> dict[tuple[str, float], float]:
    o = result.report.outcome
    names = result.schedule.names
    return {(names[s], t): v for s, t, v in zip(o.stream.tolist(), o.ts.tolist(), o.value.tolist(), strict=True)}


def _in_process(cfg: SimConfig):
    return simulate(cfg, model=edge_gru.load(DEFAULT_MODEL, backend="numpy"))


def _numpy_daemon(tmp_path: Path, broker: Broker, inputs: str, output: str, **kw: Any) -> Daemon:
    """A daemon subprocess on the fixture broker serving the default bundle with the numpy backend."""
    return daemon_process(
        tmp_path,
        host=broker.host,
        port=broker.port,
        model=str(DEFAULT_MODEL),
        backend="numpy",
        inputs=inputs,
        output=output,
        **kw,
    )


def test_the_spawned_broker_keeps_persistent_sessions_across_a_restart(tmp_path: Path) -> None:
    """``--faults broker_restart=N`` relies on it: QoS 1 readings queued for an absent subscriber survive."""
    broker = private_broker(tmp_path / "mosquitto").start()
    try:
        away = Watcher(broker.host, broker.port, ["keep/#"], client_id="keeps-session", clean_session=False)
        away.close()
        pub = Publisher(broker.host, broker.port)
        pub.publish_all([("keep/x", b"%d" % i) for i in range(5)])
        pub.close()
        broker.restart()  # SIGTERM: mosquitto writes its sessions out
        back = Watcher(broker.host, broker.port, ["keep/#"], client_id="keeps-session", clean_session=False)
        try:
            back.wait_for(lambda: len(back.on("keep/#")) >= 5, 10, "the queued messages after the restart")
            assert back.on("keep/#") == [b"%d" % i for i in range(5)]
        finally:
            back.close()
    finally:
        broker.stop()


def test_running_daemon_through_the_fixture_broker_matches_in_process(
    broker: Broker, topic_prefix: str, tmp_path: Path
) -> None:
    inputs, output = f"{topic_prefix}/sensors/{{stream}}/value", f"{topic_prefix}/forecast/{{stream}}"
    daemon = _numpy_daemon(tmp_path, broker, inputs, output)
    daemon.start()
    try:
        common: dict[str, Any] = dict(
            streams=4,
            duration_s=12 * 3600,
            seed=21,
            faults=parse_faults("all,nan=0.01,garbage=0.01"),
            backend="numpy",
            model=str(DEFAULT_MODEL),
            input_template=inputs,
            output_template=output,
        )
        over_mqtt = simulate(SimConfig(broker=broker.url, daemon_id=daemon.client_id, **common))
    finally:
        assert daemon.stop() == 0
    local = _in_process(SimConfig(**common))
    a, b = _forecasts(over_mqtt), _forecasts(local)
    assert len(b) > 400 and a.keys() == b.keys()
    # float32 GEMMs over batches of other sizes round differently in the last bits (~1e-8 relative)
    np.testing.assert_allclose([a[k] for k in b], [b[k] for k in b], rtol=1e-6)
    ra, rb = over_mqtt.report.to_json(), local.report.to_json()
    assert ra["total"]["n"] == rb["total"]["n"]
    assert ra["total"]["mae_ratio"] == pytest.approx(rb["total"]["mae_ratio"], rel=1e-6)
    for pa, pb in zip(ra["profiles"], rb["profiles"], strict=True):
        assert pa["mae"] == pytest.approx(pb["mae"], rel=1e-6)
        assert pa["persistence_mae"] == pb["persistence_mae"]  # readings are exact through JSON
    # the daemon's stats topic gives the same counters as the in-process worker
    assert over_mqtt.report.outcome.extra["stats_complete"]
    assert over_mqtt.report.accepted_consistent
    assert ra["dropped"] == rb["dropped"]
    assert ra["faults"]["checks"] == rb["faults"]["checks"]


def test_spawned_broker_and_daemon_survive_restarts_with_the_same_forecasts() -> None:
    common: dict[str, Any] = dict(
        streams=3, duration_s=8 * 3600, seed=5, faults=parse_faults("nan=0.01,duplicate=0.01"), backend="numpy"
    )
    spawned = simulate(
        SimConfig(
            spawn_broker=True,
            model=str(DEFAULT_MODEL),
            **{**common, "faults": parse_faults("nan=0.01,duplicate=0.01,broker_restart=1,daemon_restart=1")},
        )
    )
    local = _in_process(SimConfig(**common))
    report = spawned.report.to_json()
    assert report["faults"]["broker_restart"] == 1 and report["faults"]["daemon_restart"] == 1
    a, b = _forecasts(spawned), _forecasts(local)
    assert len(b) > 250 and a.keys() == b.keys()  # no reading lost across both restarts
    np.testing.assert_allclose([a[k] for k in b], [b[k] for k in b], rtol=1e-6)
    assert report["dropped"]["not_finite"] == report["faults"]["injected"]["nan"]
    assert report["dropped"]["duplicate"] >= report["faults"]["injected"]["duplicate"]  # + any redelivered reading
    assert report["accepted"]["observed"] == report["accepted"]["expected"]


def test_senml_packs_from_the_simulator_give_the_forecasts_and_drops_of_single_messages() -> None:
    """``--pack``: valid readings travel as SenML packs, faults the parser refuses alone; nothing else changes."""
    common: dict[str, Any] = dict(
        streams=4, duration_s=12 * 3600, seed=9, faults=parse_faults("all,nan=0.01,garbage=0.01"), backend="numpy"
    )
    packed = simulate(SimConfig(spawn_broker=True, model=str(DEFAULT_MODEL), pack=50, **common))
    local = _in_process(SimConfig(**common))
    a, b = _forecasts(packed), _forecasts(local)
    assert len(b) > 400 and a.keys() == b.keys()
    np.testing.assert_allclose([a[k] for k in b], [b[k] for k in b], rtol=1e-6)
    ra, rb = packed.report.to_json(), local.report.to_json()
    assert ra["dropped"] == rb["dropped"]
    assert packed.report.accepted_consistent


def test_pack_needs_a_broker() -> None:
    with pytest.raises(edge_gru.errors.ConfigError, match="pack"):
        SimConfig(pack=50)


def test_no_daemon_online_is_a_clear_error(broker: Broker) -> None:
    transport = MqttTransport(
        broker=broker.url,
        spawn=False,
        model=None,
        backend="numpy",
        input_template="x/{stream}",
        output_template="y/{stream}",
        daemon_id="nobody-here",
    )
    from sim.clock import SimClock
    from sim.mqtt import SimulationError
    from sim.run import build_run

    with pytest.raises(SimulationError, match="no edge-gru daemon reports online"):
        transport.run(build_run(SimConfig(streams=1, duration_s=3600)), SimClock())


def test_a_daemon_without_timely_stats_gets_forecasts_scored_and_no_invented_counters(
    broker: Broker, topic_prefix: str, tmp_path: Path
) -> None:
    """A daemon whose stats topic is slow (the default is once a minute): drops are reported unknown, not guessed."""
    inputs, output = f"{topic_prefix}/in/{{stream}}", f"{topic_prefix}/out/{{stream}}"
    daemon = _numpy_daemon(tmp_path, broker, inputs, output, stats_interval_s=600)
    daemon.start()
    try:
        cfg = SimConfig(
            streams=2,
            duration_s=6 * 3600,
            faults=parse_faults("nan=0.02"),
            backend="numpy",
            broker=broker.url,
            daemon_id=daemon.client_id,
            input_template=inputs,
            output_template=output,
        )
        result = simulate(cfg)
    finally:
        daemon.stop()
    report = result.report
    assert report.outcome.extra["stats_complete"] is False
    assert report.outcome.dropped == {} and report.outcome.gap_resets is None
    assert report.fault_checks()["nan"]["observed"] is None
    assert "drops: unknown" in report.table() or "dropped: unknown" in report.table()
    local = _in_process(dataclasses.replace(cfg, broker=None, daemon_id=None))
    assert _forecasts(result).keys() == _forecasts(local).keys()
    assert report.to_json()["total"]["mae_ratio"] == pytest.approx(
        local.report.to_json()["total"]["mae_ratio"], rel=1e-6
    )
