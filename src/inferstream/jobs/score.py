"""Batch scoring: Parquet (or JSONL/CSV) rows → a model of the repository → the inference table.

::

    files ─ReadFiles→ Arrow chunks ─RunInference(OnnxBatchHandler)→ predictions ─write_batch→ inference table
             └─ unreadable records ─────── rows the model refuses ─→ <table>/_rejects/<topic>.rejects.parquet

(the steps every model job shares are in :mod:`inferstream.jobs._scoring`).

Rows are written with the inference table's own writer
(:func:`inferstream.monitoring.table.write_batch`), as if they had come from a
topic named ``job.score.<file name>``, partition 0, with the row number as the
offset: ``inferstream table query`` and the monitors read them like streamed
predictions, and running the job again rewrites the same files instead of
adding copies. A row's request id is its ``request_id`` (or ``id``) column, else
``<file name>-<line>``; its event time is its ``event_time`` column, else the
time the job started.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from inferstream.config import Settings
from inferstream.errors import ConfigError
from inferstream.jobs._model import LINE, SOURCE, OnnxBatchHandler, Scored
from inferstream.jobs._pipeline import JobResult, check_inputs, checksum
from inferstream.jobs._scoring import ScoredRows, run_model_job
from inferstream.monitoring import table as inference_table
from inferstream.schemas.records import Latency, Prediction
from inferstream.serving.config import ModelConfig, TabularPreprocessing

_INTERNAL = (LINE, SOURCE)


def score_topic(path: str | Path) -> str:
    """The topic name a scored file's rows are filed under in the inference table."""
    return f"job.score.{Path(path).name.removesuffix('.parquet')}"


class WritePredictions(ScoredRows):
    """``Scored`` elements → inference-table files (one per element and model/date); rejects → ``rejects``."""

    def __init__(self, config: ModelConfig, root: Path, started: datetime) -> None:
        super().__init__()
        self.config = config
        self.root = root
        self.started = started

    def write(self, scored: Scored) -> Iterator[Any]:
        """Write one element's predictions (this step emits nothing but rejects)."""
        rows = scored.rows
        source = str(rows.column(SOURCE)[0].as_py())
        lines = rows.column(LINE).to_pylist()
        inputs = rows.select(self._input_columns(rows)).to_pylist()
        ids = _column(rows, ("request_id", "id"))
        times = _column(rows, ("event_time",))
        names = list(scored.outputs)
        outputs = [dict(zip(names, values, strict=True)) for values in zip(*scored.outputs.values(), strict=True)]
        now = datetime.now(UTC)
        latency = Latency.model_construct(queue_ms=0.0, compute_ms=scored.compute_ms, total_ms=0.0)
        name = Path(source).name
        predictions = [
            (
                line,
                Prediction.model_construct(
                    request_id=str(ids[i]) if ids is not None else f"{name}-{line}",
                    event_time=_utc(times[i]) if times is not None and times[i] is not None else self.started,
                    model=self.config.name,
                    version=self.config.version,
                    inputs=inputs[i],
                    outputs=outputs[i],
                    latency=latency,
                    predicted_at=now,
                    shadow=False,
                    chain=[],
                    source_event_id=None,
                    attributes={"job": "score", "source": name},
                ),
            )
            for i, line in enumerate(lines)
        ]
        inference_table.write_batch(self.root, score_topic(source), 0, predictions)
        self.written.inc(len(predictions))
        yield from ()  # the inference table is the output: nothing goes on down the pipeline

    def _input_columns(self, rows: pa.Table) -> list[str]:
        preprocessing = self.config.preprocessing
        if isinstance(preprocessing, TabularPreprocessing):
            return list(preprocessing.features)
        return [preprocessing.field]


def _column(rows: pa.Table, names: Sequence[str]) -> list[Any] | None:
    for name in names:
        if name in rows.column_names:
            return list(rows.column(name).to_pylist())
    return None


def _utc(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value
    return inference_table.parse_time(str(value)) or datetime.now(UTC)


def score(
    settings: Settings,
    inputs: Sequence[Path],
    *,
    model: str,
    table_dir: Path | None = None,
    flags: Sequence[str] = (),
    file_format: str | None = None,
    dead_letters: bool = False,
) -> JobResult:
    """Score every row of the input files with ``model`` into the inference table."""
    paths = check_inputs(inputs)
    handler = OnnxBatchHandler(settings.models_dir, model)
    if handler.config.kind == "embedder":
        raise ConfigError(f"{handler.ref} is an embedder: embed a corpus with `inferstream job backfill`")
    root = table_dir or inference_table.table_dir(settings)
    result = run_model_job(
        settings,
        "score",
        paths,
        handler,
        WritePredictions(handler.config, root, datetime.now(UTC)),
        root / "_rejects" / f"{score_topic(paths[0])}.{handler.config.name}.rejects.parquet",
        labels=("score", "write"),
        outputs=[root],
        flags=flags,
        file_format=file_format,
        dead_letters=dead_letters,
    )
    result.checksum = table_checksum(root, {score_topic(p) for p in paths})
    return result


#: The columns of a scored row that do not depend on when or where it was scored.
_STABLE = ("_topic", "_partition", "_offset", "request_id", "model", "version", "inputs", "outputs")


def table_checksum(root: Path, topics: set[str]) -> str:
    """:func:`~inferstream.jobs._pipeline.checksum` of the inference table's rows of ``topics`` (stable columns)."""
    import pyarrow.parquet as pq

    # The table's files are named <topic>+<partition>+<offsets>: only this job's are read.
    paths = sorted(p for t in topics for p in root.glob(f"model=*/date=*/{t}+*.parquet"))
    return checksum((pq.read_table(p, columns=list(_STABLE)) for p in paths), _STABLE)
