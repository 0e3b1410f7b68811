"""The bench report as text for people: an aligned table, the machine, and a legend of every column."""

from __future__ import annotations

from typing import Any

from edge_gru.bench.measure import POOL_BATCH

LEGEND = """\
columns:
  step ns          one GRU step of one stream through the raw kernel, Python call included (ns per call)
  pool ns          one pool.update of one stream: normalization, per-stream rules, step, denormalization
  S=N M/s          million stream-steps per second through the raw batched step with N streams per call
  pool S=N M/s     million stream-steps per second through pool.update with N streams per call
  import ms        importing the row's runtime in a fresh process (the numba kernels, ai_edge_litert, keras, numpy)
  1st cold ms      load the bundle and serve the first reading in a fresh process with an empty kernel cache
                   (the JIT compile; equal to 1st warm where nothing is compiled)
  1st warm ms      the same with the kernel cache already filled (what a daemon restart costs)
  RSS load MiB     resident memory of that fresh process after the first forecast
  RSS N str MiB    resident memory after serving N streams for 100 steps
  -                does not apply to this row, or was not measured (--no-processes)
rows: registry backends (numba once per kernel kind: numba-jit, numba-aot) and keras, the reference."""


def format_table(report: dict[str, Any], *, legend: bool = True) -> str:
    """The report as aligned text for people, followed by :data:`LEGEND` unless ``legend`` is False."""

    def num(value: float | None, unit: str = "", scale: float = 1.0, digits: int = 0) -> str:
        if value is None:
            return "-"
        return f"{value / scale:,.{digits}f}{unit}"

    head = [
        "backend",
        "step ns",
        "pool ns",
        *[f"S={s:,} M/s" for s in report["batch_sizes"]],
        f"pool S={POOL_BATCH} M/s",
        "import ms",
        "1st cold ms",
        "1st warm ms",
        "RSS load MiB",
        f"RSS {report['serve_streams']} str MiB",
    ]
    lines = []
    for r in report["results"]:
        if not r["available"]:
            lines.append([r["backend"], f"(unavailable: {r['note']})"])
            continue
        batched = {int(k): v for k, v in r["batched"].items()}
        lines.append(
            [
                r["backend"],
                num(r["single_ns"]),
                num(r["pool_single_ns"]),
                *[num(batched.get(s), scale=1e6, digits=2) for s in report["batch_sizes"]],
                num(r["pool_batched"], scale=1e6, digits=2),
                num(r["import_ms"], digits=0),
                num(r["first_step_cold_ms"], digits=0),
                num(r["first_step_warm_ms"], digits=0),
                num(r["rss_after_load_mib"], digits=1),
                num(r["rss_serving_mib"], digits=1),
            ]
        )
    widths = [max(len(head[i]), *(len(row[i]) for row in lines if len(row) == len(head))) for i in range(len(head))]
    out = ["  ".join(h.rjust(w) if i else h.ljust(w) for i, (h, w) in enumerate(zip(head, widths, strict=True)))]
    for row in lines:
        if len(row) != len(head):
            out.append(f"{row[0].ljust(widths[0])}  {row[1]}")
        else:
            out.append(
                "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
            )
    mach = report["machine"]
    v = mach["versions"]
    out.append("")
    out.append(
        f"machine: {mach['cpu']} ({mach['machine']}), {mach['cores_usable']}/{mach['cores']} cores, "
        f"load {', '.join(f'{x:.1f}' for x in mach['load_average'] or [])}; python {mach['python']}, "
        f"numpy {v['numpy']}, numba {v['numba']}, ai-edge-litert {v['ai-edge-litert']}"
    )
    b = report["bundle"]
    out.append(f"bundle: {b['path']} ({b['id']}), {b['network']} on {b['input_features']} input(s)")
    out.append(f"clock: {report['clock']} (best of several bursts); M/s = million stream-steps per second")
    notes = [f"  {r['backend']}: {r['note']}" for r in report["results"] if r["available"] and r["note"]]
    if notes:
        out.append("notes:")
        out += notes
    if legend:
        out += ["", LEGEND]
    return "\n".join(out)
