"""Training data for a tabular model from the inference table: its labelled rows as arrays.

The rows of every version of the model in the window (event time in [since, until)), with
the label the table joins on read (:func:`inferstream.monitoring.table.read_table`); rows
with no label are left out. Inputs are the model's features as the requests gave them; the
target is the label: a class (its name, or its index in ``outputs.labels``) for a
classifier, a number for a regressor. A request id seen twice (a prediction written again
after a crash) counts once. Rows are taken in request-id order, so the same predictions and
labels give the same arrays and the same hash however the table's files were cut.

A row whose features or label do not fit the model is skipped and counted with its first
reason; when too few rows are left, :class:`TooFewRowsError` says how many there were.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc

from inferstream.errors import ModelError
from inferstream.monitoring.table import read_table
from inferstream.serving.config import ModelConfig, TabularPreprocessing
from inferstream.serving.targets import target_of

_COLUMNS = ["request_id", "event_time", "inputs", "label"]


class TooFewRowsError(ModelError):
    """The table holds too few usable labelled rows of the model to train and hold out from."""


@dataclass(frozen=True)
class TrainingData:
    """Features (rows, features) and target of the labelled rows, with where they came from."""

    features: np.ndarray
    target: np.ndarray  # class indices (int64) of a classifier, values (float64) of a regressor
    first_event_time: datetime
    last_event_time: datetime
    sha256: str
    #: rows in the window, and those without a label
    seen: int
    unlabelled: int
    #: reason → rows skipped for it
    skipped: dict[str, int] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        """Usable labelled rows."""
        return len(self.target)


def tabular_features(config: ModelConfig) -> list[str]:
    """The features of a tabular classifier or regressor; ModelError for any other model."""
    if not isinstance(config.preprocessing, TabularPreprocessing) or config.kind == "embedder":
        raise ModelError(
            f"{config.ref} is a {config.kind} fed by {config.preprocessing.type} preprocessing: only tabular "
            "classifiers and regressors can be retrained from the inference table"
        )
    if len(config.inputs) != 1:
        raise ModelError(f"{config.ref} has {len(config.inputs)} graph inputs: retraining builds graphs of one")
    if config.kind == "classifier" and not config.outputs.labels:
        raise ModelError(f"{config.ref} declares no outputs.labels (class names): retraining needs them")
    return list(config.preprocessing.features)


def _features(names: list[str], inputs: Any) -> list[float]:
    if not isinstance(inputs, dict):
        raise ValueError("inputs are not an object of features")
    row = []
    for name in names:
        value = inputs.get(name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"feature {name!r} is missing or not a number")
        if not math.isfinite(value):
            raise ValueError(f"feature {name!r} is not finite")
        row.append(float(value))
    return row


def labelled_rows(
    table: Path,
    config: ModelConfig,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    min_rows: int = 30,
) -> TrainingData:
    """The labelled rows of ``config``'s model in ``table`` as arrays (see the module)."""
    names = tabular_features(config)
    read = read_table(table, model=config.name, since=since, until=until, columns=_COLUMNS)
    seen = read.num_rows
    read = read.filter(pc.is_valid(read.column("label")))
    by_id = {row["request_id"]: row for row in read.to_pylist()}  # a later copy of one id replaces the earlier
    skipped: Counter[str] = Counter()
    features, target, times = [], [], []
    for request_id in sorted(by_id):
        row = by_id[request_id]
        try:
            values = _features(names, json.loads(row["inputs"]))
            truth = target_of(config, json.loads(row["label"]))
        except ValueError as exc:
            skipped[str(exc)] += 1
            continue
        features.append(values)
        target.append(truth)
        times.append(row["event_time"])
    window = f"between {since.isoformat() if since else 'the start'} and {until.isoformat() if until else 'now'}"
    if len(target) < min_rows:
        reasons = "; ".join(f"{count} skipped: {reason}" for reason, count in skipped.most_common(3))
        raise TooFewRowsError(
            f"{config.name} has {len(target)} usable labelled rows in {table} {window} ({seen} rows, "
            f"{seen - read.num_rows} without a label{'; ' + reasons if reasons else ''}): retraining needs at "
            f"least {min_rows}; produce labels (`inferstream produce labels`), run `inferstream table label-sink`, "
            "or widen --since/--until"
        )
    x = np.asarray(features, dtype=np.float32)
    y = np.asarray(target, dtype=np.int64 if config.kind == "classifier" else np.float64)
    digest = hashlib.sha256(json.dumps({"features": names, "classes": config.outputs.labels}).encode())
    digest.update(np.ascontiguousarray(x).tobytes())
    digest.update(np.ascontiguousarray(y).tobytes())
    return TrainingData(
        features=x,
        target=y,
        first_event_time=min(times),
        last_event_time=max(times),
        sha256=digest.hexdigest(),
        seen=seen,
        unlabelled=seen - read.num_rows,
        skipped=dict(skipped),
    )


__all__ = ["TooFewRowsError", "TrainingData", "labelled_rows", "tabular_features"]
