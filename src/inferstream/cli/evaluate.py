"""``inferstream eval retrieval`` and ``eval build-queries``: how well the vector index retrieves.

``retrieval`` runs labelled queries (JSONL: question, relevant ids; the query set over the
demo corpus when none are given) on the index ``inferstream search`` uses, in kNN and/or
hybrid mode, and on exact search over the same vectors, and prints recall@k, MRR@k and
nDCG@k of both, with the share of exact search's top k the index found.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from inferstream.cli._app import app
from inferstream.cli._common import client_of, console, out

if TYPE_CHECKING:
    from inferstream._client.retrieval_eval import RetrievalReport

eval_app = typer.Typer(help="Evaluate the platform's answers against labelled data.", no_args_is_help=True)
app.add_typer(eval_app, name="eval")

_MODES = {"knn": ("knn",), "hybrid": ("hybrid",), "both": ("knn", "hybrid")}


def _cuts(values: list[str]) -> list[int]:
    cuts = []
    for value in values:
        for part in value.split(","):
            try:
                cut = int(part)
            except ValueError:
                raise typer.BadParameter(f"--k expects whole numbers like 1,5,10, got {part.strip()!r}") from None
            if cut < 1:
                raise typer.BadParameter(f"--k values must be at least 1, got {cut}")
            cuts.append(cut)
    return sorted(set(cuts))


def _pair(index: float, exact: float) -> str:
    return f"{index:.3f} / {exact:.3f}"


def _table(report: RetrievalReport) -> Table:
    table = Table(
        title=(
            f"{report.queries} queries on {report.documents} documents, {escape(report.store)} "
            f"({report.model}, {report.similarity}); index / exact search"
        ),
        title_justify="left",
    )
    for column in ("mode", "k", "recall@k", "MRR@k", "nDCG@k", "of exact top-k", "mean score@k"):
        table.add_column(column, justify="left" if column == "mode" else "right")
    for result in report.modes:
        for index, exact in zip(result.index, result.exact, strict=True):
            score = "-" if index.score is None or exact.score is None else _pair(index.score, exact.score)
            table.add_row(
                result.mode,
                str(index.k),
                _pair(index.recall, exact.recall),
                _pair(index.mrr, exact.mrr),
                _pair(index.ndcg, exact.ndcg),
                f"{index.exact_recall:.3f}",
                score,
            )
    return table


@eval_app.command()
def retrieval(
    ctx: typer.Context,
    queries: Annotated[
        Path | None,
        typer.Option(
            "--queries",
            "-q",
            help="JSONL of {question, relevant: [ids]} (default: the query set over the demo corpus).",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    k: Annotated[list[str] | None, typer.Option("--k", "-k", help="Cut-offs, e.g. 1,5,10 (repeatable).")] = None,
    mode: Annotated[str, typer.Option("--mode", "-m", help="knn, hybrid or both.")] = "knn",
    num_candidates: Annotated[
        int | None, typer.Option("--num-candidates", help="kNN candidates per shard (default: settings).", min=1)
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON result instead of the table.")] = False,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Also write the JSON result here.")] = None,
) -> None:
    """Recall@k, MRR and nDCG@k of the vector index (as `inferstream search` finds it) and of exact search."""
    from inferstream.evaluation.queries import parse_queries, shipped_queries

    if mode not in _MODES:
        raise typer.BadParameter(f"--mode expects knn, hybrid or both, got {mode!r}")
    cuts = _cuts(k or ["1,5,10"])
    labelled = parse_queries(queries) if queries is not None else shipped_queries()
    with client_of(ctx) as client:
        report = client.evaluate_retrieval(labelled, k=cuts, modes=_MODES[mode], num_candidates=num_candidates)
    result = json.dumps(report.to_dict(), ensure_ascii=False, indent=2)
    if output is not None:
        output.write_text(result + "\n", encoding="utf-8")
    if report.missing_relevant:
        shown = ", ".join(report.missing_relevant[:5])
        console.print(
            f"[yellow]warning:[/] {len(report.missing_relevant)} relevant ids are not in the index "
            f"({escape(shown)}{', ...' if len(report.missing_relevant) > 5 else ''}): "
            "were the queries written for another corpus?"
        )
    if as_json:
        out(result)
    else:
        from rich.console import Console

        Console(highlight=False).print(_table(report))


@eval_app.command("build-queries")
def build_queries(
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write here (default: stdout).")] = None,
    passages: Annotated[int, typer.Option("--passages", help="Ask about the first N demo passages.", min=1)] = 500,
    count: Annotated[int, typer.Option("--count", "-n", help="How many queries.", min=1)] = 60,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the passage and sentence choice.")] = 17,
) -> None:
    """Build the labelled query set over the demo corpus (the one shipped in the package, by default)."""
    from inferstream.demo import demo_queries
    from inferstream.evaluation.queries import query_lines

    try:
        queries = demo_queries(passages=passages, count=count, seed=seed)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    text = "".join(line + "\n" for line in query_lines(queries))
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        console.print(f"{len(queries)} queries written to {escape(str(output))}")
