"""``--metrics-port``: how every long-running command exports its Prometheus metrics.

One option and one helper for ``serve`` (models, chains, shadows, the supervisor of
``--replicas``/``--autoscale``), ``stream ingest``, ``stream index``, ``table sink`` and
``monitor run``: the port comes from the option, else from ``metrics.port``
(``INFERSTREAM_METRICS__PORT``; 0, the default, exports nothing), the address from
``metrics.host`` (127.0.0.1; beyond loopback a loud warning). The gateway serves its
metrics at ``/metrics`` on its own port instead. ``docs/metrics.md`` lists them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from inferstream.cli._common import console

if TYPE_CHECKING:
    from inferstream.config import Settings
    from inferstream.metrics import Metrics

#: The option every long-running command takes.
MetricsPort = Annotated[
    int | None,
    typer.Option(
        "--metrics-port",
        min=0,
        max=65535,
        help="Export Prometheus metrics on metrics.host (127.0.0.1):PORT/metrics "
        "(default: metrics.port, INFERSTREAM_METRICS__PORT; 0: off). See docs/metrics.md.",
    ),
]


def metrics_port(settings: Settings, option: int | None) -> int:
    """The port asked for: the option, else ``metrics.port`` (0: do not export)."""
    return option if option is not None else settings.metrics.port


def exported_metrics(settings: Settings, option: int | None) -> Metrics:
    """The process's metrics registry, served on ``metrics.host`` when a port is asked for."""
    from inferstream.metrics import Metrics, is_loopback

    metrics = Metrics(namespace=settings.metrics.namespace)
    port = metrics_port(settings, option)
    if port:
        host = settings.metrics.host
        bound = metrics.serve(port, host)
        console.print(f"metrics on http://{host}:{bound}/metrics")
        if not is_loopback(host):
            console.print(
                f"[bold red]warning:[/] metrics listen on {host}, beyond this machine, with no authentication"
            )
    return metrics
