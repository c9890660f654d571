"""Quality of a primary and its shadow on the same labelled requests.

The labels come from the ``labels`` topic itself (read up to its end offsets at the start),
not from the label table: shadow predictions never reach the inference table (its sink
reads ``predictions`` only), and the topic needs no label sink running. As in the table,
the last label of an id wins (the latest ``label_time``, the later record on a tie), and a
label names a prediction by request id or, with ``id_type = "event"``, by the event its
request came from (the request id's label first).

Each side is scored on the requests both versions answered and a label names, with
:mod:`inferstream.evaluation.quality`; labels that are not a class (or a number) of
the model are counted as unusable, not scored.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from inferstream.config import Settings
from inferstream.connectors.kafka.reader import read_bounded
from inferstream.errors import ContractError
from inferstream.evaluation.quality import classification_metrics, known, metrics_of, regression_metrics
from inferstream.schemas.codec import codec_for
from inferstream.schemas.records import Label, Prediction
from inferstream.serving.config import ModelConfig
from inferstream.serving.targets import target_of


@dataclass(frozen=True)
class LabelledQuality:
    """Both sides' metrics on the labelled requests they both answered."""

    labelled: int  # requests in both with a usable label
    unusable: int  # requests in both whose label is no class (or number) of the model
    primary: dict[str, float]
    shadow: dict[str, float]


def read_labels(settings: Settings) -> tuple[dict[str, Any], dict[str, Any]]:
    """The last label value of every request id, and of every event id, on the labels topic."""
    codec = codec_for(Label)
    latest: dict[tuple[str, str], tuple[Any, Any]] = {}
    for message in read_bounded(settings, settings.topics.platform_topics()["labels"], idle_timeout=5.0):
        value = message.value()
        if value is None:
            continue
        try:
            label = codec.decode(value, headers=message.headers())
        except ContractError:  # the label sink dead-letters these; here they label nothing
            continue
        key = (label.id_type, label.id)
        if key not in latest or latest[key][0] <= label.label_time:
            latest[key] = (label.label_time, label.label)
    by_request = {i: v for (kind, i), (_, v) in latest.items() if kind == "request"}
    by_event = {i: v for (kind, i), (_, v) in latest.items() if kind == "event"}
    return by_request, by_event


def _truth(prediction: Prediction, by_request: Mapping[str, Any], by_event: Mapping[str, Any]) -> Any:
    if prediction.request_id in by_request:
        return by_request[prediction.request_id]
    return by_event.get(prediction.source_event_id) if prediction.source_event_id else None


def _score(config: ModelConfig, predictions: Sequence[Prediction], truth: np.ndarray) -> dict[str, float]:
    found = _measure(config, predictions, truth)
    return {name: found[name] for name in metrics_of(config.kind) if name in found}  # the headline ones


def _measure(config: ModelConfig, predictions: Sequence[Prediction], truth: np.ndarray) -> dict[str, float]:
    if config.kind == "regressor":
        return known(regression_metrics(truth, np.asarray([p.outputs.get("score") for p in predictions], np.float64)))
    names = config.outputs.labels or []
    predicted = np.asarray([target_of(config, p.outputs.get("label")) for p in predictions], np.int64)
    given = [p.outputs.get("probabilities") for p in predictions]
    probabilities = None
    if all(isinstance(d, dict) and set(names) <= d.keys() for d in given):
        probabilities = np.asarray([[d[n] for n in names] for d in given if isinstance(d, dict)], np.float64)
    labels, guessed = [names[int(i)] for i in truth], [names[i] for i in predicted]
    return known(classification_metrics(labels, guessed, names, probabilities))


def labelled_quality(
    settings: Settings,
    config: ModelConfig,
    primary: Mapping[str, Prediction],
    shadow: Mapping[str, Prediction],
) -> LabelledQuality:
    """Score both sides (predictions by request id) on the requests in both that have a label."""
    by_request, by_event = read_labels(settings)
    ids, truths, unusable = [], [], 0
    for request_id in sorted(primary.keys() & shadow.keys()):
        value = _truth(primary[request_id], by_request, by_event)
        if value is None:
            continue
        try:
            truths.append(target_of(config, value))
        except ValueError:
            unusable += 1
            continue
        ids.append(request_id)
    if not ids:
        return LabelledQuality(0, unusable, {}, {})
    truth = np.asarray(truths, np.int64 if config.kind == "classifier" else np.float64)
    return LabelledQuality(
        labelled=len(ids),
        unusable=unusable,
        primary=_score(config, [primary[i] for i in ids], truth),
        shadow=_score(config, [shadow[i] for i in ids], truth),
    )


__all__ = ["LabelledQuality", "labelled_quality", "read_labels"]
