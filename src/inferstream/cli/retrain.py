"""``inferstream models retrain``: a new version from the inference table's labelled rows, run as a shadow."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from inferstream.cli._common import console, settings_of
from inferstream.cli.models import METRICS, MinLabelled, models_app, print_decision

if TYPE_CHECKING:
    from inferstream.config import Settings
    from inferstream.jobs.retrain import Retrained
    from inferstream.schemas.records import Route
    from inferstream.serving.promotion import Decision


@models_app.command("retrain")
def retrain_(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="A tabular classifier or regressor of the repository.")],
    from_table: Annotated[
        Path | None,
        typer.Option("--from-table", help="The inference table (default: monitoring.table_dir or <state_dir>/table)."),
    ] = None,
    since: Annotated[str | None, typer.Option(help="Predictions from this time (ISO 8601, inclusive).")] = None,
    until: Annotated[str | None, typer.Option(help="... up to this time (exclusive).")] = None,
    seed: Annotated[int, typer.Option(help="The split's and the estimator's seed: same rows + seed, same bytes.")] = 0,
    holdout: Annotated[float, typer.Option(help="Share of the labelled rows held out for the metrics.")] = 0.2,
    min_rows: Annotated[int, typer.Option("--min-rows", help="Fewest usable labelled rows to train on.", min=2)] = 30,
    source: Annotated[str | None, typer.Option("--source", help="The version retrained (default: the latest).")] = None,
    estimator: Annotated[
        str | None,
        typer.Option(
            help="Estimator family (default: the source version's): logistic_regression, "
            "gradient_boosting (classifiers); gradient_boosting, ridge (regressors)."
        ),
    ] = None,
    no_shadow: Annotated[
        bool, typer.Option("--no-shadow", help="Register the version only: no shadow in the route.")
    ] = False,
    promote_if_better: Annotated[
        str | None,
        typer.Option(
            "--promote-if-better",
            metavar="METRIC",
            help="Serve the shadow here until --min-labelled of its predictions have labels, then promote it "
            f"if its METRIC beats the primary's ({METRICS}).",
        ),
    ] = None,
    min_labelled: MinLabelled = 100,
    wait: Annotated[
        float, typer.Option(help="--promote-if-better: seconds to wait for them before giving up.", min=1)
    ] = 3600.0,
    poll: Annotated[float, typer.Option(help="--promote-if-better: seconds between comparisons.", min=0.5)] = 10.0,
) -> None:
    """Train a new version of a tabular model from the inference table's labelled rows, and shadow it.

    The new version keeps the model's interface and estimator family, is registered as the next
    version with its lineage in model.toml (window, rows, data sha256, held-out metrics), and
    becomes a shadow in the model's route: `inferstream serve --model NAME:V --shadow` runs it,
    or --promote-if-better runs it here and promotes it only if it beats the primary on labels.
    """
    from inferstream.errors import ConfigError
    from inferstream.evaluation.quality import check_metric
    from inferstream.jobs.retrain import STEPS, RetrainOptions, retrain
    from inferstream.monitoring.table import parse_time, table_dir
    from inferstream.serving.promotion import primary_of
    from inferstream.serving.repository import ModelRepository

    settings = settings_of(ctx)
    if promote_if_better is not None and no_shadow:
        raise ConfigError("--promote-if-better runs the new version as a shadow: drop --no-shadow")
    if promote_if_better is not None:
        kind = ModelRepository(settings.models_dir).get(name, source).config.kind
        check_metric(promote_if_better, kind)
    options = RetrainOptions(
        table=from_table or table_dir(settings),
        since=parse_time(since),
        until=parse_time(until),
        seed=seed,
        holdout=holdout,
        min_rows=min_rows,
        source_version=source,
        estimator=estimator,
    )
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"))
    with Progress(*columns, TimeElapsedColumn(), console=console, transient=True) as progress:
        task = progress.add_task("retraining", total=len(STEPS))

        def on_step(step: str) -> None:
            progress.update(task, description=f"{name}: {step}", completed=STEPS.index(step))

        done = retrain(settings.models_dir, name, options, on_step)
        progress.update(task, completed=len(STEPS))
    _report(done)
    # Where a bare name went before: the highest version but the new one.
    primary = [v for v in ModelRepository(settings.models_dir).versions(name) if v != done.version.config.version][-1]
    if no_shadow:
        _no_shadow(settings, name, primary)
        return
    route = _shadow(settings, done, primary)
    if promote_if_better is not None:
        _trial(settings, done, primary_of(route, name), promote_if_better, min_labelled, wait, poll)


def _report(done: Retrained) -> None:
    lineage, data = done.lineage, done.data
    console.print(
        f"[green]registered[/] {done.version.config.ref} from {done.source.config.ref}: {lineage.estimator} "
        f"({done.family_reason}), seed {lineage.seed}, {lineage.rows} labelled rows "
        f"({lineage.train_rows} trained on, {lineage.holdout_rows} held out) from "
        f"{lineage.first_event_time.isoformat(timespec='seconds')} to "
        f"{lineage.last_event_time.isoformat(timespec='seconds')}; data sha256 {lineage.data_sha256[:16]}…"
    )
    for reason, count in sorted(data.skipped.items()):
        console.print(f"[yellow]skipped {count} labelled row(s)[/]: {reason}")
    table = Table(title=f"{done.version.config.ref} on the {lineage.holdout_rows} held-out rows")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for metric, value in lineage.metrics.items():
        table.add_row(metric, f"{value:.4f}")
    console.print(table)


def _no_shadow(settings: Settings, name: str, primary: str) -> None:
    from inferstream.serving.routes import pin

    pinned = pin(settings, name, primary)
    if pinned is not None:
        console.print(
            f"{name} had no route: it now sends all traffic to v{primary} (else a bare {name!r} would go to the "
            "new, highest version)"
        )
    console.print("no shadow (--no-shadow): the route is unchanged and nothing serves the new version")


def _shadow(settings: Settings, done: Retrained, primary: str) -> Route:
    from inferstream.serving.routes import add_shadow

    config = done.version.config
    route = add_shadow(settings, config.name, config.version, primary=primary)
    routed = [v.version for v in route.versions if v.weight > 0]
    topics = ", ".join(settings.topics.request_topic(config.name, v) for v in routed)
    group = settings.topics.worker_group(config.name, config.version, shadow=True)
    shadow_topic = settings.topics.platform_topics()["predictions-shadow"]
    console.print(
        f"route of {config.name}: {', '.join(f'v{v.version}={v.weight:g}' for v in route.versions)}; "
        f"shadow {', '.join('v' + s for s in route.shadow)}. A shadow worker of {config.ref} reads {topics} in "
        f"group {group} and writes only to {shadow_topic}; users never see it."
    )
    return route


def _trial(
    settings: Settings, done: Retrained, primary: str, metric: str, min_labelled: int, wait: float, poll: float
) -> None:
    from inferstream.serving.shadow_trial import shadow_trial

    config = done.version.config

    def show(decision: Decision) -> None:
        quality = decision.comparison.quality
        console.print(
            f"[dim]{decision.comparison.shadow_count} shadow predictions, "
            f"{quality.labelled if quality else 0}/{min_labelled} labelled[/]"
        )

    console.print(
        f"serving {config.ref} as a shadow here until {min_labelled} of its predictions have labels "
        f"(at most {wait:g} s; Ctrl-C stops)"
    )
    decision = shadow_trial(
        settings,
        done.version,
        primary=primary,
        metric=metric,
        min_labelled=min_labelled,
        wait_s=wait,
        poll_s=poll,
        on_poll=show,
    )
    print_decision(decision)
