"""A Beam model handler for the repository's ONNX models, columnar in and out.

In the style of Beam's ``OnnxModelHandlerNumpy``: the ONNX session (and the
tokenizer) are created in ``load_model()``, which ``RunInference`` calls once per
worker process and shares between its threads, never at import or construction.
Elements are Arrow tables of up to the model's ``max_batch_size`` rows;
``BatchElements`` groups a few of them (``pool_batches``) so that texts can be
bucketed by length before they are cut into model batches of ``max_batch_size``,
as the streaming workers do. A row the model cannot take (no text, a missing
feature, NaN) comes back as a reject with its line and reason, never dropped.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
from apache_beam.ml.inference.base import ModelHandler

from inferstream.schemas.records import EmbeddingRequest
from inferstream.serving.config import ModelConfig, TabularPreprocessing
from inferstream.serving.onnx import OnnxModel
from inferstream.serving.repository import ModelRepository
from inferstream.serving.text import TextPreprocessor, bucket_by_length, pool

#: Column every job element carries: the record's line (JSONL/CSV) or row number (Parquet) in its file.
LINE = "_line"
#: Column every job element carries: the file it was read from.
SOURCE = "_source"
#: Columns of the rejects file of a job: where the row was, why it was refused, what it held.
REJECT_SCHEMA = pa.schema(
    [("source", pa.string()), ("line", pa.int64()), ("reason", pa.string()), ("raw", pa.binary())]
)


@dataclass(frozen=True, slots=True, weakref_slot=True)  # Beam's Shared holds the model by weak reference
class LoadedModel:
    """One worker's model: the ONNX session and its preprocessor (text models)."""

    model: OnnxModel
    text: TextPreprocessor | None


@dataclass(slots=True)
class Scored:
    """What the handler made of one element: the rows it served with their outputs, and the rejects.

    ``outputs`` holds, by row of ``rows``: ``vector`` (embedders), or ``label``,
    ``probabilities``, ``score`` as the model config names them.
    """

    rows: pa.Table
    outputs: dict[str, Any]
    rejects: list[tuple[str, int, str, bytes]]
    compute_ms: float


def element_rows(table: pa.Table) -> int:
    """The weight of an element for ``BatchElements``: its rows."""
    return int(table.num_rows)


class OnnxBatchHandler(ModelHandler[pa.Table, Scored, LoadedModel]):
    """Runs one model version of the repository on Arrow tables (``RunInference``'s handler).

    >>> handler = OnnxBatchHandler(Path("models"), "minilm:1")   # doctest: +SKIP
    >>> rows | RunInference(handler)                              # doctest: +SKIP
    """

    def __init__(self, models_dir: Path, ref: str, *, pool_batches: int = 32) -> None:
        version = ModelRepository(models_dir).resolve(ref)
        self.models_dir = models_dir
        self.ref = version.config.ref
        self.config: ModelConfig = version.config
        self.max_batch_size = self.config.batching.max_batch_size
        # BatchElements weighs elements by their rows. A fixed size (no ramp from small batches):
        # pool_batches model batches, so the texts of a pool are bucketed by length together.
        pool_rows = pool_batches * self.max_batch_size
        super().__init__(
            min_batch_size=pool_rows,
            max_batch_size=pool_rows,
            element_size_fn=element_rows,
        )

    def load_model(self) -> LoadedModel:
        """Create the ONNX session (providers checked) and read the tokenizer."""
        version = ModelRepository(self.models_dir).resolve(self.ref)
        model = OnnxModel(version).load()
        text = None
        if not isinstance(self.config.preprocessing, TabularPreprocessing):
            text = TextPreprocessor(self.config, version.directory).load()
        return LoadedModel(model, text)

    def get_num_bytes(self, batch: Sequence[pa.Table]) -> int:
        """Bytes of the batch's Arrow buffers (Beam's default pickles the batch to measure it)."""
        return sum(int(t.nbytes) for t in batch)

    def get_metrics_namespace(self) -> str:
        """Beam metrics of this handler are under ``inferstream``."""
        return "inferstream"

    def run_inference(
        self, batch: Sequence[pa.Table], model: LoadedModel, inference_args: dict[str, Any] | None = None
    ) -> Iterable[Scored]:
        """One ``Scored`` per element of the batch, in order."""
        if model.text is not None:
            return self._run_text(batch, model.model, model.text)
        return [self._run_tabular(table, model.model) for table in batch]

    # -- text -------------------------------------------------------------------------

    def _run_text(self, batch: Sequence[pa.Table], model: OnnxModel, text: TextPreprocessor) -> list[Scored]:
        field = text.settings.field
        spec = self.config.outputs
        # The batch's texts together: bucketing by length spans the elements, padding stays short.
        texts: list[Any] = []
        owners: list[tuple[int, int]] = []
        for index, table in enumerate(batch):
            column = table.column(field).to_pylist() if field in table.column_names else [None] * table.num_rows
            texts.extend(column)
            owners.extend((index, row) for row in range(table.num_rows))
        # Unvalidated on purpose: the preprocessor reads only ``text``, and reports a missing or non-text one.
        construct: Any = EmbeddingRequest.model_construct
        prepared = text.prepare([construct(text=t) for t in texts])
        fed = np.asarray(prepared.positions, dtype=np.int64)
        started = time.perf_counter()
        per_row: list[dict[str, Any]] = [{} for _ in prepared.positions]
        tokens = self.config.batching.max_batch_tokens
        for bucket in bucket_by_length(prepared.lengths, self.max_batch_size, tokens):
            rows = np.asarray(bucket)
            width = int(prepared.lengths[rows].max())
            feeds = {name: array[rows, :width] for name, array in prepared.feeds.items()}
            result = model.run(feeds)
            if spec.embedding is not None:
                vectors = pool(
                    result[spec.embedding], prepared.attention_mask[rows, :width], spec.pooling, spec.normalize
                )
                for row, vector in zip(bucket, vectors, strict=True):
                    per_row[row]["vector"] = vector
            else:
                for row, values in zip(bucket, model_outputs(self.config, result, len(bucket)), strict=True):
                    per_row[row].update(values)
        compute_ms = (time.perf_counter() - started) * 1000
        return _split(batch, owners, fed, per_row, prepared.errors, compute_ms)

    # -- tabular ----------------------------------------------------------------------

    def _run_tabular(self, table: pa.Table, model: OnnxModel) -> Scored:
        preprocessing = self.config.preprocessing
        assert isinstance(preprocessing, TabularPreprocessing)
        spec = self.config.inputs[0]
        features = preprocessing.features
        count = table.num_rows
        missing = [name for name in features if name not in table.column_names]
        errors: dict[int, str] = {}
        if missing:
            reason = f"missing feature column(s): {', '.join(missing[:5])}" + (" ..." if len(missing) > 5 else "")
            return Scored(table.slice(0, 0), {}, [_reject(table, r, reason) for r in range(count)], 0.0)
        columns = []
        for name in features:
            column = table.column(name)
            if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)):
                reason = f"feature {name} is {column.type}, not a number"
                return Scored(table.slice(0, 0), {}, [_reject(table, r, reason) for r in range(count)], 0.0)
            # Nulls become NaN: refused below unless the model allows NaN.
            columns.append(column.to_numpy(zero_copy_only=False).astype(spec.dtype, copy=False))
        matrix: npt.NDArray[Any] = np.column_stack(columns) if count else np.empty((0, len(features)), spec.dtype)
        keep = np.ones(count, dtype=bool)
        if not preprocessing.allow_nan and count:
            bad = np.isnan(matrix).any(axis=1)
            for row in np.flatnonzero(bad):
                names = [features[c] for c in np.flatnonzero(np.isnan(matrix[row]))]
                errors[int(row)] = f"NaN or missing value in feature(s) {', '.join(names[:5])} (allow_nan is off)"
            keep = ~bad
        started = time.perf_counter()
        rows_out: list[dict[str, Any]] = []
        fed = np.flatnonzero(keep)
        for start in range(0, len(fed), self.max_batch_size):
            chunk = fed[start : start + self.max_batch_size]
            result = model.run({spec.name: matrix[chunk]})
            rows_out.extend(model_outputs(self.config, result, len(chunk)))
        compute_ms = (time.perf_counter() - started) * 1000
        owners = [(0, r) for r in range(count)]
        return _split([table], owners, fed, rows_out, errors, compute_ms)[0]


def _reject(table: pa.Table, row: int, reason: str) -> tuple[str, int, str, bytes]:
    # The row as it was read (JSON, as connectors.files gives a Parquet row's bytes): rare, so per row.
    # Fields absent from the record are null in its chunk's table: left out, as the record had them.
    values = {k: v for k, v in table.slice(row, 1).to_pylist()[0].items() if v is not None}
    line = int(values.pop(LINE, row + 1))
    source = str(values.pop(SOURCE, ""))
    return source, line, reason, json.dumps(values, default=str, separators=(",", ":")).encode()


def _split(
    batch: Sequence[pa.Table],
    owners: list[tuple[int, int]],
    fed: npt.NDArray[np.int64],
    per_row: list[dict[str, Any]],
    errors: dict[int, str],
    compute_ms: float,
) -> list[Scored]:
    """Served rows and rejects back to the elements they came from."""
    served: list[list[int]] = [[] for _ in batch]
    values: list[list[dict[str, Any]]] = [[] for _ in batch]
    for position, row_values in zip(fed.tolist(), per_row, strict=True):
        element, row = owners[position]
        served[element].append(row)
        values[element].append(row_values)
    rejects: list[list[tuple[str, int, str, bytes]]] = [[] for _ in batch]
    for position, reason in sorted(errors.items()):
        element, row = owners[position]
        rejects[element].append(_reject(batch[element], row, reason))
    out = []
    for table, rows, element_values, refused in zip(batch, served, values, rejects, strict=True):
        outputs: dict[str, Any] = {}
        for key in element_values[0] if element_values else ():
            outputs[key] = [v[key] for v in element_values]
        out.append(Scored(table.take(pa.array(rows, pa.int64())), outputs, refused, compute_ms))
    return out


def model_outputs(config: ModelConfig, result: dict[str, Any], count: int) -> list[dict[str, Any]]:
    """Prediction outputs by row (``label``, ``probabilities``, ``score``) from a batch's graph outputs."""
    spec = config.outputs
    rows: list[dict[str, Any]] = [{} for _ in range(count)]
    names = spec.labels
    if spec.label:
        for row, label in zip(rows, np.asarray(result[spec.label]).reshape(count).tolist(), strict=True):
            row["label"] = names[int(label)] if names else label
    if spec.probabilities:
        probabilities = np.asarray(result[spec.probabilities], dtype=np.float64).round(6).tolist()
        for row, values in zip(rows, probabilities, strict=True):
            row["probabilities"] = dict(zip(names, values, strict=True)) if names else values
    if spec.score:
        for row, score in zip(rows, np.asarray(result[spec.score]).reshape(count).tolist(), strict=True):
            row["score"] = score
    return rows


def rejects_table(rejects: Sequence[tuple[str, int, str, bytes]]) -> pa.Table:
    """Rejected rows (source, line, reason, raw) as a table of the rejects file's schema."""
    return pa.Table.from_arrays(
        [
            pa.array([r[0] for r in rejects], pa.string()),
            pa.array([r[1] for r in rejects], pa.int64()),
            pa.array([r[2] for r in rejects], pa.string()),
            pa.array([r[3] for r in rejects], pa.binary()),
        ],
        schema=REJECT_SCHEMA,
    )
