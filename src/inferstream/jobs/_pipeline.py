"""What every job shares: the pipeline and its runner, reading files as Arrow chunks, writing Parquet.

The runner is Beam's FnApiRunner unless the flags name another: ``--runner dask``
(with ``--dask-address HOST:PORT``, or a local cluster of ``--dask-workers N``
processes; see :mod:`inferstream.jobs._dask`), or any runner of Beam's (``--runner
FlinkRunner --flink_master=...``, ``--runner SparkRunner``, ``--runner
DataflowRunner --project ... --region ... --temp_location gs://...``), whose flags
are handed to ``PipelineOptions`` unchanged. The DirectRunner is not the default
because it fetches a runner binary on first use.

Outputs are keyed, so that a runner that retries a task (Dask does) overwrites
instead of adding: each element is written to a part file named by its first
row's key (:class:`WriteParts`), and the parts are joined in key order into the
job's file when the pipeline is done (:func:`join_parts`). :func:`checksum` sums
up a job's rows whatever their order, to compare runs on two runners.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import apache_beam as beam
import pyarrow as pa
from apache_beam.metrics.metric import Metrics, MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from inferstream.config import Settings
from inferstream.connectors.files import FileFormat, detect_format, read_records
from inferstream.errors import ConfigError
from inferstream.jobs._model import LINE, SOURCE, rejects_table

#: Beam metrics namespace of the jobs' counters.
NAMESPACE = "inferstream"
#: Tag of the rejects output of the steps that can refuse a row.
REJECTS = "rejects"


@dataclass
class JobResult:
    """What a job did: rows read, rows written, rows refused (with where they went)."""

    name: str
    rows_in: int = 0
    rows_out: int = 0
    rejected: int = 0
    outputs: list[Path] = field(default_factory=list)
    rejects_path: Path | None = None
    elapsed_s: float = 0.0
    #: Documents written to the vector index (backfill --to index).
    indexed: int | None = None
    #: Records the broker deleted before the job read them (export: retention, delete-records).
    expired: int = 0
    #: What the user should know about the result (printed by the CLI).
    warnings: list[str] = field(default_factory=list)
    #: Order-independent digest of the rows written (:func:`checksum`): equal on every runner.
    checksum: str | None = None

    @property
    def accounted(self) -> bool:
        """True when every row read was written or refused."""
        return self.rows_in == self.rows_out + self.rejected


def make_pipeline(flags: Sequence[str] = ()) -> beam.Pipeline:
    """A pipeline on the runner the flags name, else on the FnApiRunner (in-process, no downloads)."""
    from inferstream.jobs._dask import DaskRunner, parse_dask_flags

    spec, rest = parse_dask_flags(flags)
    options = PipelineOptions(flags=rest)
    if spec is not None:
        return beam.Pipeline(runner=DaskRunner(spec), options=options)
    if options.view_as(StandardOptions).runner is None:
        from apache_beam.runners.portability.fn_api_runner.fn_runner import FnApiRunner

        return beam.Pipeline(runner=FnApiRunner(), options=options)
    return beam.Pipeline(options=options)


def run(pipeline: beam.Pipeline) -> dict[str, int]:
    """Run to the end; the jobs' counters by name."""
    result = pipeline.run()
    result.wait_until_finish()
    counters: dict[str, int] = {}
    for counter in result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))["counters"]:
        name = counter.key.metric.name
        value = counter.committed if counter.committed is not None else counter.attempted
        counters[name] = counters.get(name, 0) + int(value or 0)
    return counters


Reject = tuple[str, int, str, bytes]


def _chunks(path: str, fmt: FileFormat, rows: int) -> Iterator[tuple[pa.Table | None, list[Reject]]]:
    if fmt == "parquet":
        import pyarrow.parquet as pq

        # Columnar all the way: Parquet batches become elements without a row-by-row pass.
        line = 1
        for batch in pq.ParquetFile(path).iter_batches(batch_size=rows):
            table = pa.Table.from_batches([batch])
            lines = pa.array(range(line, line + table.num_rows), pa.int64())
            line += table.num_rows
            yield _with_source(table.append_column(LINE, lines), path), []
        return
    values: list[dict[str, Any]] = []
    rejects: list[Reject] = []
    for record in read_records(path, fmt):
        if record.value is None:
            rejects.append((path, record.line, record.error or "unreadable", record.raw))
            continue
        values.append({**record.value, LINE: record.line})
        if len(values) >= rows:
            yield _from_rows(values, path), rejects
            values, rejects = [], []
    if values or rejects:
        yield (_from_rows(values, path) if values else None), rejects


def _with_source(table: pa.Table, path: str) -> pa.Table:
    # Dictionary-encoded: one string per chunk, whatever its rows.
    indices = pa.array([0] * table.num_rows, pa.int32())
    return table.append_column(SOURCE, pa.DictionaryArray.from_arrays(indices, pa.array([path], pa.string())))


def _from_rows(values: list[dict[str, Any]], path: str) -> pa.Table:
    try:
        return _with_source(pa.Table.from_pylist(values), path)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise ConfigError(
            f"{path}: records of lines {values[0][LINE]}..{values[-1][LINE]} mix types in a field ({exc}): "
            "give every record the same type per field"
        ) from None


class ReadFiles(beam.DoFn):
    """File paths → Arrow tables of up to ``rows`` rows (with their lines); unreadable records → ``rejects``."""

    def __init__(self, rows: int, fmt: str | None = None) -> None:
        self.rows = rows
        self.fmt = fmt
        self.read = Metrics.counter(NAMESPACE, "rows_in")

    def process(self, path: str) -> Iterator[Any]:
        """Every chunk of one file."""
        fmt = detect_format(path, self.fmt)
        for table, rejects in _chunks(path, fmt, self.rows):
            if table is not None:
                self.read.inc(table.num_rows)
                yield table
            if rejects:
                self.read.inc(len(rejects))
                yield beam.pvalue.TaggedOutput(REJECTS, rejects_table(rejects))


def read_files(pipeline: beam.Pipeline, paths: Sequence[str], rows: int, fmt: str | None) -> Any:
    """The first steps of every file job: the files' rows in Arrow tables of ``rows`` (``.rows``), and their rejects."""
    return (
        pipeline
        | "files" >> beam.Create(paths)
        | "read" >> beam.ParDo(ReadFiles(rows, fmt)).with_outputs(REJECTS, main="rows")
    )


def _key_text(value: Any) -> str:
    """A key value as a name that sorts like the value: numbers zero-padded, text hashed (fixed width)."""
    if isinstance(value, int):
        return f"{value:020d}"
    return hashlib.sha256(str(value).encode()).hexdigest()[:16]


def parts_dir(path: Path) -> Path:
    """Where a job's output file is written in parts before :func:`join_parts`: ``<path>.parts/``."""
    return path.with_name(path.name + ".parts")


class WriteParts(beam.DoFn):
    """Arrow tables → one Parquet part each, named by the first row's ``keys``: a retried task overwrites its parts.

    A part is written beside its final name and renamed over it, so a reader never sees half a part.
    """

    def __init__(self, path: Path, schema: pa.Schema, keys: Sequence[str]) -> None:
        self.directory = parts_dir(path)
        self.schema = schema
        self.keys = tuple(keys)

    def process(self, table: pa.Table) -> Iterator[str]:
        """Write one element (nothing for an empty one); its part's name."""
        import pyarrow.parquet as pq

        if not table.num_rows:
            return
        name = "-".join(_key_text(table.column(k)[0].as_py()) for k in self.keys) + ".parquet"
        part = self.directory / name
        temporary = self.directory / f".{name}.{os.getpid()}.tmp"
        self.directory.mkdir(parents=True, exist_ok=True)
        pq.write_table(table.select(self.schema.names).cast(self.schema), temporary, compression="zstd")
        os.replace(temporary, part)
        yield name


def write_parquet(tables: Any, path: Path, schema: pa.Schema, label: str, keys: Sequence[str]) -> Any:
    """Write Arrow tables as keyed parts of ``path`` (stale parts of an earlier run are removed first)."""
    shutil.rmtree(parts_dir(path), ignore_errors=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    return tables | label >> beam.ParDo(WriteParts(path, schema, keys))


def join_parts(path: Path, schema: pa.Schema) -> int:
    """Join the parts of ``path`` in key order into ``path`` (written whole, then renamed); its rows."""
    import pyarrow.parquet as pq

    directory = parts_dir(path)
    parts = sorted(directory.glob("*.parquet")) if directory.is_dir() else []
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    rows = 0
    with pq.ParquetWriter(temporary, schema, compression="zstd") as writer:
        for part in parts:
            table = pq.read_table(part).cast(schema)
            rows += table.num_rows
            writer.write_table(table)
    os.replace(temporary, path)
    shutil.rmtree(directory, ignore_errors=True)
    return rows


def checksum(tables: Iterable[pa.Table | pa.RecordBatch], columns: Sequence[str]) -> str:
    """An order-independent digest of rows: each row's ``columns`` hashed, the hashes sorted, hashed together.

    Two runs agree when they wrote the same rows, in whatever order or files; a row written
    twice changes it. Its cost is a pass over the rows in the driver.
    """
    digests: list[bytes] = []
    for table in tables:
        values = [table.column(c).to_pylist() for c in columns]
        digests.extend(hashlib.sha256(repr(row).encode()).digest() for row in zip(*values, strict=True))
    digests.sort()
    total = hashlib.sha256()
    for digest in digests:
        total.update(digest)
    return f"{len(digests)}:{total.hexdigest()[:16]}"


def file_checksum(path: Path, columns: Sequence[str] | None = None) -> str:
    """:func:`checksum` of a Parquet file (all columns unless named)."""
    import pyarrow.parquet as pq

    if not path.is_file():
        return checksum([], ())
    names = list(columns or pq.ParquetFile(path).schema_arrow.names)
    return checksum(pq.ParquetFile(path).iter_batches(batch_size=10_000, columns=names), names)


def rejects_path(out: Path) -> Path:
    """Where a job's refused rows go: beside its output, ``<name>.rejects.parquet``."""
    return out.with_name(out.name.removesuffix(".parquet") + ".rejects.parquet")


def check_inputs(paths: Sequence[Path]) -> list[str]:
    """The input files as strings; a clear error for one that is missing."""
    if not paths:
        raise ConfigError("no input files given")
    for path in paths:
        if not path.is_file():
            raise ConfigError(f"input file {path} does not exist")
    return [str(p) for p in paths]


def parquet_rows(path: Path) -> int:
    """Rows of a Parquet file (0 when there is none)."""
    import pyarrow.parquet as pq

    return int(pq.ParquetFile(path).metadata.num_rows) if path.is_file() else 0


def dead_letter_rejects(settings: Settings, path: Path, stage: str) -> int:
    """Send a job's rejects file to the dead-letter topic (source = the file, offset = the line); how many.

    Raises if the broker does not acknowledge every one (the file stays, nothing is lost).
    """
    import pyarrow.parquet as pq

    from inferstream.connectors.kafka.dlq import DeadLetterWriter

    if not path.is_file():
        return 0
    writer = DeadLetterWriter(settings, stage=stage)
    try:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=10_000):
            for row in batch.to_pylist():
                writer.send(
                    payload=row["raw"],
                    error=row["reason"],
                    source_topic=row["source"],
                    offset=row["line"],
                    error_class="RejectedRow",
                )
        writer.flush()
    finally:
        writer.close()
    return writer.sent
