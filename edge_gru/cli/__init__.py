"""The ``edge-gru`` command line.

Each command lives in its own module and is imported only when it runs, so
``edge-gru --help`` stays fast and imports neither numba nor TensorFlow.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys

import click

from edge_gru.errors import MissingExtraError

#: Exit status of a command that needs an extra this install lacks (as for a usage error).
EX_MISSING_EXTRA = 2

# command name -> (module, attribute, one-line help shown by --help without importing it)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "train": ("edge_gru.cli.train", "train", "Train a GRU on a CSV column and write a bundle (needs [train])."),
    "import-keras": ("edge_gru.cli.import_keras", "import_keras", "Turn a Keras GRU+Dense(1) model into a bundle."),
    "evaluate": ("edge_gru.cli.evaluate", "evaluate", "One-step MAE/RMSE of a bundle on a CSV column vs persistence."),
    "forecast": ("edge_gru.cli.forecast", "forecast", "Write a bundle's forecasts for every row of a CSV column."),
    "info": ("edge_gru.cli.info", "info", "Print a bundle's manifest in readable form."),
    "serve": ("edge_gru.cli.serve", "serve", "Run the MQTT forecasting daemon."),
    "simulate": ("edge_gru.cli.simulate", "simulate", "Simulate sensor streams through the daemon's path."),
    "export-c": ("edge_gru.cli.export_c", "export_c", "Export a bundle as a C99 runtime for microcontrollers."),
    "bench": ("edge_gru.cli.bench", "bench", "Benchmark every installed backend side by side."),
    "build-kernels": (
        "edge_gru.cli.build_kernels",
        "build_kernels",
        "Compile the step kernels ahead of time (no numba at run time).",
    ),
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(name for name, (module, _, _) in COMMANDS.items() if importlib.util.find_spec(module))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module_name, attr, _ = COMMANDS[cmd_name]
        if importlib.util.find_spec(module_name) is None:
            return None
        command = getattr(importlib.import_module(module_name), attr)
        assert isinstance(command, click.Command)
        return command

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except Exception as exc:
            missing = missing_extra(exc)
            if missing is None:
                raise
            name = ctx.invoked_subcommand or ""
            click.echo(f"edge-gru {name}: {missing}" if name else f"edge-gru: {missing}", err=True)
            ctx.exit(EX_MISSING_EXTRA)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def missing_extra(exc: BaseException | None) -> MissingExtraError | None:
    """The :class:`MissingExtraError` behind ``exc``, however a command wrapped it (``raise ... from``)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, MissingExtraError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


@click.group(cls=LazyGroup)
@click.version_option(package_name="edge-gru")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def main(verbose: int) -> None:
    """edge-gru: one-step-ahead GRU forecasts for sensor streams, served over MQTT."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
