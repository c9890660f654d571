"""Backfill: a corpus (Parquet, JSON Lines, CSV) → embeddings with the ONNX embedder → Parquet.

::

    corpus files ─ReadFiles→ Arrow chunks ─RunInference(OnnxBatchHandler)→ vectors ─→ <out>.parquet
                     └─ unreadable records ──────── texts the model refuses ─→ <out>.rejects.parquet

(the steps every model job shares are in :mod:`inferstream.jobs._scoring`).

Every row read is written or refused (``JobResult.accounted``). A document's id is
its ``id`` (or ``document_id``) field, else ``<file name>:<line>``, so a second run
gives the same ids. ``to="index"`` (Elasticsearch bulk with those ids as document
ids) is the seam for the vector index sink, which is not in this tree yet.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from inferstream.config import Settings
from inferstream.errors import ConfigError
from inferstream.jobs._model import LINE, SOURCE, OnnxBatchHandler, Scored
from inferstream.jobs._pipeline import JobResult, check_inputs, rejects_path
from inferstream.jobs._scoring import ScoredRows, run_model_job
from inferstream.serving.config import ModelConfig

Target = Literal["parquet", "index"]
DEFAULT_EMBEDDER = "minilm:1"
log = logging.getLogger("inferstream.jobs")


#: The columns the checksum covers: all but the vector, whose last bits depend on which texts
#: shared a padded model batch (runners bundle differently; the values agree to ~1e-7).
CHECKED = ("id", "text", "model", "version", "source", "line")


def embedding_schema(dims: int | None) -> pa.Schema:
    """Columns of a backfill's output: the document id, its text, the vector, the model, where it came from."""
    vector = pa.list_(pa.float32(), dims) if dims else pa.list_(pa.float32())
    return pa.schema(
        [
            ("id", pa.string()),
            ("text", pa.string()),
            ("vector", vector),
            ("model", pa.string()),
            ("version", pa.string()),
            ("source", pa.string()),
            ("line", pa.int64()),
        ]
    )


class EmbeddingRows(ScoredRows):
    """``Scored`` elements → tables of the embedding schema; refused rows → ``rejects``."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.schema = embedding_schema(config.outputs.dims)

    def write(self, scored: Scored) -> Iterator[Any]:
        """One output table per element."""
        rows = scored.rows
        field = self.config.preprocessing.field if hasattr(self.config.preprocessing, "field") else "text"
        matrix = np.stack(scored.outputs["vector"]).astype(np.float32, copy=False)
        vectors = pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1)), matrix.shape[1])
        if not pa.types.is_fixed_size_list(self.schema.field("vector").type):
            vectors = vectors.cast(pa.list_(pa.float32()))
        sources = rows.column(SOURCE).cast(pa.string())
        lines = rows.column(LINE)
        self.written.inc(rows.num_rows)
        yield pa.Table.from_arrays(
            [
                document_ids(rows),
                rows.column(field).cast(pa.string()),
                vectors,
                pa.array([self.config.name] * rows.num_rows, pa.string()),
                pa.array([self.config.version] * rows.num_rows, pa.string()),
                sources,
                lines,
            ],
            schema=self.schema,
        )


def document_ids(rows: pa.Table) -> pa.ChunkedArray:
    """The rows' ``id`` (or ``document_id``) as text, else ``<file name>:<line>``."""
    for name in ("id", "document_id"):
        if name in rows.column_names:
            return rows.column(name).cast(pa.string())
    names = [Path(s).name for s in rows.column(SOURCE).cast(pa.string()).to_pylist()]
    return pc.binary_join_element_wise(pa.array(names), rows.column(LINE).cast(pa.string()), ":")


def index_parquet(settings: Settings, path: Path, config: ModelConfig, *, batch_rows: int = 2000) -> int:
    """Load a backfill's Parquet output into the configured vector index (ids are document ids: idempotent).

    Runs in the driver after the pipeline, in bulk batches through the same store the
    index sink uses (Elasticsearch, or the embedded store, which takes one writer).
    A store that pushes back is retried after its ``retry_after``; rows it refuses for
    good are counted and logged, like the sink's dead letters.
    """
    from datetime import UTC, datetime

    import pyarrow.parquet as pq

    from inferstream.connectors.stores import open_store
    from inferstream.connectors.vectors import Document, Upsert
    from inferstream.errors import SinkBackpressureError
    from inferstream.serving.index_meta import index_meta

    meta = index_meta(settings)
    if meta.ref != config.ref:
        raise ConfigError(
            f"the index holds {meta.ref} vectors (elasticsearch.model) and the backfill made {config.ref} ones"
        )
    store = open_store(settings)
    store.setup(meta)
    written = refused = 0
    now = datetime.now(UTC)
    try:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_rows):
            rows = batch.to_pydict()
            for doc_id, text, vector in zip(rows["id"], rows["text"], rows["vector"], strict=True):
                document = Document(
                    id=doc_id,
                    vector=np.asarray(vector, dtype=np.float32),
                    model=config.name,
                    version=config.version,
                    event_time=now,
                    text=text,
                    attributes={"source": "backfill"},
                )
                store.add(Upsert(document))
            while True:
                try:
                    rejections = store.flush()
                    break
                except SinkBackpressureError as exc:
                    time.sleep(exc.retry_after)
            refused += len(rejections)
            written += batch.num_rows - len(rejections)
    finally:
        store.close()
    if refused:
        log.warning("the index refused %d of %d backfilled documents", refused, written + refused)
    return written


def backfill(
    settings: Settings,
    corpus: Sequence[Path],
    out: Path,
    *,
    model: str = DEFAULT_EMBEDDER,
    to: Target = "parquet",
    flags: Sequence[str] = (),
    file_format: str | None = None,
    dead_letters: bool = False,
) -> JobResult:
    """Embed every text of the corpus files and write the vectors to ``out`` (Parquet)."""
    paths = check_inputs(corpus)
    handler = OnnxBatchHandler(settings.models_dir, model)
    if handler.config.kind != "embedder":
        raise ConfigError(f"{handler.ref} is a {handler.config.kind}, not an embedder: use `inferstream job score`")
    result = run_model_job(
        settings,
        "backfill",
        paths,
        handler,
        EmbeddingRows(handler.config),
        rejects_path(out),
        labels=("embed", "rows"),
        outputs=[out],
        out=(out, embedding_schema(handler.config.outputs.dims)),
        flags=flags,
        file_format=file_format,
        dead_letters=dead_letters,
        checksum_columns=CHECKED,
    )
    if to == "index":
        started = time.perf_counter()
        result.indexed = index_parquet(settings, out, handler.config)
        result.elapsed_s += time.perf_counter() - started
    return result
