"""``inferstream search "query" -k 10 [--hybrid] [--filter key=value]``: query the vector index."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from inferstream.cli._app import app
from inferstream.cli._common import out, parse_pairs, settings_of

_stdout = Console(highlight=False)


@app.command()
def search(
    ctx: typer.Context,
    query: Annotated[str, typer.Argument(help="What to look for (embedded with the index's model).")],
    k: Annotated[int, typer.Option("-k", help="How many hits.", min=1)] = 10,
    hybrid: Annotated[bool, typer.Option("--hybrid", help="Fuse kNN with BM25 on the text (RRF).")] = False,
    filters: Annotated[
        list[str] | None,
        typer.Option("--filter", "-f", help="FIELD=VALUE (id, model, version, attributes.KEY); repeatable."),
    ] = None,
    num_candidates: Annotated[
        int | None, typer.Option("--num-candidates", help="kNN candidates per shard (default: settings).", min=1)
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per hit on stdout.")] = False,
) -> None:
    """Search the vector index: Elasticsearch when elasticsearch.url is set, else the embedded store."""
    from inferstream.search import Searcher

    settings = settings_of(ctx)
    wanted: dict[str, list[str]] = {}
    for key, value in parse_pairs(filters or [], what="--filter").items():
        wanted.setdefault(key, []).append(value)
    with Searcher(settings) as searcher:
        result = searcher.search(query, k, filters=wanted, hybrid=hybrid, num_candidates=num_candidates)
    if as_json:
        for hit in result.hits:
            record: dict[str, Any] = asdict(hit)
            record["event_time"] = hit.event_time.isoformat() if hit.event_time else None
            out(json.dumps(record, ensure_ascii=False))
        return
    table = Table(title=None, box=None, pad_edge=False)
    for column in ("#", "id", "score", "text"):
        table.add_column(column)
    for rank, hit in enumerate(result.hits, start=1):
        text = (hit.text or "").replace("\n", " ")
        table.add_row(str(rank), escape(hit.id), f"{hit.score:.4f}", escape(text[:100]))
    _stdout.print(table)
    latency = result.latency
    kind = "hybrid (kNN + BM25, RRF)" if result.hybrid else "kNN"
    _stdout.print(
        f"{len(result.hits)} hits, {kind}, query embedded with {result.model}; "
        f"{latency.total_ms:.1f} ms (embed {latency.embed_ms:.1f} ms, search {latency.search_ms:.1f} ms)"
    )
