"""The root ``inferstream`` Typer app and its global options.

Command modules import ``app`` from here and register themselves on it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from inferstream.cli._common import CliState, configure_logging

app = typer.Typer(
    name="inferstream",
    help="Kafka-native streaming ML: produce events, subscribe to predictions, watch drift.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _root(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="TOML settings file (default: $INFERSTREAM_CONFIG)."),
    ] = None,
    bootstrap_servers: Annotated[
        str | None,
        typer.Option(
            "--bootstrap-servers",
            "-b",
            help="Kafka brokers, host:port[,host:port] (default: settings).",
        ),
    ] = None,
    verbose: Annotated[
        int, typer.Option("--verbose", "-v", count=True, help="More log output (-v: info, -vv: debug).")
    ] = 0,
) -> None:
    configure_logging(verbose)
    overrides: dict[str, object] = {}
    if bootstrap_servers:
        overrides["kafka"] = {"bootstrap_servers": bootstrap_servers}
    ctx.obj = CliState(config_file=config, overrides=overrides)
