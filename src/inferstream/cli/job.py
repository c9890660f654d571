"""``inferstream job backfill|score|export|replay|reference``: batch jobs on Apache Beam.

Options the command does not know are Beam pipeline options, passed through
(``--runner FlinkRunner --flink_master=host:8081``, ``--direct_num_workers 2``).
Beam is imported when a job runs, not when the CLI starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from inferstream.cli._app import app
from inferstream.cli._common import console, settings_of

if TYPE_CHECKING:
    from inferstream.jobs._pipeline import JobResult

job_app = typer.Typer(
    help="Batch jobs on Apache Beam (FnApiRunner here; other runners through Beam's --runner).",
    no_args_is_help=True,
)
app.add_typer(job_app, name="job")

# Unknown options go to Beam: typer leaves them in ctx.args.
_PASS_THROUGH: dict[str, Any] = {"allow_extra_args": True, "ignore_unknown_options": True}
Format = Annotated[str | None, typer.Option("--format", help="jsonl, csv or parquet (default: by suffix).")]


def _report(result: JobResult) -> None:
    rate = result.rows_in / result.elapsed_s if result.elapsed_s else 0.0
    console.print(
        f"{result.name}: read {result.rows_in}, written {result.rows_out}, rejected {result.rejected} "
        f"in {result.elapsed_s:.1f}s ({rate:,.0f} rows/s) → {', '.join(map(str, result.outputs))}"
    )
    if result.rejected and result.rejects_path is not None:
        console.print(f"rejected rows with their reasons: {result.rejects_path}")


@job_app.command("backfill", context_settings=_PASS_THROUGH)
def backfill(
    ctx: typer.Context,
    corpus: Annotated[list[Path], typer.Argument(help="Corpus files (Parquet, JSONL, CSV) with a text field.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Parquet file of the embeddings.")],
    model: Annotated[str, typer.Option("--model", "-m", help="Embedder NAME[:VERSION].")] = "minilm:1",
    to: Annotated[str, typer.Option("--to", help="parquet (index: coming with the vector index sink).")] = "parquet",
    file_format: Format = None,
) -> None:
    """Embed a corpus with the ONNX embedder into Parquet."""
    from inferstream.jobs.backfill import backfill as run_backfill

    if to not in ("parquet", "index"):
        raise typer.BadParameter(f"--to is parquet or index, not {to!r}")
    settings = settings_of(ctx)
    target: Any = to
    _report(run_backfill(settings, corpus, out, model=model, to=target, flags=ctx.args, file_format=file_format))


@job_app.command("score", context_settings=_PASS_THROUGH)
def score(
    ctx: typer.Context,
    inputs: Annotated[list[Path], typer.Argument(help="Files of rows (Parquet, JSONL, CSV).")],
    model: Annotated[str, typer.Option("--model", "-m", help="Model NAME[:VERSION].")],
    table_dir: Annotated[Path | None, typer.Option("--table-dir", help="Inference table (default: settings).")] = None,
    file_format: Format = None,
) -> None:
    """Score rows with a model into the inference table (`inferstream table query` reads them)."""
    from inferstream.jobs.score import score as run_score

    settings = settings_of(ctx)
    _report(run_score(settings, inputs, model=model, table_dir=table_dir, flags=ctx.args, file_format=file_format))
