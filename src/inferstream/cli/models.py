"""``inferstream models list|show|validate|build-demo``: the model repository."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from inferstream.cli._app import app
from inferstream.cli._common import console, out, settings_of
from inferstream.serving.demo_models import build_demo_models
from inferstream.serving.onnx import OnnxModel
from inferstream.serving.repository import ModelRepository

models_app = typer.Typer(help="The ONNX model repository.", no_args_is_help=True)
app.add_typer(models_app, name="models")


def _repository(ctx: typer.Context) -> ModelRepository:
    return ModelRepository(settings_of(ctx).models_dir)


@models_app.command("list")
def list_(ctx: typer.Context) -> None:
    """Every model version in the repository."""
    repository = _repository(ctx)
    table = Table(title=f"models in {repository.root}")
    for column in ("model", "kind", "inputs", "output topic", "providers", "description"):
        table.add_column(column)
    for version in repository.all():
        c = version.config
        table.add_row(
            c.ref, c.kind, c.preprocessing.type, c.output_topic, ", ".join(c.runtime.providers), c.description
        )
    console.print(table)
    if not repository.names():
        console.print("no models yet: `inferstream models build-demo` builds the demo models")


@models_app.command("show")
def show(ctx: typer.Context, ref: Annotated[str, typer.Argument(help="NAME[:VERSION] (latest by default).")]) -> None:
    """A model version's configuration, as JSON."""
    version = _repository(ctx).resolve(ref)
    out(version.config.model_dump_json(indent=2))
    console.print(f"[dim]{version.directory}[/]")


@models_app.command("validate")
def validate(
    ctx: typer.Context,
    ref: Annotated[str | None, typer.Argument(help="NAME[:VERSION]; every model when left out.")] = None,
) -> None:
    """Load a model, check its declared inputs/outputs against the graph, run one dummy batch."""
    repository = _repository(ctx)
    versions = [repository.resolve(ref)] if ref else repository.all()
    for version in versions:
        report = OnnxModel(version).validate()
        console.print(
            f"[green]ok[/] {report.ref}: providers {', '.join(report.providers)}; "
            f"dummy batch of {report.batch_size} in {report.latency_ms:.2f} ms; outputs "
            + ", ".join(f"{name} {shape}" for name, shape in report.output_shapes.items())
        )


@models_app.command("build-demo")
def build_demo(ctx: typer.Context) -> None:
    """Build the demo models into the repository (reproducibly: same files, same sha256)."""
    root = settings_of(ctx).models_dir
    with console.status(f"building the demo models into {root} ..."):
        files = build_demo_models(root)
    for built in files:
        out(f"{built.sha256}  {built.path}")
