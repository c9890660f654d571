"""Producing: validate records against a topic's contract, produce the good ones in batches, report the rest.

The batches go through a :class:`~inferstream._client.produce_sink.ProduceSink`, which
handles a bad record as ``on_error`` says; this module reads the records, reports
progress and says how many were produced before a failure.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from itertools import islice
from typing import Any

from inferstream._client.core import Core
from inferstream._client.produce_report import OnError, ProduceReport, Progress
from inferstream._client.produce_sink import ProduceSink
from inferstream.connectors.files import SourceRecord
from inferstream.errors import ContractError, TopicError
from inferstream.schemas.codec import codec_for
from inferstream.schemas.records import Contract, contract_named
from inferstream.tracing import TRACEPARENT, current


def produce(
    core: Core,
    topic: str,
    records: Iterable[SourceRecord | Mapping[str, Any] | Contract],
    schema: str | None,
    on_error: OnError,
    headers: Sequence[tuple[str, bytes]],
    progress: Progress | None,
    *,
    lines: bool,
    batch_size: int = 2000,
) -> ProduceReport:
    """Produce ``records`` to ``topic`` (as ``Client.produce`` says); ``lines``: errors name the file line."""
    full = core.names.full(topic)
    # A misspelt topic is the likeliest mistake: say so before anything else (with dlq,
    # records for a missing topic are dead-lettered instead).
    exists = core.names.exists(full)
    if not exists and on_error != "dlq":
        raise TopicError(core.names.missing_message(full))
    contract = contract_named(schema) if schema else core.names.contract_for(full)
    if contract is None:
        raise ContractError(
            f"{full} is not a platform topic, so its contract is unknown: pass schema= (--schema) "
            "with one of event, inference-request, embedding-request, prediction, embedding, drift-alert, route, label"
        )
    codec = codec_for(contract)
    report = ProduceReport(topic=full)
    started = time.perf_counter()
    own = [*headers, codec.header]
    # Records produced inside a trace (tracing.use, or the caller's OpenTelemetry span) carry it on.
    parent = current()
    if parent is not None and not any(key == TRACEPARENT for key, _ in headers):
        own.append((TRACEPARENT, parent.header))
    sink = ProduceSink(core, full, codec, on_error, own, report, lines)
    sink.missing_topic = not exists
    items = iter(records)
    try:
        try:
            while batch := list(islice(items, batch_size)):  # batched in C
                sink.send(batch)
                if progress is not None:
                    progress(len(batch))
        finally:
            sink.finish()
            report.elapsed_s = time.perf_counter() - started
    except Exception as exc:
        # Counted once the producer was flushed: these are acknowledged by the broker.
        produced = f"{report.produced} record was" if report.produced == 1 else f"{report.produced} records were"
        exc.add_note(f"{produced} produced to {full} before the failure")
        raise
    return report
