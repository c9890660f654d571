"""Producing ground-truth labels to the ``labels`` topic (``Client.produce_labels``).

A label names a prediction by its request id (or, with ``id_type="event"``, by the event
its request was made from); it may come hours after the prediction, more than once (the
latest ``label_time`` wins when the inference table is read), or never.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from inferstream._client.core import Core
from inferstream._client.produce import produce
from inferstream._client.produce_report import OnError, ProduceReport, Progress
from inferstream.schemas.records import Label


def _with_source(labels: Iterable[Mapping[str, Any] | Label], source: str) -> Iterator[Mapping[str, Any] | Label]:
    for label in labels:
        yield label if isinstance(label, Label) or "source" in label else {**label, "source": source}


def produce_labels(
    core: Core,
    labels: Iterable[Mapping[str, Any] | Label],
    *,
    source: str | None = None,
    on_error: OnError = "fail",
    headers: Sequence[tuple[str, bytes]] = (),
    progress: Progress | None = None,
) -> ProduceReport:
    """Validate labels (``{"id": ..., "label": ...}`` or :class:`~inferstream.schemas.Label`) and produce them.

    ``source`` fills in the source of labels given as mappings without one. ``on_error``
    is ``produce``'s: ``fail`` raises at the first invalid label (those before it are
    produced), ``skip`` leaves it out, ``dlq`` dead-letters it with the reason.
    """
    records = labels if source is None else _with_source(labels, source)
    return produce(core, "labels", records, "label", on_error, headers, progress, lines=False)


__all__ = ["produce_labels"]
