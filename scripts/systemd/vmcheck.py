"""Helpers the checks inside the systemd VM run with the installed daemon's own Python.

    readings  JSON payloads of one sensor stream (deterministic, so the reference can replay them)
    expect    compare the forecasts a subscriber received with a reference StreamPool (numpy backend)
              fed the same readings; optionally prove that the stream's state was carried over a restart
    count     how many forecasts those readings give (the warm-up gives none)
    logfmt    check that every line the daemon wrote to the journal is one logfmt event, and that
              the named events are there

Exit status 0 when the check holds, 1 (with the reason on stderr) when it does not.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path


def reading_value(k: int) -> float:
    """Sample ``k`` of a smooth, daily-periodic series with some wiggle (half-hourly samples)."""
    return 20.0 + 5.0 * math.sin(2 * math.pi * k / 48) + 0.7 * math.sin(1.7 * k)


def reading(base: float, period: float, k: int) -> dict[str, float]:
    return {"value": round(reading_value(k), 4), "ts": base + k * period}


def cmd_readings(a: argparse.Namespace) -> int:
    for k in range(a.start, a.start + a.count):
        print(json.dumps(reading(a.base, a.period, k)))
    return 0


def reference(bundle: str, stream: str, readings: list[dict[str, float]]) -> list[float]:
    """Forecasts (NaN while warming up) a fresh pool of ``bundle`` gives for ``readings`` of one stream."""
    import edge_gru

    pool = edge_gru.load(bundle, backend="numpy").pool(16)
    return [float(pool.update([stream], [r["value"]], [r["ts"]])[0]) for r in readings]


def cmd_count(a: argparse.Namespace) -> int:
    """How many forecasts readings ``start ..`` give (the ones after the warm-up), for a subscriber to wait for."""
    ref = reference(a.bundle, a.stream, [reading(a.base, a.period, k) for k in range(a.start + a.count)])
    print(sum(not math.isnan(f) for f in ref[a.start :]))
    return 0


def received_forecasts(path: Path, stream: str) -> dict[float, dict[str, object]]:
    """Forecast payloads for ``stream`` from a ``mosquitto_sub -v`` transcript, keyed by the reading's ts."""
    out: dict[float, dict[str, object]] = {}
    for line in path.read_text().splitlines():
        topic, _, payload = line.partition(" ")
        if topic != f"predictions/{stream}":
            continue
        msg = json.loads(payload)
        ts = float(msg["ts"])
        if ts in out:
            raise SystemExit(f"two forecasts for the reading at ts={ts} of {stream}")
        out[ts] = msg
    return out


def cmd_expect(a: argparse.Namespace) -> int:
    manifest = json.loads((Path(a.bundle) / "manifest.json").read_text())
    all_readings = [reading(a.base, a.period, k) for k in range(a.start + a.count)]
    ref = reference(a.bundle, a.stream, all_readings)
    got = received_forecasts(Path(a.received), a.stream)
    problems: list[str] = []
    want = {all_readings[k]["ts"]: ref[k] for k in range(a.start, a.start + a.count) if not math.isnan(ref[k])}
    if not want:
        problems.append("the reference gives no forecast at all for these readings (all warm-up)")
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    if missing:
        problems.append(f"{len(missing)} of {len(want)} expected forecasts never arrived (first ts={missing[0]})")
    if extra:
        problems.append(f"{len(extra)} forecasts the reference does not give (first ts={extra[0]}: warm-up?)")
    worst = 0.0
    for ts in sorted(set(want) & set(got)):
        msg = got[ts]
        if msg.get("model") != manifest["id"]:
            problems.append(f"forecast for ts={ts} is from model {msg.get('model')}, expected {manifest['id']}")
            break
        value = float(msg["value"])  # type: ignore[arg-type]
        err = abs(value - want[ts])
        worst = max(worst, err)
        if not math.isfinite(value) or err > 1e-3 + 1e-4 * abs(want[ts]):
            problems.append(f"forecast for ts={ts}: {value!r}, reference {want[ts]!r}")
            break
    backends = sorted({str(m.get("backend")) for m in got.values()})
    summary = (
        f"{a.stream}: {len(got)} forecasts from {manifest['id']} (backend {','.join(backends)}), "
        f"{len(want)} expected, worst |error| {worst:.2e}"
    )
    if a.restored:
        # The same readings from a fresh state (what a restart that lost the state would give):
        # they must differ from the continued ones, or this check could not tell the two apart.
        fresh = reference(a.bundle, a.stream, all_readings[a.start :])
        diffs = [
            abs(f - want[all_readings[a.start + i]["ts"]])
            for i, f in enumerate(fresh)
            if all_readings[a.start + i]["ts"] in want and not math.isnan(f)
        ]
        lost = (len(want) - len(diffs)) + sum(d > 1e-2 for d in diffs)
        if lost == 0:
            problems.append("a fresh state gives the same forecasts here: this check cannot see a lost state")
        summary += f"; a lost state would change {lost} of them"
    print(summary)
    for p in problems:
        print(f"{a.stream}: {p}", file=sys.stderr)
    return 1 if problems else 0


LOGFMT = re.compile(r'^(?:[A-Za-z_][A-Za-z0-9_.]*=(?:"(?:[^"\\]|\\.)*"|[^\s"=]*)(?: |$))+$')


def cmd_logfmt(a: argparse.Namespace) -> int:
    """Lines from ``journalctl -u edge-gru -o json``: the daemon's (identifier edge-gru) must be logfmt."""
    events: dict[str, int] = {}
    bad: list[str] = []
    daemon_lines = 0
    for raw in Path(a.journal).read_text().splitlines():
        entry = json.loads(raw)
        if entry.get("SYSLOG_IDENTIFIER") != "edge-gru":
            continue  # systemd's own lines about the unit
        msg = entry.get("MESSAGE")
        if not isinstance(msg, str):
            bad.append(repr(msg))
            continue
        daemon_lines += 1
        if not LOGFMT.match(msg):
            bad.append(msg)
            continue
        fields = dict(re.findall(r'([A-Za-z_][A-Za-z0-9_.]*)=("(?:[^"\\]|\\.)*"|[^\s"=]*)', msg))
        if not {"ts", "level", "event"} <= fields.keys():
            bad.append(msg)
            continue
        events[fields["event"]] = events.get(fields["event"], 0) + 1
    missing = [e for e in a.require.split(",") if e and e not in events]
    counts = " ".join(f"{k}={v}" for k, v in sorted(events.items()))
    print(f"{daemon_lines} daemon lines, {len(bad)} not logfmt; events: {counts}")
    for line in bad[:20]:
        print(f"not a logfmt event: {line}", file=sys.stderr)
    if missing:
        print(f"events missing from the journal: {', '.join(missing)}", file=sys.stderr)
    if bad and not a.allow_other:
        return 1
    return 1 if missing or daemon_lines == 0 else 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("readings")
    e = sub.add_parser("expect")
    c = sub.add_parser("count")
    for q in (r, e, c):
        q.add_argument("--base", type=float, required=True)
        q.add_argument("--period", type=float, required=True)
        q.add_argument("--start", type=int, default=0)
        q.add_argument("--count", type=int, required=True)
    for q in (e, c):
        q.add_argument("--bundle", required=True)
        q.add_argument("--stream", required=True)
    e.add_argument("--received", required=True)
    e.add_argument("--restored", action="store_true", help="readings before --start went to an earlier run")
    g = sub.add_parser("logfmt")
    g.add_argument("--journal", required=True)
    g.add_argument("--require", default="")
    g.add_argument("--allow-other", action="store_true", help="report non-logfmt lines without failing")
    a = p.parse_args()
    return {"readings": cmd_readings, "expect": cmd_expect, "count": cmd_count, "logfmt": cmd_logfmt}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
