"""Reference: Parquet predictions → a monitor's next drift reference profile (the monitor's own format).

The files are read in parallel (one element per file, with
:func:`inferstream.monitoring.reference.records_from_parquet`: inference-table
files or exports, or flat tables), gathered, and profiled once by
:func:`inferstream.monitoring.reference.build_reference` — the code behind
``inferstream monitor reference`` — into ``<references_dir>/<monitor>/vNNNN``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import apache_beam as beam
from apache_beam.metrics.metric import Metrics

from inferstream.config import Settings
from inferstream.jobs._pipeline import NAMESPACE, check_inputs, make_pipeline, run
from inferstream.monitoring import reference as references
from inferstream.monitoring.spec import MonitorSpec


def _read(path: str) -> list[dict[str, Any]]:
    rows = references.records_from_parquet(Path(path))
    Metrics.counter(NAMESPACE, "rows_in").inc(len(rows))
    return rows


def _concat(keyed: tuple[None, Iterable[list[dict[str, Any]]]]) -> list[dict[str, Any]]:
    return [row for part in keyed[1] for row in part]


def _build(rows: Sequence[Mapping[str, Any]], spec: MonitorSpec, root: Path, source: str) -> str:
    built = references.build_reference(spec, rows, root=root, source=source)
    Metrics.counter(NAMESPACE, "rows_out").inc(built.count)
    return str(built.path)


def build(
    settings: Settings, monitor: str, inputs: Sequence[Path], *, flags: Sequence[str] = ()
) -> references.Reference:
    """Build the monitor's next reference version from Parquet files of predictions; the reference."""
    spec = settings.monitoring.monitor(monitor)
    paths = check_inputs(inputs)
    root = references.references_dir(settings)
    source = ", ".join(paths) if len(paths) <= 3 else f"{paths[0]} and {len(paths) - 1} more files"
    pipeline = make_pipeline(flags)
    _ = (
        pipeline
        | "files" >> beam.Create(paths)
        | "read" >> beam.Map(_read)
        # One key and a GroupByKey, not CombineGlobally: its default for an empty input is a side
        # input, which the Dask runner would compute again inside the task that reads it.
        | "key" >> beam.Map(lambda rows: (None, rows))
        | "gather" >> beam.GroupByKey()
        | "concat" >> beam.Map(_concat)
        | "profile" >> beam.Map(_build, spec, root, source)
    )
    run(pipeline)
    built = references.load_reference(references.latest_reference(root, spec.name))
    return built
