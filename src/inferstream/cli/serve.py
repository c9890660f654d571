"""``inferstream serve --model NAME:VERSION [--replicas N]``: inference workers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from types import FrameType
from typing import Annotated

import typer

from inferstream.cli._app import app
from inferstream.cli._common import console, settings_of
from inferstream.metrics import Metrics
from inferstream.serving.repository import ModelRepository
from inferstream.serving.worker import InferenceWorker


@app.command()
def serve(
    ctx: typer.Context,
    model: Annotated[str, typer.Option("--model", "-m", help="NAME[:VERSION] from the model repository.")],
    replicas: Annotated[
        int, typer.Option("--replicas", "-r", help="Worker processes (one consumer group).", min=1)
    ] = 1,
    metrics_port: Annotated[
        int | None, typer.Option("--metrics-port", help="Export Prometheus metrics on 127.0.0.1:PORT.")
    ] = None,
) -> None:
    """Serve a model version from its request topic until Ctrl-C (finishing what is queued)."""
    settings = settings_of(ctx)
    version = ModelRepository(settings.models_dir).resolve(model)
    if replicas > 1:
        raise typer.Exit(_replicas(ctx, version.config.ref, replicas))
    metrics = Metrics()
    port = metrics_port if metrics_port is not None else settings.metrics.port
    if port:
        console.print(f"metrics on http://{settings.metrics.host}:{metrics.serve(port, settings.metrics.host)}/metrics")
    worker = InferenceWorker(settings, version, metrics=metrics)

    def stop(signum: int, frame: FrameType | None) -> None:
        worker.stop()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    console.print(f"serving {version.config.ref} from {worker.request_topic} → {worker.output_topic}")
    stats = worker.run()
    console.print(
        f"served {stats.requests} requests: {stats.predictions} predictions, {stats.dead_letters} dead letters, "
        f"mean batch {stats.mean_batch_size:.1f}"
    )


def _replicas(ctx: typer.Context, ref: str, count: int) -> int:
    # One process per replica: one ONNX session each, sharing the request topic as a group.
    args = [sys.executable, "-m", "inferstream"]
    root = ctx.find_root().params
    if root.get("config"):
        args += ["--config", str(root["config"])]
    if root.get("bootstrap_servers"):
        args += ["--bootstrap-servers", str(root["bootstrap_servers"])]
    processes = [subprocess.Popen([*args, "serve", "--model", ref], env=os.environ.copy()) for _ in range(count)]

    def forward(signum: int, frame: FrameType | None) -> None:
        for process in processes:
            process.send_signal(signum)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    codes = [process.wait() for process in processes]
    return max(codes, key=abs)
