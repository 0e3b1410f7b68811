"""``edge-gru build-kernels``: compile the GRU step kernels ahead of time.

``deploy/install.sh`` runs ``edge-gru build-kernels --out DIR`` with DIR the daemon's
``NUMBA_CACHE_DIR`` (or sets ``EDGE_GRU_KERNEL_DIR=DIR``), and the daemon then imports
the compiled module without numba or llvmlite (see :mod:`edge_gru.aot`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from edge_gru import aot


@click.command()
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=None,
    help=f"Directory for the compiled modules (default: ${aot.KERNEL_DIR_ENV}, else $NUMBA_CACHE_DIR, "
    "else ~/.cache/edge-gru/kernels; the loader searches the same places).",
)
@click.option(
    "--variant",
    type=click.Choice(["all", *aot.VARIANTS]),
    default="all",
    show_default=True,
    help="host: fastest, runs only on this CPU model; generic: any CPU of this architecture.",
)
@click.option("--check", is_flag=True, help="Build nothing; say which compiled modules match this machine.")
@click.option(
    "--no-timing",
    "timing",
    flag_value=False,
    default=True,
    help="Do not time the variants against the JIT (the loader then prefers host).",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def build_kernels(out: str | None, variant: str, check: bool, timing: bool, as_json: bool) -> None:
    """Compile the numba kernels into an extension module that runs without numba.

    Needs numba and a C compiler at build time only. Each module is verified against the
    numpy reference before this command reports success, then timed with the JIT on
    this CPU; the fastest variant is kept (the loader tries it first) and the command says
    which, and by how much.
    """
    dirs = [Path(out).expanduser()] if out else aot.kernel_dirs()
    if check:
        _check(dirs, as_json)
        return
    from edge_gru.extras import require_extra

    require_extra("device", "compiling the kernels", modules=("numba",))
    variants = aot.VARIANTS if variant == "all" else (variant,)
    if not as_json:
        click.echo(f"compiling {', '.join(variants)} kernels into {dirs[0]} (about a minute each) ...", err=True)
    try:
        paths = aot.build(dirs[0], variants=variants)
        errors = {path.name: _verify(path) for path in paths}
    except aot.KernelBuildError as exc:
        raise click.ClickException(str(exc)) from exc
    bad = {name: err for name, err in errors.items() if err > 1e-5}
    timings: dict[str, float] = {}
    kept = None
    if timing and not bad:
        timings = time_kernels(paths)
        kept = aot.write_choice(dirs[0], timings, detail={"workload": WORKLOAD})
    report = {
        "dir": str(dirs[0]),
        "modules": [p.name for p in paths],
        "max_abs_error_vs_reference": errors,
        "env": {aot.KERNEL_DIR_ENV: str(dirs[0])},
        "found_by_default": dirs[0].resolve() in [d.resolve() for d in aot.kernel_dirs()],
        "timings_ns": timings,
        "kept": kept,
        "workload": WORKLOAD if timings else None,
    }
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        for path in paths:
            click.echo(f"built {path}  (max abs error vs numpy reference {errors[path.name]:.1e})")
        if kept is not None:
            click.echo(_verdict(kept, timings))
        if not report["found_by_default"]:
            click.echo(f"the loader looks there when {aot.KERNEL_DIR_ENV}={dirs[0]} is set")
    if bad:
        raise click.ClickException(f"compiled kernels disagree with the reference: {bad}")


#: what the variants are timed on: one batched step of the default bundle's shape across S streams
_UNITS, _FEATURES, _STREAMS = 50, 1, 1024
WORKLOAD: dict[str, object] = {
    "units": _UNITS,
    "features": _FEATURES,
    "streams": _STREAMS,
    "reset_after": True,
    "clock": "process CPU time",
}


def time_kernels(paths: list[Path]) -> dict[str, float]:
    """Nanoseconds per batched step (:data:`WORKLOAD`) of each built variant and of the numba JIT, best of bursts."""
    import numpy as np

    from edge_gru import kernels
    from edge_gru.bench.timing import best_ns
    from edge_gru.kernel_layout import tile_scratch_size
    from edge_gru.layers import DenseLayer, GRULayer, Network, random_weights

    u, i, s = _UNITS, _FEATURES, _STREAMS
    rng = np.random.default_rng(1)
    packed = random_weights(Network(i, (GRULayer(u), DenseLayer(1))), seed=1).packed()
    x = rng.standard_normal((s, i)).astype(np.float32)
    rows = np.arange(s, dtype=np.int64)
    scratch = np.zeros(tile_scratch_size(u, i), np.float32)
    y = np.zeros(s, np.float32)
    fns: dict[str, object] = {"jit": kernels.gru_step_batch}
    for path in paths:
        info = json.loads(path.with_name(path.name.removesuffix(aot.extension_suffix()) + ".json").read_text())
        fns[str(info["variant"])] = aot._import_extension(str(info["module"]), path).gru_step_batch
    out = {}
    for name, fn in fns.items():
        h = np.zeros((s, u), np.float32)
        out[name] = round(best_ns(lambda fn=fn, h=h: fn(packed, x, h, rows, scratch, y, True)), 1)  # type: ignore[operator,misc]
    return out


def _verdict(kept: str, timings: dict[str, float]) -> str:
    s = _STREAMS
    rate = {k: s / v * 1e3 for k, v in timings.items()}  # million readings/s
    others = ", ".join(f"{k} {rate[k]:.2f}" for k in timings if k != kept)
    line = f"kept {kept}: {rate[kept]:.2f} M steps/s at S={s} on this CPU ({others})"
    if "jit" in timings and timings["jit"] < timings[kept]:
        line += (
            f"; the JIT is {timings[kept] / timings['jit']:.2f}x faster here: the compiled module still saves numba's"
            " import (~60 MiB, seconds of compiling); EDGE_GRU_KERNELS=jit prefers the JIT"
        )
    return line


def _verify(path: Path) -> float:
    """Max abs error of a freshly built module against the numpy reference on random weights."""
    import numpy as np

    from edge_gru import reference
    from edge_gru.kernel_layout import STATE_PER_UNIT, stack_scratch_size, stack_state_size, tile_scratch_size
    from edge_gru.layers import DenseLayer, GRULayer, Network, random_weights

    info = json.loads(path.with_name(path.name.removesuffix(aot.extension_suffix()) + ".json").read_text())
    compiled = aot._import_extension(str(info["module"]), path)
    rng = np.random.default_rng(0)
    worst = 0.0
    for reset_after in (True, False):
        u, i, s = 9, 2, 70
        w = random_weights(Network(i, (GRULayer(u, reset_after), DenseLayer(1))), seed=int(reset_after))
        x = rng.standard_normal((s, i)).astype(np.float32)
        h = (rng.standard_normal((s, u)) * 0.5).astype(np.float32)
        h_ref = h.copy()
        y_ref = reference.gru_step(w, x, h_ref)
        y = np.zeros(s, np.float32)
        scratch = np.zeros(tile_scratch_size(u, i), np.float32)
        compiled.gru_step_batch(w.packed(), x, h, np.arange(s, dtype=np.int64), scratch, y, reset_after)
        state = np.zeros(STATE_PER_UNIT * u, np.float32)
        y1 = compiled.gru_step(w.packed(), x[0], state, reset_after)
        h1 = np.zeros((1, u), np.float32)
        y1_ref = reference.gru_step(w, x[:1], h1)[0, 0]
        y_ref = y_ref[:, 0]
        worst = max(worst, float(np.abs(y - y_ref).max()), float(np.abs(h - h_ref).max()), abs(float(y1 - y1_ref)))
    # a stack: two GRU layers (mixed reset_after), a relu dense, Dense(2)
    net = Network(i, (GRULayer(6), GRULayer(5, reset_after=False), DenseLayer(4, "relu"), DenseLayer(2)))
    w = random_weights(net, seed=2)
    x = rng.standard_normal((s, i)).astype(np.float32)
    h = (rng.standard_normal((s, net.state_size)) * 0.5).astype(np.float32)
    h_ref = h.copy()
    y_ref = reference.gru_step(w, x, h_ref)
    ys = np.zeros((s, 2), np.float32)
    compiled.stack_step_batch(
        w.packed(), w.meta(), x, h, np.arange(s, dtype=np.int64), np.zeros(stack_scratch_size(net), np.float32), ys
    )
    one = np.zeros(2, np.float32)
    compiled.stack_step(w.packed(), w.meta(), x[0], np.zeros(stack_state_size(net), np.float32), one)
    one_ref = reference.gru_step(w, x[:1], np.zeros((1, net.state_size), np.float32))[0]
    worst = max(
        worst, float(np.abs(ys - y_ref).max()), float(np.abs(h - h_ref).max()), float(np.abs(one - one_ref).max())
    )
    return worst


def _check(dirs: list[Path], as_json: bool) -> None:
    found = aot.find_compiled(dirs)
    rows = [
        {"module": str(path), "variant": info.get("variant"), "usable": why is None, "why": why}
        for path, info, why in found
    ]
    if as_json:
        click.echo(json.dumps({"dirs": [str(d) for d in dirs], "modules": rows}, indent=2))
    else:
        if not rows:
            click.echo(f"no compiled kernels in {', '.join(str(d) for d in dirs)}; run `edge-gru build-kernels`")
        for row in rows:
            click.echo(
                f"{'ok ' if row['usable'] else 'no '} {row['module']}" + (f"  ({row['why']})" if row["why"] else "")
            )
    if not any(r["usable"] for r in rows):
        sys.exit(1)
