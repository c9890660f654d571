"""Contract validation throughput (no broker): dicts one by one and in batches, JSON bytes, encoding.

For each contract and size: ``codec.validate(dict)`` per record, ``codec.validate_batch(list)``
in batches of 2,000 (what ``Client.produce`` does), ``codec.decode(bytes)`` per record (JSON
validated straight into a record) and ``codec.encode(record)``, against the baseline
``json.loads`` of the same bytes, which parses but checks nothing. Each figure is the best of
a few repeats; results are dropped as they come, like the SDK does.

    .venv/bin/python benchmarks/validation.py --quick
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.table import Table

from _harness import result_line
from _records import embeddings, events, predictions
from inferstream.schemas import Contract, Embedding, Event, Prediction, codec_for

BATCH = 2_000  # Client.produce validates this many records per call


@dataclass(frozen=True, slots=True)
class Case:
    name: str
    contract: type[Contract]
    make: Callable[[int], list[dict[str, Any]]]


CASES = (
    Case("event_200b", Event, lambda n: events(n, 200)),
    Case("event_2kb", Event, lambda n: events(n, 2048)),
    Case("prediction", Prediction, predictions),
    Case("embedding", Embedding, lambda n: embeddings(n, 384)),
)
OPS = ("validate", "validate_batch", "decode", "encode", "json.loads")


def best_seconds(run: Callable[[], object], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best


def measure(case: Case, count: int, repeats: int) -> tuple[int, dict[str, float]]:
    """Mean encoded size and seconds per record of each operation."""
    codec = codec_for(case.contract)
    dicts = case.make(count)
    records = codec.validate_batch(dicts).records
    data = [codec.encode(r) for r in records]
    batches = [dicts[i : i + BATCH] for i in range(0, len(dicts), BATCH)]
    validate, validate_batch, decode, encode = codec.validate, codec.validate_batch, codec.decode, codec.encode
    loads = json.loads

    def one_by_one() -> None:
        for value in dicts:
            validate(value)

    def in_batches() -> None:
        for batch in batches:
            validate_batch(batch)

    def from_json() -> None:
        for raw in data:
            decode(raw)

    def to_json() -> None:
        for record in records:
            encode(record)

    def baseline() -> None:
        for raw in data:
            loads(raw)

    runs = dict(zip(OPS, (one_by_one, in_batches, from_json, to_json, baseline), strict=True))
    per_record = {op: best_seconds(run, repeats) / count for op, run in runs.items()}
    return sum(map(len, data)) // count, per_record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="Fewer records and repeats: a few seconds.")
    args = parser.parse_args()
    count, repeats = (5_000, 3) if args.quick else (50_000, 5)

    console = Console()
    if not console.is_terminal:
        console.width = 120
    mode = "quick" if args.quick else "full"
    table = Table(title=f"Contract validation, {count:,} records, best of {repeats} ({mode}, {os.cpu_count()} CPUs)")
    for column in ("case", "bytes/rec", "operation", "records/s", "µs/record", "vs json.loads"):
        table.add_column(column, justify="left" if column in ("case", "operation") else "right")
    metrics: dict[str, float] = {}
    for case in CASES:
        size, per_record = measure(case, count, repeats)
        baseline = per_record["json.loads"]
        for op in OPS:
            seconds = per_record[op]
            vs = f"{baseline / seconds:.3f}" if op != "json.loads" else "1 (baseline)"
            table.add_row(case.name, f"{size:,}", op, f"{1 / seconds:,.0f}", f"{seconds * 1e6:.2f}", vs)
        table.add_section()
        metrics |= {
            f"{case.name}_validate_rps": 1 / per_record["validate"],
            f"{case.name}_batch_rps": 1 / per_record["validate_batch"],
            f"{case.name}_decode_rps": 1 / per_record["decode"],
            f"{case.name}_encode_rps": 1 / per_record["encode"],
            f"{case.name}_ratio_decode_json": baseline / per_record["decode"],
        }
    console.print(table)
    console.print(
        "'vs json.loads': throughput relative to json.loads of the same bytes (1 = as fast; it validates nothing). "
        f"validate_batch runs in batches of {BATCH:,}, as Client.produce does."
    )
    print(result_line(metrics), flush=True)


if __name__ == "__main__":
    main()
