"""The ``inferstream`` command line: one module per command group, each thin.

Commands parse their options, call the library and print; no logic lives only here.
"""

from __future__ import annotations

from inferstream.cli import (  # noqa: F401  (register commands)
    alerts,
    demo,
    dlq,
    evaluate,
    gateway,
    groups,
    job,
    models,
    monitor,
    produce,
    reports,
    retrain,
    schemas,
    search,
    serve,
    stack,
    stream,
    subscribe,
    table,
    topics,
)
from inferstream.cli._app import app
from inferstream.cli._common import print_error
from inferstream.errors import InferstreamError
from inferstream.runtime import limit_malloc_arenas

__all__ = ["app", "main"]


def main() -> None:
    """Entry point of the ``inferstream`` console script."""
    limit_malloc_arenas()
    try:
        app()
    except InferstreamError as exc:
        print_error(exc)
        raise SystemExit(1) from exc
