"""``inferstream serve --model NAME:VERSION``: inference workers, one or many, fixed or autoscaled.

``--model`` also takes a chain of the repository: every step is served, one worker thread each.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer

from inferstream.cli._app import app
from inferstream.cli._common import console, settings_of
from inferstream.cli._metrics import MetricsPort, exported_metrics
from inferstream.cli._metrics import metrics_port as port_of
from inferstream.errors import ConfigError
from inferstream.runtime import settle

if TYPE_CHECKING:
    from inferstream.config import Settings
    from inferstream.serving.supervisor import ScaleEvent
    from inferstream.serving.worker import WorkerOptions


@app.command()
def serve(
    ctx: typer.Context,
    model: Annotated[
        str, typer.Option("--model", "-m", help="NAME[:VERSION] of a model or a chain from the model repository.")
    ],
    replicas: Annotated[
        int, typer.Option("--replicas", "-r", help="Worker processes (one consumer group).", min=1)
    ] = 1,
    autoscale: Annotated[
        bool, typer.Option("--autoscale", help="Add worker processes while the lag grows, remove them when it drains.")
    ] = False,
    max_replicas: Annotated[
        int, typer.Option("--max-replicas", help="Most processes with --autoscale (and never above the partitions).")
    ] = 4,
    exactly_once: Annotated[
        bool,
        typer.Option("--exactly-once", help="Kafka transactions: consume → predict → produce → commit, no duplicates."),
    ] = False,
    shadow: Annotated[
        bool,
        typer.Option("--shadow", help="Serve as a shadow of the route's versions: outputs to predictions-shadow only."),
    ] = False,
    instance: Annotated[
        int, typer.Option("--instance", hidden=True, help="This copy's number (set by --replicas).")
    ] = 0,
    supervisor: Annotated[
        int | None, typer.Option("--supervisor", hidden=True, help="The pid of the supervisor: stop when it is gone.")
    ] = None,
    metrics_port: MetricsPort = None,
    threads: Annotated[
        int | None,
        typer.Option(
            "--threads",
            min=1,
            help="ONNX Runtime threads of each process (default: the model's runtime.intra_op_threads; "
            "when that is 0, one process takes every CPU and several share them).",
        ),
    ] = None,
) -> None:
    """Serve a model version from its request topic until Ctrl-C (finishing the batch in hand).

    A chain is served whole: one worker per step, in this process.
    """
    from inferstream.serving.repository import ModelRepository
    from inferstream.serving.routes import read_routes
    from inferstream.serving.supervisor import threads_per_copy
    from inferstream.serving.worker import WorkerOptions, WorkerRunner

    settings = settings_of(ctx)
    if ModelRepository(settings.models_dir).is_chain(model):
        if replicas > 1 or autoscale or exactly_once or shadow:
            raise ConfigError(
                f"{model} is a chain: --replicas, --autoscale, --exactly-once and --shadow are for models"
            )
        _serve_chain(settings, model, metrics_port)
        return
    version = ModelRepository(settings.models_dir).resolve(model)
    if threads is not None:
        runtime = version.config.runtime.model_copy(update={"intra_op_threads": threads})
        version = replace(version, config=version.config.model_copy(update={"runtime": runtime}))
    shadow_of: tuple[str, ...] = ()
    if shadow:
        route = read_routes(settings).get(version.config.name)
        if route is None or version.config.version not in route.shadow:
            raise ConfigError(
                f"{version.config.ref} is not a shadow in the route of {version.config.name}: "
                f"`inferstream models route {version.config.name} --weights ... --shadow {version.config.version}`"
            )
        shadow_of = tuple(v.version for v in route.versions if v.weight > 0)
    options = WorkerOptions(exactly_once=exactly_once, shadow_of=shadow_of, instance=instance)
    if replicas > 1 or autoscale:
        copies = max_replicas if autoscale else replicas
        per_copy = threads or threads_per_copy(version.config.runtime.intra_op_threads, copies)
        raise typer.Exit(
            _supervise(ctx, version.config.ref, replicas, autoscale, max_replicas, options, per_copy, metrics_port)
        )
    metrics = exported_metrics(settings, metrics_port)
    runner = WorkerRunner(settings, version, metrics=metrics, options=options)
    worker = runner.worker

    def stop(signum: int, frame: FrameType | None) -> None:
        runner.stop()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    if supervisor is not None:
        _stop_with_parent(supervisor, runner.stop)
    role = f"shadow of {', '.join(shadow_of)}" if shadow_of else "primary"
    console.print(
        f"serving {version.config.ref} ({role}{', exactly-once' if exactly_once else ''}) "
        f"from {', '.join(worker.request_topics)} → {worker.output_topic}"
    )
    settle()
    stats = runner.run()
    console.print(
        f"served {stats.requests} requests: {stats.predictions} predictions, {stats.dead_letters} dead letters, "
        f"mean batch {stats.mean_batch_size:.1f}"
    )


def _supervise(
    ctx: typer.Context,
    ref: str,
    replicas: int,
    autoscale: bool,
    max_replicas: int,
    options: WorkerOptions,
    threads: int | None,
    metrics_option: int | None,
) -> int:
    from inferstream.serving.supervisor import ScalePolicy, Supervisor, serve_command

    settings = settings_of(ctx)
    root = ctx.find_root().params
    extra = [
        *(["--exactly-once"] if options.exactly_once else []),
        *(["--shadow"] if options.shadow_of else []),
        *(["--threads", str(threads)] if threads else []),
    ]
    if threads:
        console.print(f"each worker process runs ONNX Runtime on {threads} thread(s)")
    name, _, version = ref.partition(":")
    supervisor = Supervisor(
        settings,
        serve_command(str(root["config"]) if root.get("config") else None, root.get("bootstrap_servers"), ref, *extra),
        topics=[settings.topics.request_topic(name, v) for v in options.shadow_of or (version,)],
        group_id=settings.topics.worker_group(name, version, shadow=bool(options.shadow_of)),
        replicas=replicas,
        policy=ScalePolicy(min_replicas=1, max_replicas=max_replicas) if autoscale else None,
        on_event=_print_event,
        metrics=exported_metrics(settings, metrics_option),
        metrics_port=port_of(settings, metrics_option),
    )
    if supervisor.metrics_port:
        console.print(f"worker copy N exports its metrics on port {supervisor.metrics_port} + 1 + N")
    signal.signal(signal.SIGINT, supervisor.stop)
    signal.signal(signal.SIGTERM, supervisor.stop)
    return supervisor.run()


def _stop_with_parent(parent: int, stop: Callable[[], None]) -> None:
    # A copy started by a supervisor finishes and exits if the supervisor dies without stopping it.
    # The supervisor's pid comes on the command line: one that died while this copy was still
    # starting has already left it to another parent.

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        stop()

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _print_event(event: ScaleEvent) -> None:
    console.print(f"[cyan]{event.replicas} worker process(es)[/]: {event.reason} (lag {event.lag})")


def _serve_chain(settings: Settings, ref: str, metrics_port: int | None) -> None:
    from inferstream.serving.chain import ChainRunner
    from inferstream.serving.repository import ModelRepository

    chain = ModelRepository(settings.models_dir).resolve_chain(ref)
    metrics = exported_metrics(settings, metrics_port)
    runner = ChainRunner(settings, chain, metrics=metrics)
    signal.signal(signal.SIGINT, lambda signum, frame: runner.stop())
    signal.signal(signal.SIGTERM, lambda signum, frame: runner.stop())
    for worker in runner.workers:
        console.print(
            f"serving {chain.config.ref} step {worker.config.ref}: {worker.request_topic} → {worker.output_topic}"
        )
    settle()
    stats = runner.run()
    console.print(
        f"served {stats.requests} requests: {stats.predictions} predictions, {stats.dead_letters} dead letters"
    )
