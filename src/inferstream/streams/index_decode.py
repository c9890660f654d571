"""The index sink's decoding: a batch of ``embeddings`` records into the columns a store writes.

::

    messages ──▶ compiled decode of each value (msgspec: fields checked, vector left as bytes)
                   │ taken                         │ not taken: the model's path, record by record
                   ▼                               ▼ (exact checks and messages; tombstones)
             ids, times, texts, ... ◀──────── Upsert / Delete ──▶ refused (reason, error class)
             vector bytes joined: one (rows, dims) float32 block, NaN and zero rows checked at once

What the compiled path takes, the model takes with the same values
(:class:`~inferstream.schemas.compiled.FastFields`); a record it does not take, of
another model or dims, or whose vector holds NaN or infinities, is decoded again by
the model's path, which refuses it with the message the sink always gave (or takes
it: an epoch timestamp, a vector as a JSON array). Rows keep the offset order of
their records, so the last update of an id is the last row for it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import NamedTuple

import confluent_kafka
import numpy as np

from inferstream.connectors.kafka._util import headers_of
from inferstream.connectors.vectors import Delete, Document, IndexMeta, Op, Ops, Upsert
from inferstream.errors import ContractError
from inferstream.schemas.codec import codec_for
from inferstream.schemas.compiled import FastFields, UnsupportedError
from inferstream.schemas.records import Embedding

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ZERO_VECTOR = "cosine similarity cannot take a zero-magnitude vector"


class Refused(NamedTuple):
    """A record that cannot be indexed, for the dead-letter topic."""

    message: confluent_kafka.Message
    reason: str
    error_class: str


@dataclass
class Decoded:
    """A batch of records decoded: the operations (rows in offset order), each row's record, and the refused."""

    ops: Ops
    messages: list[confluent_kafka.Message]
    refused: list[Refused] = field(default_factory=list)


class RejectedError(Exception):
    """A record the index cannot take, with the error class its dead letter carries."""

    def __init__(self, reason: str, error_class: str) -> None:
        super().__init__(reason)
        self.error_class = error_class


class IndexDecoder:
    """Decodes ``embeddings`` records for an index holding ``meta`` vectors (named ``index`` in messages)."""

    def __init__(self, meta: IndexMeta, index: str) -> None:
        self.meta = meta
        self.index = index
        self._codec = codec_for(Embedding)
        self._zero = bytes(4 * meta.dims)
        self._fast: FastFields | None = None
        self._timestamp: Callable[[str], datetime] = datetime.fromisoformat  # the model's, once known
        try:
            # The vector is joined into one block for the batch; the model and version are
            # compared with the index's, which are valid names (checked here once), so a record
            # holding them needs no check of its own; the timestamp is converted below.
            fast = FastFields(Embedding, raw=frozenset({"vector", "model", "version", "event_time"}))
            fast.conversions["model"](meta.model)
            fast.conversions["version"](meta.version)
        except (UnsupportedError, ValueError):
            return  # every record the model's way
        self._fast = fast
        self._timestamp = fast.conversions["event_time"]

    def decode(self, messages: Sequence[confluent_kafka.Message], *, yield_every: int = 0) -> Decoded:
        """The operations of ``messages`` and the records refused; never raises for a record's bytes.

        ``yield_every``: give other threads the GIL after this many records (0: never).
        """
        meta = self.meta
        model, version, size = meta.model, meta.version, len(self._zero)
        header = self._codec.header
        fast = self._fast.decode if self._fast is not None else None
        timestamp = self._timestamp
        rows: list[tuple[str, bool, bytes, datetime, str | None, Mapping[str, str]]] = []
        kept: list[confluent_kafka.Message] = []
        refused: list[Refused] = []
        for n, message in enumerate(messages, 1):
            if yield_every and not n % yield_every:
                time.sleep(0)
            try:
                value = message.value()
                record = None
                if fast is not None and value is not None:
                    headers = message.headers()
                    if headers and headers[0] == header:  # this very contract: nothing more to check in them
                        record = fast(value)
                if (
                    record is not None
                    and record.model == model
                    and record.version == version
                    and len(record.vector) == size
                ):
                    rows.append(
                        (record.id, False, record.vector, timestamp(record.event_time), record.text, record.attributes)
                    )
                else:
                    rows.append(self._row(self.op_of(message)))
                kept.append(message)
            except RejectedError as exc:
                refused.append(Refused(message, str(exc), exc.error_class))
            except Exception as exc:  # whatever else this record's bytes cause: about it alone
                refused.append(Refused(message, str(exc) or type(exc).__name__, type(exc).__name__))
        if not rows:
            return Decoded(Ops.of([]), kept, refused)
        ids, deletes, vectors, times, texts, attributes = map(list, zip(*rows, strict=True))
        block = np.frombuffer(b"".join(vectors), dtype="<f4").astype(np.float32, copy=False)
        ops = Ops(
            ids=ids,
            deletes=deletes,
            vectors=block.reshape(len(rows), meta.dims),
            models=[model] * len(rows),
            versions=[version] * len(rows),
            event_times=times,
            texts=texts,
            attributes=attributes,
        )
        return self._checked(Decoded(ops, kept, refused))

    def _row(self, op: Op) -> tuple[str, bool, bytes, datetime, str | None, Mapping[str, str]]:
        if isinstance(op, Delete):
            return (op.id, True, self._zero, _EPOCH, None, {})
        doc = op.document
        return (doc.id, False, np.asarray(doc.vector, dtype="<f4").tobytes(), doc.event_time, doc.text, doc.attributes)

    def _checked(self, decoded: Decoded) -> Decoded:
        """Refuses the rows whose vector holds NaN or infinities, or is all zeros under cosine: one pass for all."""
        ops = decoded.ops
        block = ops.vectors
        assert isinstance(block, np.ndarray)
        bad = np.asarray(~np.isfinite(block).all(axis=1))
        if self.meta.similarity == "cosine":
            zero = np.asarray(~block.any(axis=1) & ~np.asarray(ops.deletes, dtype=bool))
        else:
            zero = np.zeros(len(ops), dtype=bool)
        if not bad.any() and not zero.any():
            return decoded
        rows = []
        bad_rows: list[bool] = bad.tolist()
        zero_rows: list[bool] = zero.tolist()
        for row, (is_bad, is_zero) in enumerate(zip(bad_rows, zero_rows, strict=True)):
            message = decoded.messages[row]
            if is_bad:
                try:  # the model's path words it (a NaN never gets through it)
                    self.op_of(message)
                except RejectedError as exc:
                    decoded.refused.append(Refused(message, str(exc), exc.error_class))
                    continue
                except Exception as exc:
                    decoded.refused.append(Refused(message, str(exc) or type(exc).__name__, type(exc).__name__))
                    continue
            if is_zero:
                decoded.refused.append(Refused(message, ZERO_VECTOR, "ZeroVector"))
                continue
            rows.append(row)
        return Decoded(ops.take(rows), [decoded.messages[row] for row in rows], decoded.refused)

    def op_of(self, message: confluent_kafka.Message) -> Op:
        """One record through the model's path: the operation, or ``RejectedError`` saying why not."""
        value = message.value()
        if value is None:
            key = message.key()
            document_id: str | None
            if isinstance(key, bytes):
                try:
                    document_id = key.decode("utf-8")
                except UnicodeDecodeError:  # replacing bytes would delete another document
                    raise RejectedError("tombstone whose key is not UTF-8: no document id", "InvalidId") from None
            else:
                document_id = key
            if not document_id or not document_id.strip():
                raise RejectedError("tombstone without a key: no document id to delete", "MissingId")
            return Delete(document_id)
        raw_headers = message.headers()
        # The usual first header names this very contract: nothing more to check in them.
        headers = None if raw_headers and raw_headers[0] == self._codec.header else headers_of(message)
        try:
            embedding = self._codec.decode(value, headers=headers)
        except ContractError as exc:
            raise RejectedError(str(exc), type(exc).__name__) from None
        meta = self.meta
        if (embedding.model, embedding.version) != (meta.model, meta.version):
            raise RejectedError(
                f"embedding of {embedding.model}:{embedding.version}, but index {self.index} holds "
                f"{meta.ref} vectors (queries are embedded with {meta.ref}); index it into another index",
                "ModelMismatch",
            )
        if embedding.dims != meta.dims:
            raise RejectedError(
                f"vector has {embedding.dims} dims; index {self.index} holds {meta.dims}-dim vectors of {meta.ref}",
                "DimensionMismatch",
            )
        return Upsert(
            Document(
                id=embedding.id,
                vector=embedding.vector,
                model=embedding.model,
                version=embedding.version,
                event_time=embedding.event_time,
                text=embedding.text,
                attributes=embedding.attributes,
            )
        )
