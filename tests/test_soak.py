"""A 60-second soak in CI: simulator -> mosquitto -> ``edge-gru serve`` with faults and restarts.

``benchmarks/soak.py`` publishes the simulator's faulty streams at a steady rate through a
private broker, restarts the broker and the daemon mid-run, and accounts for every reading.
The figures of longer runs belong in the benchmark's output, not here; this test checks
that nothing is lost uncounted and that the daemon's memory stays flat.
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.soak import Soak


def test_a_minute_of_faulty_load_leaves_nothing_unaccounted(tmp_path: Path) -> None:
    lines: list[str] = []
    report = Soak(
        duration_s=60,
        rate=80,
        streams=40,
        faults="all,nan=0.01,garbage=0.01,duplicate=0.005,out_of_order=0.005",
        broker_restarts=1,
        daemon_restarts=1,
        backend="numpy",
        workdir=tmp_path,
        log=lines.append,
    ).run()
    assert report["readings_sent"] >= 0.95 * 60 * 80
    assert report["unaccounted"] == {
        "sent_not_acknowledged": 0,
        "acknowledged_not_received": 0,
        "received_not_published_or_dropped": 0,
        "published_not_seen": 0,
    }, report
    assert report["each_run_accounted"]
    assert report["fault_drop_mismatch"] == {}, report["fault_drop_mismatch"]
    assert report["nothing_unaccounted"]
    # every kind of injected fault was exercised and counted under its reason
    for reason in ("not_finite", "duplicate", "out_of_order"):
        assert report["dropped"].get(reason, 0) > 0, report["dropped"]
    assert report["readings_received"] == report["forecasts_published"] + sum(report["dropped"].values())
    assert report["broker_restarts"] == 1 and report["daemon_restarts"] == 1
    assert report["daemon_exit_codes"] == [0, 0]
    assert report["reconnects"] >= 1
    assert report["checkpoint_failures"] == 0
    for run in report["rss_runs"]:
        if run["to_s"] - run["from_s"] >= 20:
            assert run["growth_pct"] < 10.0, report["rss_runs"]
            assert run["max_mib"] < 400, report["rss_runs"]
    assert all(w["p99_ms"] is not None for w in report["latency_in_daemon"])
