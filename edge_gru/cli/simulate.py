"""``edge-gru simulate``: what the daemon would do with your streams, in seconds, on a desktop."""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from typing import Any

import click

from edge_gru.backends import BACKEND_CHOICES
from edge_gru.cli.csvdata import strict_option
from edge_gru.errors import EdgeGruError

PROFILE_HELP = "sine, random_walk, daily, weekly, drift, step"


def _split(values: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(p.strip() for v in values for p in v.split(",") if p.strip())


@click.command()
@click.option("--streams", type=int, help="Synthetic streams (default 12; 0 with --replay for replay only).")
@click.option(
    "--profile", "profiles", multiple=True, help=f"Profiles to cycle through (repeat or comma list): {PROFILE_HELP}."
)
@click.option("--duration", help="Simulated time, e.g. 7d, 36h, 90m (default 7d; replays: the whole file).")
@click.option("--period", help="Sample period of synthetic streams, e.g. 5m, 1s (default 5m).")
@click.option("--seed", type=int, help="Seed: the same seed gives the same readings, faults and report numbers.")
@click.option(
    "--faults", help="Fault rates, e.g. 'nan=0.01,garbage=0.005', a preset ('all'), or both ('all,gap=0.01')."
)
@click.option(
    "--replay",
    "replays",
    multiple=True,
    type=click.Path(dir_okay=False),
    help="Replay a CSV column as a stream (repeatable).",
)
@click.option("--column", "columns", multiple=True, help="The column of each --replay file (one, or one per file).")
@click.option("--time-column", help="Timestamp column of the replay files (default: the first column).")
@click.option("--scenario", help="A scenario TOML file or the name of a shipped one (see --list-scenarios).")
@click.option("--list-scenarios", is_flag=True, help="List the shipped scenarios and exit.")
@click.option("--broker", help="Drive a running daemon through this broker, e.g. mqtt://127.0.0.1:1883.")
@click.option("--daemon-id", help="With --broker: the client_id of the daemon to drive (default: the first online).")
@click.option(
    "--spawn-broker", is_flag=True, help="Start a private mosquitto and an 'edge-gru serve' for an end-to-end run."
)
@click.option("--realtime", is_flag=True, help="Send readings in real time (same as --speed 1).")
@click.option("--speed", type=float, help="Play simulated time this many times faster than real time.")
@click.option("--input-topic", help="Input topic template (default sensors/{stream}/value).")
@click.option("--output-topic", help="Forecast topic template (default predictions/{stream}).")
@click.option(
    "--pack",
    type=click.IntRange(min=1),
    help="Send readings as SenML packs of up to N records (needs --broker or --spawn-broker; default 1).",
)
@click.option(
    "--senml-topic", help="Topic of the SenML packs (default senml/edge-gru-sim; a --broker daemon's senml_input)."
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option(
    "--plot", type=click.Path(dir_okay=False), help="Write a PNG of actual vs forecast and the error histogram."
)
@click.option("--model", type=click.Path(file_okay=False), help="Bundle directory (default models/default).")
@click.option("--backend", type=click.Choice(BACKEND_CHOICES), help="Backend (default auto).")
@click.option(
    "--adaptation",
    type=click.Choice(["bundle", "on", "off"]),
    help="Per-stream combination, intervals and anomaly flags (in-process): as the bundle says, or on/off.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@strict_option
def simulate(
    streams: int | None,
    profiles: tuple[str, ...],
    duration: str | None,
    period: str | None,
    seed: int | None,
    faults: str | None,
    replays: tuple[str, ...],
    columns: tuple[str, ...],
    time_column: str | None,
    scenario: str | None,
    list_scenarios: bool,
    broker: str | None,
    daemon_id: str | None,
    spawn_broker: bool,
    realtime: bool,
    speed: float | None,
    input_topic: str | None,
    output_topic: str | None,
    pack: int | None,
    senml_topic: str | None,
    as_json: bool,
    plot: str | None,
    model: str | None,
    backend: str | None,
    adaptation: str | None,
    quiet: bool,
    strict: bool,
) -> None:
    """Simulate sensor streams through the daemon's own code and report forecast accuracy.

    With no options: 12 synthetic streams (sine, random walk, daily and weekly cycles,
    drift, step changes), one week every 5 minutes, through the daemon's parse, queue,
    worker, pool and publish code in this process, on a virtual clock. The report sets
    the model's MAE and RMSE beside persistence per profile, with drops by reason,
    latency and throughput.

    \b
    Examples:
      edge-gru simulate
      edge-gru simulate --faults all --plot sim.png
      edge-gru simulate --replay meter.csv --column kWh --streams 0
      edge-gru simulate --scenario electricity --json
      edge-gru simulate --spawn-broker --faults broker_restart=1,daemon_restart=1
      edge-gru simulate --spawn-broker --pack 50 --faults all
    """
    from edge_gru.extras import require_extra

    if plot:
        require_extra("plot", "--plot")  # before the run, not after it
    if broker or spawn_broker:
        require_extra("device", "--broker" if broker else "--spawn-broker", modules=("paho",))
    daemon_log = logging.getLogger("edge_gru.daemon")
    level = daemon_log.level
    if logging.getLogger().getEffectiveLevel() >= logging.WARNING:
        # The report counts every dropped reading; the worker's per-reading warnings would only be noise here.
        daemon_log.setLevel(logging.ERROR)
    try:
        if list_scenarios:
            _list_scenarios()
            return
        config = _config(**locals())
        result = _run(config, quiet=quiet)
    except EdgeGruError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        daemon_log.setLevel(level)  # in-process callers (tests, notebooks) keep their logging
    report = result.report
    if plot:
        from sim.plot import write_plot

        try:
            write_plot(report, plot)
        except EdgeGruError as exc:
            raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2, default=_json_default))
    else:
        click.echo(report.table())
        if plot:
            click.echo(f"plot       {plot}")


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _list_scenarios() -> None:
    from sim.scenario import load_scenario, named_scenarios

    for name, path in named_scenarios().items():
        desc = load_scenario(path).get("description", "")
        click.echo(f"{name:<16} {desc}")


def _config(**opts: Any) -> Any:
    from sim.config import SimConfig, parse_duration
    from sim.faults import parse_faults
    from sim.profiles import ReplaySource
    from sim.scenario import load_scenario

    kwargs: dict[str, Any] = load_scenario(opts["scenario"]) if opts["scenario"] else {}
    if opts["streams"] is not None:
        kwargs["streams"] = opts["streams"]
    if opts["profiles"]:
        kwargs["profiles"] = _split(opts["profiles"])
    if opts["duration"]:
        kwargs["duration_s"] = parse_duration(opts["duration"], name="--duration")
    if opts["period"]:
        kwargs["period_s"] = parse_duration(opts["period"], name="--period")
    if opts["seed"] is not None:
        kwargs["seed"] = opts["seed"]
    if opts["faults"] is not None:
        kwargs["faults"] = parse_faults(opts["faults"])
    replays, columns = opts["replays"], opts["columns"]
    if replays or columns:
        if not replays or not columns:
            raise click.UsageError("--replay FILE and --column NAME go together")
        if len(columns) not in (1, len(replays)):
            raise click.UsageError(f"{len(replays)} --replay files need one --column or {len(replays)} of them")
        cols = columns * len(replays) if len(columns) == 1 else columns
        kwargs["replays"] = (
            *kwargs.get("replays", ()),
            *(
                ReplaySource(path=f, column=c, time_column=opts["time_column"])
                for f, c in zip(replays, cols, strict=True)
            ),
        )
        if opts["streams"] is None and not opts["scenario"]:
            kwargs["streams"] = 0
    if opts["strict"] and kwargs.get("replays"):
        kwargs["replays"] = tuple(dataclasses.replace(r, strict=True) for r in kwargs["replays"])
    for key, opt in (
        ("broker", "broker"),
        ("daemon_id", "daemon_id"),
        ("model", "model"),
        ("backend", "backend"),
        ("adaptation", "adaptation"),
        ("speed", "speed"),
    ):
        if opts[opt] is not None:
            kwargs[key] = opts[opt]
    if opts["realtime"]:
        kwargs["speed"] = 1.0
    if opts["spawn_broker"]:
        kwargs["spawn_broker"] = True
    if opts["input_topic"]:
        kwargs["input_template"] = opts["input_topic"]
    if opts["output_topic"]:
        kwargs["output_template"] = opts["output_topic"]
    if opts["pack"]:
        kwargs["pack"] = opts["pack"]
    if opts["senml_topic"]:
        kwargs["senml_topic"] = opts["senml_topic"]
    return SimConfig(**kwargs)


def _run(config: Any, *, quiet: bool) -> Any:
    from sim.run import simulate as run_simulation

    if quiet:
        return run_simulation(config)
    bar: Any = None

    def on_schedule(schedule: Any) -> None:
        nonlocal bar
        if config.speed is not None and len(schedule):
            span = float(schedule.elapsed[-1]) / config.speed
            if span > 600:
                click.echo(
                    f"note: at speed {config.speed:g}x this run takes {span / 3600:.1f} h of wall time; "
                    "shorten it with --duration or --period, or raise --speed",
                    err=True,
                )
        bar = click.progressbar(length=len(schedule), label="simulating", file=sys.stderr, show_eta=True)
        bar.__enter__()

    try:
        return run_simulation(
            config,
            progress=lambda n: bar.update(n),
            on_schedule=on_schedule,
            on_slow_start=lambda message: click.echo(message, err=True),
        )
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
