"""``inferstream job backfill|score|export|replay|reference``: batch jobs on Apache Beam.

Options the command does not know are Beam pipeline options, passed through
(``--runner FlinkRunner --flink_master=host:8081``, ``--direct_num_workers 2``);
with a list of input files, they come after the files. ``--runner dask`` runs the
job on a ``dask.distributed`` cluster: ``--dask-address HOST:PORT`` of a running
scheduler, or a local cluster of ``--dask-workers N`` processes (default 2).
Beam is imported when a job runs, not when the CLI starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from inferstream.cli._app import app
from inferstream.cli._common import console, parse_pairs, settings_of

if TYPE_CHECKING:
    from inferstream.jobs._pipeline import JobResult

job_app = typer.Typer(
    help="Batch jobs on Apache Beam (FnApiRunner here; --runner dask [--dask-address HOST:PORT | --dask-workers N]; "
    "other runners through Beam's --runner).",
    no_args_is_help=True,
)
app.add_typer(job_app, name="job")

# Unknown options go to Beam: typer leaves them in ctx.args.
_PASS_THROUGH: dict[str, Any] = {"allow_extra_args": True, "ignore_unknown_options": True}
Format = Annotated[str | None, typer.Option("--format", help="jsonl, csv or parquet (default: by suffix).")]
DeadLetters = Annotated[
    bool, typer.Option("--dead-letters", help="Also send rejected rows to the dead-letter topic (needs Kafka).")
]


def _split(values: list[Path], ctx: typer.Context) -> tuple[list[Path], list[str]]:
    """Input files, and the Beam options given after them.

    Unknown options land in a variadic argument in the order given: the files are what
    comes before the first one, and everything from there on goes to Beam.
    """
    texts = [str(v) for v in values]
    first = next((i for i, t in enumerate(texts) if t.startswith("-")), len(texts))
    if first == 0:
        raise typer.BadParameter("give the input files before any Beam option")
    return [Path(t) for t in texts[:first]], [*texts[first:], *ctx.args]


def _report(result: JobResult) -> None:
    rate = result.rows_in / result.elapsed_s if result.elapsed_s else 0.0
    console.print(
        f"{result.name}: read {result.rows_in}, written {result.rows_out}, rejected {result.rejected} "
        f"in {result.elapsed_s:.1f}s ({rate:,.0f} rows/s) → {', '.join(map(str, result.outputs))}"
    )
    if result.checksum is not None:
        console.print(f"checksum {result.checksum} (rows:digest, the same on every runner)")
    if result.indexed is not None:
        console.print(f"{result.indexed} documents written to the vector index")
    if result.expired:
        console.print(
            f"[yellow]{result.expired} records were deleted by the broker before they were read "
            "(the topic's retention.ms passed their timestamps, or delete-records): they are not in the output[/]"
        )
    for warning in result.warnings:
        console.print(f"[yellow]{warning}[/]")
    if result.rejected and result.rejects_path is not None:
        console.print(f"rejected rows with their reasons: {result.rejects_path}")


@job_app.command("backfill", context_settings=_PASS_THROUGH)
def backfill(
    ctx: typer.Context,
    corpus: Annotated[list[Path], typer.Argument(help="Corpus files (Parquet, JSONL, CSV) with a text field.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Parquet file of the embeddings.")],
    model: Annotated[str, typer.Option("--model", "-m", help="Embedder NAME[:VERSION].")] = "minilm:1",
    to: Annotated[
        str, typer.Option("--to", help="parquet, or index: also load the vectors into the configured vector index.")
    ] = "parquet",
    file_format: Format = None,
    dead_letters: DeadLetters = False,
) -> None:
    """Embed a corpus with the ONNX embedder into Parquet."""
    from inferstream.jobs.backfill import backfill as run_backfill

    if to not in ("parquet", "index"):
        raise typer.BadParameter(f"--to is parquet or index, not {to!r}")
    settings = settings_of(ctx)
    target: Any = to
    files, flags = _split(corpus, ctx)
    _report(
        run_backfill(
            settings,
            files,
            out,
            model=model,
            to=target,
            flags=flags,
            file_format=file_format,
            dead_letters=dead_letters,
        )
    )


@job_app.command("score", context_settings=_PASS_THROUGH)
def score(
    ctx: typer.Context,
    inputs: Annotated[list[Path], typer.Argument(help="Files of rows (Parquet, JSONL, CSV).")],
    model: Annotated[str, typer.Option("--model", "-m", help="Model NAME[:VERSION].")],
    table_dir: Annotated[Path | None, typer.Option("--table-dir", help="Inference table (default: settings).")] = None,
    file_format: Format = None,
    dead_letters: DeadLetters = False,
) -> None:
    """Score rows with a model into the inference table (`inferstream table query` reads them)."""
    from inferstream.jobs.score import score as run_score

    settings = settings_of(ctx)
    files, flags = _split(inputs, ctx)
    _report(
        run_score(
            settings,
            files,
            model=model,
            table_dir=table_dir,
            flags=flags,
            file_format=file_format,
            dead_letters=dead_letters,
        )
    )


@job_app.command("export", context_settings=_PASS_THROUGH)
def export(
    ctx: typer.Context,
    topic: Annotated[str, typer.Argument(help="Topic: a platform name (predictions) or a full name.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Parquet file of the records.")],
    since: Annotated[str | None, typer.Option("--since", help="From this record time (ISO 8601).")] = None,
    offsets: Annotated[
        list[str] | None, typer.Option("--offset", help="PARTITION=OFFSET to start from (repeatable).")
    ] = None,
) -> None:
    """Write a topic from a start (beginning, --since, --offset) to its end offsets now into Parquet."""
    from inferstream.jobs.topics import export_topic
    from inferstream.monitoring.table import parse_time

    settings = settings_of(ctx)
    pairs = parse_pairs(offsets or [], what="--offset")
    try:
        starts = {int(p): int(o) for p, o in pairs.items()}
    except ValueError:
        raise typer.BadParameter("--offset expects PARTITION=OFFSET, both numbers") from None
    _report(export_topic(settings, topic, out, since=parse_time(since), start_offsets=starts, flags=ctx.args))


@job_app.command("replay", context_settings=_PASS_THROUGH)
def replay(
    ctx: typer.Context,
    inputs: Annotated[list[Path], typer.Argument(help="Parquet files of `inferstream job export`.")],
    topic: Annotated[str, typer.Option("--topic", "-t", help="Topic to produce to (platform or full name).")],
    rate: Annotated[float | None, typer.Option("--rate", help="Records a second at most (per worker).")] = None,
    keep_partitions: Annotated[
        bool, typer.Option("--keep-partitions", help="Produce to each record's original partition.")
    ] = False,
) -> None:
    """Produce exported records to a topic with their keys, headers and timestamps."""
    from inferstream.jobs.topics import replay as run_replay

    settings = settings_of(ctx)
    files, flags = _split(inputs, ctx)
    _report(run_replay(settings, files, topic, rate=rate, keep_partitions=keep_partitions, flags=flags))


@job_app.command("reference", context_settings=_PASS_THROUGH)
def reference(
    ctx: typer.Context,
    monitor: Annotated[str, typer.Argument(help="Monitor name (declared in the settings).")],
    inputs: Annotated[list[Path], typer.Argument(help="Parquet files of predictions (inference table, exports).")],
) -> None:
    """Build the monitor's next drift reference from Parquet predictions."""
    from inferstream.jobs.reference import build

    settings = settings_of(ctx)
    files, flags = _split(inputs, ctx)
    built = build(settings, monitor, files, flags=flags)
    console.print(f"reference {built.path} from {built.count} predictions: columns {', '.join(built.profiles)}")
