"""``inferstream models list|show|validate|build-demo|import|route|promote|compare``: the model repository.

``models retrain`` lives in :mod:`inferstream.cli.retrain`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from inferstream.cli._app import app
from inferstream.cli._common import console, out, settings_of

if TYPE_CHECKING:
    from inferstream.config import Settings
    from inferstream.schemas.records import Route
    from inferstream.serving.compare import Comparison
    from inferstream.serving.promotion import Decision
    from inferstream.serving.repository import ModelRepository

#: The metrics a promotion can be decided on.
METRICS = "accuracy, f1, auc, log_loss; mae, rmse, r2"
MinLabelled = Annotated[
    int,
    typer.Option(
        "--min-labelled", help="Labelled requests both the primary and the shadow answered, needed to decide.", min=1
    ),
]

models_app = typer.Typer(help="The ONNX model repository.", no_args_is_help=True)
app.add_typer(models_app, name="models")


def _repository(ctx: typer.Context) -> ModelRepository:
    from inferstream.serving.repository import ModelRepository

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
    for chain in repository.all_chains():
        steps = " → ".join(step.config.ref for step in chain.steps)
        first = chain.steps[0].config.preprocessing.type
        table.add_row(chain.config.ref, "chain", first, "predictions", steps, chain.config.description)
    console.print(table)
    if not repository.names():
        console.print("no models yet: `inferstream models build-demo` builds the demo models")


@models_app.command("show")
def show(ctx: typer.Context, ref: Annotated[str, typer.Argument(help="NAME[:VERSION] (latest by default).")]) -> None:
    """A model or chain version's configuration, as JSON."""
    repository = _repository(ctx)
    found = repository.resolve_chain(ref) if repository.is_chain(ref) else repository.resolve(ref)
    out(found.config.model_dump_json(indent=2))
    console.print(f"[dim]{found.directory}[/]")


@models_app.command("validate")
def validate(
    ctx: typer.Context,
    ref: Annotated[str | None, typer.Argument(help="NAME[:VERSION]; every model and chain when left out.")] = None,
) -> None:
    """Load a model, check its declared inputs/outputs against the graph, run one dummy batch.

    A chain: every step exists and validates, and each step's outputs feed the next step's inputs.
    """
    from inferstream.serving.chain import validate_chain
    from inferstream.serving.onnx import OnnxModel

    repository = _repository(ctx)
    if ref is None:
        versions, chains = repository.all(), repository.all_chains()
    elif repository.is_chain(ref):
        versions, chains = [], [repository.resolve_chain(ref)]
    else:
        versions, chains = [repository.resolve(ref)], []
    for version in versions:
        report = OnnxModel(version).validate()
        console.print(
            f"[green]ok[/] {report.ref}: providers {', '.join(report.providers)}; "
            f"dummy batch of {report.batch_size} in {report.latency_ms:.2f} ms; outputs "
            + ", ".join(f"{name} {shape}" for name, shape in report.output_shapes.items())
        )
    for chain in chains:
        validate_chain(chain)
        steps = " → ".join(step.config.ref for step in chain.steps)
        console.print(f"[green]ok[/] {chain.config.ref} (chain): {steps}; each step's outputs feed the next")


@models_app.command("build-demo")
def build_demo(
    ctx: typer.Context,
    reference: Annotated[
        Path | None,
        typer.Option(
            "--reference",
            help="Also write the classifier's data set here as Parquet, a drift monitor's reference "
            "(`inferstream monitor reference NAME --parquet FILE`).",
        ),
    ] = None,
) -> None:
    """Build the demo models into the repository (reproducibly: same files, same sha256)."""
    from inferstream.serving.demo_models import build_demo_models, write_tabular_reference

    root = settings_of(ctx).models_dir
    with console.status(f"building the demo models into {root} ..."):
        files = build_demo_models(root)
        if reference is not None:
            files.append(write_tabular_reference(reference))
    for built in files:
        out(f"{built.sha256}  {built.path}")


def _route_line(route: Route) -> str:
    total = sum(v.weight for v in route.versions)
    split = ", ".join(f"v{v.version}={v.weight / total:.0%}" for v in route.versions)
    shadow = f"; shadow {', '.join('v' + s for s in route.shadow)}" if route.shadow else ""
    return f"{route.model}: {split}{shadow}"


@models_app.command("route")
def route(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Model name (the alias requests use).")],
    weights: Annotated[str, typer.Option("--weights", "-w", help="Versions and weights: v1=90,v2=10.")],
    shadow: Annotated[list[str] | None, typer.Option("--shadow", help="A shadow version (repeatable).")] = None,
) -> None:
    """Route a model's requests to versions by weight (takes effect at once, no restarts)."""
    from inferstream.serving.routes import parse_weights, set_route

    settings = settings_of(ctx)
    repository = _repository(ctx)
    known = repository.versions(name) or repository.chain_versions(name)
    shadows = [s.removeprefix("v") for s in shadow or []]
    new = set_route(settings, name, parse_weights(weights), shadow=shadows, known_versions=known)
    console.print(f"[green]route set[/] {_route_line(new)}")


@models_app.command("promote")
def promote_(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Model name.")],
    version: Annotated[
        str | None,
        typer.Argument(help="The version that gets all the traffic (with --if-better: default the route's shadow)."),
    ] = None,
    if_better: Annotated[
        str | None,
        typer.Option(
            "--if-better",
            metavar="METRIC",
            help=f"Only if the shadow's METRIC beats the primary's on labelled requests both answered ({METRICS}).",
        ),
    ] = None,
    min_labelled: MinLabelled = 100,
) -> None:
    """Send all of a model's traffic to one version (the previous route is kept for rollback).

    With --if-better, only a shadow that beats the primary on METRIC, over at least --min-labelled
    labelled requests both versions answered (labels from the labels topic); it says why or why not.
    """
    from inferstream.errors import ConfigError
    from inferstream.serving.promotion import promote_if_better
    from inferstream.serving.routes import promote

    settings = settings_of(ctx)
    chosen = version.removeprefix("v") if version else None
    if if_better is not None:
        decision = promote_if_better(settings, name, chosen, if_better, min_labelled)
        print_decision(decision)
        if decision.route is not None:
            console.print(f"[green]promoted[/] {_route_line(decision.route)}")
        return
    if chosen is None:
        raise ConfigError("name the version to promote (or ask --if-better METRIC for the route's shadow)")
    new = promote(settings, name, chosen)
    console.print(f"[green]promoted[/] {_route_line(new)}")


def _comparison_table(result: Comparison) -> Table:
    table = Table(title=f"{result.model}: v{result.primary} (primary) against v{result.shadow} (shadow)")
    table.add_column("")
    table.add_column("value")
    for row in result.rows():
        table.add_row(*row)
    return table


def print_decision(decision: Decision) -> None:
    """A promote-if-better decision: the comparison it was made on, and why."""
    console.print(_comparison_table(decision.comparison))
    console.print(f"[{'green' if decision.promote else 'yellow'}]{decision.reason}[/]")


@models_app.command("rollback")
def rollback_(ctx: typer.Context, name: Annotated[str, typer.Argument(help="Model name.")]) -> None:
    """Restore the route before the current one."""
    from inferstream.serving.routes import rollback

    new = rollback(settings_of(ctx), name)
    console.print(f"[yellow]rolled back[/] {_route_line(new)}")


@models_app.command("routes")
def routes(ctx: typer.Context) -> None:
    """Every model's current route."""
    from inferstream.serving.routes import read_routes

    table = Table(title="routes")
    for column in ("model", "versions", "shadow", "previous", "set at"):
        table.add_column(column)
    for model, current in sorted(read_routes(settings_of(ctx)).items()):
        table.add_row(
            model,
            ", ".join(f"v{v.version}={v.weight:g}" for v in current.versions),
            ", ".join(current.shadow),
            ", ".join(f"v{v.version}={v.weight:g}" for v in current.previous or []),
            current.event_time.isoformat(timespec="seconds"),
        )
    console.print(table)


@models_app.command("compare")
def compare_(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Model name.")],
    primary: Annotated[str, typer.Argument(help="The version users see.")],
    shadow: Annotated[str, typer.Argument(help="The shadow version.")],
) -> None:
    """Agreement and latency of a shadow version against the primary, on the same requests.

    Where labels came for those requests (the labels topic), both versions' quality on the same
    labelled requests: accuracy, F1, AUC and log loss (classifiers), MAE, RMSE and R² (regressors).
    """
    from inferstream.serving.compare import compare

    result = compare(settings_of(ctx), name, primary.removeprefix("v"), shadow.removeprefix("v"))
    console.print(_comparison_table(result))


@models_app.command("import")
def import_(
    ctx: typer.Context,
    uri: Annotated[str, typer.Argument(help="models:/NAME/VERSION or models:/NAME@ALIAS in the MLflow registry.")],
    name: Annotated[
        str | None, typer.Option("--name", help="Name in the repository (default: the registered name).")
    ] = None,
    version: Annotated[
        str | None, typer.Option("--version", help="Version to create (default: the next number).")
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", help="model.toml of the new version (default: the name's latest version's)."),
    ] = None,
    tracking_uri: Annotated[
        str | None, typer.Option("--tracking-uri", help="MLflow tracking URI (default: registry.tracking_uri).")
    ] = None,
    watch: Annotated[
        bool,
        typer.Option("--watch", help="Follow the alias: import each new version, shadow it, then route --canary."),
    ] = False,
    canary: Annotated[
        float, typer.Option("--canary", help="--watch: percent of the traffic a shadowed version gets.", min=0.1)
    ] = 10.0,
    after: Annotated[
        int, typer.Option("--after", help="--watch: shadow predictions (with no dead letter) before routing.", min=1)
    ] = 100,
    poll: Annotated[float, typer.Option("--poll", help="--watch: seconds between looks at the alias.", min=0.5)] = 10.0,
) -> None:
    """Bring an ONNX model from an MLflow registry into the repository as a new version, validated.

    Its lineage (registry URI, registered version, alias, run id, sha256) goes under [source]
    in the new version's model.toml. A model that does not validate is refused with the reason.
    With --watch, follows the alias until Ctrl-C: each new version is imported, served as a
    shadow of the routed versions, and after --after shadow predictions with no dead letter
    served here and given --canary percent of the traffic.
    """
    from inferstream.serving.registry import import_model

    settings = settings_of(ctx)
    if tracking_uri:
        registry = settings.registry.model_copy(update={"tracking_uri": tracking_uri})
        settings = settings.model_copy(update={"registry": registry})
    if watch:
        _watch(settings, uri, name, canary, after, poll)
        return
    with console.status(f"importing {uri} ..."):
        imported = import_model(settings, uri, name=name, version=version, config_file=config)
    source, report = imported.source, imported.report
    console.print(
        f"[green]imported[/] {imported.version.config.ref} from {source.uri} (registered version "
        f"{source.registered_version}, run {source.run_id or '-'}): validated, dummy batch of "
        f"{report.batch_size} in {report.latency_ms:.2f} ms"
    )
    out(f"{source.sha256}  {imported.version.onnx_path}")


def _watch(settings: Settings, uri: str, name: str | None, canary: float, after: int, poll: float) -> None:
    import signal

    from inferstream.serving.registry import RegistryRef
    from inferstream.serving.registry_watch import RegistryWatch

    watch = RegistryWatch(
        settings,
        uri,
        name=name or RegistryRef.parse(uri).name,
        canary=canary,
        shadow_predictions=after,
        poll_s=poll,
    )
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: watch.stop())
    console.print(f"watching {uri} every {poll:g} s (Ctrl-C stops)")
    watch.run()
    for event in watch.events:
        console.print(f"{event.kind} registered version {event.version}: {event.detail}")
