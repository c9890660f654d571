"""What the model jobs share (backfill, batch scoring): files → the model → a writing step, rejects collected.

::

    files ─ReadFiles→ Arrow chunks ─RunInference(OnnxBatchHandler)→ Scored ─step→ outputs
             └─ unreadable records ──────── rows the model refuses ─→ <rejects>.parquet

Each job gives its own step, a :class:`ScoredRows` that turns the model's outputs into
its outputs; refused rows, from reading or from the model, go to one rejects file (and
to the dead-letter topic when asked), so every row read is written or refused.
"""

from __future__ import annotations

import time
from abc import abstractmethod
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import apache_beam as beam
import pyarrow as pa
from apache_beam.metrics.metric import Metrics
from apache_beam.ml.inference.base import RunInference

from inferstream.config import Settings
from inferstream.jobs._model import REJECT_SCHEMA, OnnxBatchHandler, Scored, rejects_table
from inferstream.jobs._pipeline import (
    NAMESPACE,
    REJECTS,
    JobResult,
    dead_letter_rejects,
    file_checksum,
    join_parts,
    make_pipeline,
    read_files,
    run,
    write_parquet,
)


class ScoredRows(beam.DoFn):
    """A job's step after the model: refused rows → ``rejects`` (counted), served rows → ``write``."""

    def __init__(self) -> None:
        self.written = Metrics.counter(NAMESPACE, "rows_out")
        self.refused = Metrics.counter(NAMESPACE, "rejected")

    def process(self, scored: Scored) -> Iterator[Any]:
        """Emit one element's rejects, then what the job makes of its rows (none when every row was refused)."""
        if scored.rejects:
            self.refused.inc(len(scored.rejects))
            yield beam.pvalue.TaggedOutput(REJECTS, rejects_table(scored.rejects))
        if scored.rows.num_rows:
            yield from self.write(scored)

    @abstractmethod
    def write(self, scored: Scored) -> Iterator[Any]:
        """What the job makes of the served rows of one element (it counts them in ``written``)."""


def run_model_job(
    settings: Settings,
    name: str,
    paths: Sequence[str],
    handler: OnnxBatchHandler,
    step: ScoredRows,
    rejects: Path,
    *,
    labels: tuple[str, str],
    outputs: list[Path],
    out: tuple[Path, pa.Schema] | None = None,
    flags: Sequence[str] = (),
    file_format: str | None = None,
    dead_letters: bool = False,
    checksum_columns: Sequence[str] | None = None,
) -> JobResult:
    """Run ``handler``'s model over the files' rows and ``step`` over its results, to the end.

    ``labels`` name the model's and the step's Beam stages; ``out`` (a Parquet file and its
    schema) receives the step's main output when given. Refused rows go to ``rejects``,
    and to the dead-letter topic (stage ``name``) with ``dead_letters``. The result's checksum
    is over ``checksum_columns`` of ``out`` (all when not named).
    """
    started = time.perf_counter()
    pipeline = make_pipeline(flags)
    read = read_files(pipeline, paths, handler.max_batch_size, file_format)
    infer, write = labels
    results = read.rows | infer >> RunInference(handler) | write >> beam.ParDo(step).with_outputs(REJECTS, main="out")
    if out is not None:
        write_parquet(results.out, out[0], out[1], "write", keys=("source", "line"))
    refused = (read[REJECTS], results[REJECTS]) | "all rejects" >> beam.Flatten()
    write_parquet(refused, rejects, REJECT_SCHEMA, "write rejects", keys=("source", "line"))
    counters = run(pipeline)
    if out is not None:
        join_parts(*out)
    rejected = join_parts(rejects, REJECT_SCHEMA)
    if dead_letters:
        dead_letter_rejects(settings, rejects, name)
    return JobResult(
        name=name,
        rows_in=counters.get("rows_in", 0),
        rows_out=counters.get("rows_out", 0),
        rejected=rejected,
        outputs=outputs,
        rejects_path=rejects,
        elapsed_s=time.perf_counter() - started,
        checksum=file_checksum(out[0], checksum_columns) if out is not None else None,
    )
