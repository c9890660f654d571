"""Reference profiles: what a monitor compares each window with, kept as versioned files.

A reference lives in ``<references_dir>/<monitor>/v0001/`` (v0002, ... for later
ones; a monitor uses the latest unless its spec names one):

- ``profile.json``: per column its kind, the statistic and threshold, the bin
  edges (quantiles) with the reference's CDF, or the value counts, or the
  embedding centroid; the source and row count;
- ``sample.parquet``: up to ``sample_rows`` rows of the monitored columns, the
  reference side of the evidently HTML reports.

It is built from predictions: a Parquet file (an inference-table export, or a
flat table whose columns are the monitored names), a time range of the inference
table, or the first N predictions of a model version on the predictions topic.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from inferstream.config import Settings
from inferstream.errors import ConfigError
from inferstream.monitoring.extract import Extractor, field_value
from inferstream.monitoring.spec import ColumnSpec, MonitorSpec
from inferstream.monitoring.stats import ColumnProfile, profile_column

PROFILE_FILE = "profile.json"
SAMPLE_FILE = "sample.parquet"
_VERSION = re.compile(r"^v(\d{4,})$")


def references_dir(settings: Settings) -> Path:
    """Where references are kept (``monitoring.references_dir`` or ``<state_dir>/references``)."""
    return settings.monitoring.references_dir or settings.state_dir / "references"


@dataclass
class Reference:
    """A loaded reference: the column profiles and where they came from."""

    path: Path
    monitor: str
    model: str
    version: str | None
    count: int
    source: str
    created: str
    profiles: dict[str, ColumnProfile]

    @property
    def kinds(self) -> dict[str, str]:
        """Column → the kind it is measured as (numerical, categorical, embedding)."""
        return {name: p.kind for name, p in self.profiles.items()}

    def sample(self) -> pa.Table:
        """The reference rows kept for reports."""
        return pq.read_table(self.path / SAMPLE_FILE)

    def for_spec(self, spec: MonitorSpec) -> dict[str, ColumnProfile]:
        """The profiles with the spec's per-column methods and thresholds applied."""
        out = {}
        for column in spec.columns:
            profile = self.profiles.get(column.name)
            if profile is None:
                raise ConfigError(
                    f"reference {self.path} has no column {column.name!r} (it has {', '.join(self.profiles)}): "
                    f"build a new one with `inferstream monitor reference {spec.name} ...`"
                )
            try:
                out[column.name] = profile.with_method(column.method, column.threshold)
            except ValueError as exc:
                raise ConfigError(f"monitor {spec.name}: {exc}") from None
        return out


def _kind_of(spec: ColumnSpec, values: Sequence[Any]) -> str:
    if spec.kind in ("numerical", "categorical", "embedding"):
        return spec.kind
    if spec.kind == "text":
        return "numerical"  # measured by length
    numbers = [v for v in values if v is not None]
    if numbers and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in numbers):
        return "numerical"
    return "categorical"


def build_reference(
    spec: MonitorSpec,
    records: Iterable[Mapping[str, Any]],
    *,
    root: Path,
    source: str,
    sample_rows: int = 20_000,
) -> Reference:
    """Profile prediction records (decoded dicts) for a monitor and write the next version."""
    rows = [r for r in records if r.get("model", spec.model) == spec.model]
    if spec.version is not None:
        rows = [r for r in rows if str(r.get("version", spec.version)) == spec.version]
    if not rows:
        raise ConfigError(f"no predictions of {spec.ref} in {source}: nothing to build a reference from")
    kinds = {c.name: _kind_of(c, [field_value(r, c.path) for r in rows[:1000]]) for c in spec.columns}
    extractor = Extractor(spec.columns, kinds, model=spec.model, version=spec.version)
    profiles: dict[str, ColumnProfile] = {}
    for column in spec.columns:
        batch = extractor._column(column, rows)
        if len(batch.values) == 0:
            raise ConfigError(
                f"reference column {column.name!r} ({'.'.join(column.path)}) has no usable values in {source}"
            )
        profiles[column.name] = profile_column(
            column.name, kinds[column.name], batch.values, method=column.method, threshold=column.threshold
        )
    directory = _next_version(root / spec.name)
    directory.mkdir(parents=True)
    created = datetime.now(UTC).isoformat()
    document = {
        "monitor": spec.name,
        "model": spec.model,
        "version": spec.version,
        "count": len(rows),
        "source": source,
        "created": created,
        "columns": {name: p.to_json() for name, p in profiles.items()},
    }
    picked = (
        rows
        if len(rows) <= sample_rows
        else [rows[i] for i in np.random.default_rng(0).choice(len(rows), sample_rows, replace=False)]
    )
    table = _sample_table([extractor.row_values(r) for r in picked], kinds)
    temporary = directory / (SAMPLE_FILE + ".tmp")
    pq.write_table(table, temporary)
    temporary.replace(directory / SAMPLE_FILE)
    (directory / PROFILE_FILE).write_text(json.dumps(document, allow_nan=False))
    return load_reference(directory)


def _sample_table(rows: list[dict[str, Any]], kinds: Mapping[str, str]) -> pa.Table:
    columns = {}
    for name, kind in kinds.items():
        if kind == "embedding":
            continue
        values = [row.get(name) for row in rows]
        if kind == "numerical":
            columns[name] = pa.array([math.nan if v is None else v for v in values], type=pa.float64())
        else:
            columns[name] = pa.array([None if v is None else str(v) for v in values], type=pa.string())
    return pa.table(columns)


def _next_version(directory: Path) -> Path:
    versions = [int(m.group(1)) for p in directory.glob("v*") if (m := _VERSION.match(p.name))]
    return directory / f"v{max(versions, default=0) + 1:04d}"


def latest_reference(root: Path, monitor: str) -> Path:
    """The newest reference directory of a monitor."""
    directory = root / monitor
    versions = _versions(directory)
    if not versions:
        raise ConfigError(
            f"monitor {monitor} has no reference in {directory}: "
            f"build one with `inferstream monitor reference {monitor} ...`"
        )
    return versions[-1]


def _versions(directory: Path) -> list[Path]:
    found = [(int(m.group(1)), p) for p in directory.glob("v*") if (m := _VERSION.match(p.name))]
    return [p for _, p in sorted(found) if (p / PROFILE_FILE).exists()]


def load_reference(path: Path) -> Reference:
    """Read a reference directory."""
    try:
        document = json.loads((path / PROFILE_FILE).read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path} is not a reference (no {PROFILE_FILE})") from None
    return Reference(
        path=path,
        monitor=document["monitor"],
        model=document["model"],
        version=document.get("version"),
        count=int(document["count"]),
        source=document["source"],
        created=document["created"],
        profiles={name: ColumnProfile.from_json(p) for name, p in document["columns"].items()},
    )


def reference_for(settings: Settings, spec: MonitorSpec) -> Reference:
    """The reference a monitor uses: the one its spec names, or its latest."""
    if spec.reference is not None:
        return load_reference(spec.reference)
    return load_reference(latest_reference(references_dir(settings), spec.name))


def list_references(settings: Settings, monitor: str) -> list[Reference]:
    """Every reference version of a monitor, oldest first."""
    return [load_reference(p) for p in _versions(references_dir(settings) / monitor)]


def records_from_parquet(path: Path) -> list[dict[str, Any]]:
    """Prediction records from a Parquet file: an inference-table export, or flat columns.

    A flat table's columns are taken as both the inputs and the outputs of each row.
    """
    table = pq.read_table(path)
    names = set(table.column_names)
    rows = table.to_pylist()
    if {"inputs", "outputs"} <= names:
        out = []
        for row in rows:
            record = dict(row)
            for key in ("inputs", "outputs"):
                if isinstance(record[key], str):
                    record[key] = json.loads(record[key])
            out.append(record)
        return out
    return [{"inputs": row, "outputs": row} for row in rows]


def records_from_topic(settings: Settings, model: str, version: str | None, first: int) -> list[dict[str, Any]]:
    """The first ``first`` predictions of a model (version) on the predictions topic, oldest first per partition."""
    from inferstream.connectors.kafka.reader import read_bounded

    topic = settings.topics.platform_topics()["predictions"]
    found: list[dict[str, Any]] = []
    for message in read_bounded(settings, topic):
        try:
            record = json.loads(message.value() or b"null")
        except ValueError:
            continue
        if not isinstance(record, dict) or record.get("model") != model:
            continue
        if version is not None and str(record.get("version")) != version:
            continue
        found.append(record)
        if len(found) >= first:
            break
    return found
