"""``edge-gru serve``: the MQTT forecasting daemon (see ``edge_gru.daemon``)."""

from __future__ import annotations

import json
import sys

import click


@click.command()
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="TOML config file (see deploy/edge-gru.toml). EDGE_GRU_<SECTION>_<KEY> variables override it.",
)
@click.option("--check", is_flag=True, help="Validate the config, the bundle and the backend, print a summary, exit.")
def serve(config_path: str, check: bool) -> None:
    """Subscribe to sensor topics, forecast each stream's next sample, publish the forecasts.

    Exit status: 0 after SIGTERM, 78 for a bad config or bundle (systemd: RestartPreventExitStatus=78),
    2 when the install lacks an extra the config needs (paho-mqtt, LiteRT).
    """
    from edge_gru.extras import require_extra

    require_extra("device", "the MQTT daemon", modules=("paho",))
    from edge_gru.daemon.service import forbid_tensorflow

    forbid_tensorflow()  # before anything could import it: the daemon never runs TensorFlow
    from edge_gru.daemon import logs
    from edge_gru.daemon.config import load_config
    from edge_gru.errors import EdgeGruError, MissingExtraError

    logs.configure("info")
    try:
        cfg = load_config(config_path)
    except EdgeGruError as exc:
        click.echo(f"edge-gru serve: {exc}", err=True)
        sys.exit(78)
    logs.configure(cfg.logging.level, cfg.logging.format)

    from edge_gru.daemon.service import EX_CONFIG, Service
    from edge_gru.daemon.service import check as check_config

    if check:
        try:
            report = check_config(cfg)
        except MissingExtraError:
            raise  # one line and exit status 2, from the command group
        except (EdgeGruError, OSError) as exc:
            click.echo(f"edge-gru serve --check: {exc}", err=True)
            sys.exit(EX_CONFIG)
        if cfg.cluster.enabled:
            from edge_gru.daemon.cluster import subject_mappings

            report["nats_mappings"] = subject_mappings(cfg)  # what every server node's config must hold
        click.echo(json.dumps(report, indent=2, default=str))
        for warning in report["warnings"]:
            click.echo(f"warning: {warning}", err=True)
        return
    try:
        if cfg.cluster.enabled:  # one member of a NATS cluster (docs/scale-out.md)
            from edge_gru.daemon.cluster import ClusterService

            sys.exit(ClusterService(cfg).run())
        service = Service(cfg)
    except MissingExtraError:
        raise
    except (EdgeGruError, OSError) as exc:
        click.echo(f"edge-gru serve: {exc}", err=True)
        sys.exit(EX_CONFIG)
    sys.exit(service.run())
