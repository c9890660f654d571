"""A quality monitor's rows: the inference table's predictions with their labels, decoded into arrays once.

``read_table`` gives each prediction its ``outputs`` as JSON text and its last label
(``label`` as JSON text, ``label_time``); here they become the predicted class or value,
the probabilities as a matrix over ``classes`` (sorted class names), and the truth.
Classes are compared as text (``1``, ``"1"`` and ``1.0`` are one class), so a model
that answers ``1`` and a labeller who writes ``"1"`` agree. A prediction whose outputs
lack the predicted field (or hold it with the wrong type), or whose probabilities are
missing or not numbers in [0, 1], is counted in ``bad`` and left out: no prediction can
stop a monitor.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from inferstream.monitoring.spec import QualitySpec

#: The inference-table columns a quality monitor reads.
COLUMNS = ["request_id", "version", "event_time", "outputs", "label", "label_time"]

Floats = npt.NDArray[np.float64]


def class_name(value: Any) -> str:
    """A class as text: ``true``/``false`` for booleans, ``1`` for ``1.0``, the text itself for strings."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


@dataclass
class Rows:
    """Decoded rows of one model, in the table's order (event time, partition, offset)."""

    request_ids: list[str]
    versions: npt.NDArray[np.object_]
    times: Floats  # prediction time, seconds since the epoch
    predicted: npt.NDArray[Any]  # class names (object) or values (float)
    probabilities: Floats | None  # rows × classes, None without a probabilities output
    classes: list[str]
    truth: npt.NDArray[Any]  # class names or values; None (object) / NaN where unlabelled
    labelled: npt.NDArray[np.bool_]
    label_times: Floats  # NaN where unlabelled
    bad: int = 0

    def __len__(self) -> int:
        return len(self.times)

    @classmethod
    def empty(cls, spec: QualitySpec) -> Rows:
        """No rows (before the table has any)."""
        regression = spec.task == "regression"
        return cls(
            request_ids=[],
            versions=np.zeros(0, dtype=object),
            times=np.zeros(0),
            predicted=np.zeros(0, dtype=np.float64 if regression else object),
            probabilities=None,
            classes=[],
            truth=np.zeros(0, dtype=np.float64 if regression else object),
            labelled=np.zeros(0, dtype=bool),
            label_times=np.zeros(0),
        )

    def take(self, index: npt.NDArray[np.int64]) -> Rows:
        """The rows at ``index`` (classes kept)."""
        return Rows(
            request_ids=[self.request_ids[i] for i in index.tolist()],
            versions=self.versions[index],
            times=self.times[index],
            predicted=self.predicted[index],
            probabilities=None if self.probabilities is None else self.probabilities[index],
            classes=self.classes,
            truth=self.truth[index],
            labelled=self.labelled[index],
            label_times=self.label_times[index],
        )

    def predicted_index(self) -> npt.NDArray[np.int64]:
        """Per row, the index of its predicted class in ``classes`` (argmax of the probabilities if unknown)."""
        index = {c: i for i, c in enumerate(self.classes)}
        found = np.asarray([index.get(p, -1) for p in self.predicted], dtype=np.int64)
        if self.probabilities is not None and (found < 0).any():
            found = np.where(found < 0, self.probabilities.argmax(axis=1), found)
        return found


def _seconds(column: pa.ChunkedArray) -> Floats:
    values = column.cast(pa.timestamp("ms", tz="UTC")).cast(pa.int64()).to_numpy(zero_copy_only=False)
    return np.asarray(values, dtype=np.float64) / 1000.0


def decode(table: pa.Table, spec: QualitySpec) -> Rows:
    """The table's rows (``read_table(..., columns=COLUMNS)``) as arrays."""
    classify = spec.task == "classification"
    keep: list[int] = []
    predicted: list[Any] = []
    probability_rows: list[dict[str, float]] = []
    names: set[str] = set()
    for i, text in enumerate(table.column("outputs").to_pylist()):
        try:
            outputs = json.loads(text) if text else {}
        except ValueError:
            continue
        value = outputs.get(spec.prediction) if isinstance(outputs, dict) else None
        if classify:
            if value is None or isinstance(value, dict | list):
                continue
            value = class_name(value)
        elif isinstance(value, bool) or not isinstance(value, int | float):
            continue
        probabilities: dict[str, float] = {}
        if classify and spec.probabilities:
            probabilities = _probabilities(outputs.get(spec.probabilities))
            if not probabilities:
                continue  # missing, or not probabilities (outside [0, 1]): this row cannot be scored
        keep.append(i)
        predicted.append(value)
        if classify and spec.probabilities:
            probability_rows.append(probabilities)
            names.update(probabilities)
    index = np.asarray(keep, dtype=np.int64)
    all_labels = table.column("label").to_pylist()
    labels = [all_labels[i] for i in keep]
    truth_values = [None if text is None else json.loads(text) for text in labels]
    labelled = np.asarray([v is not None for v in truth_values], dtype=bool)
    if classify:
        truth: npt.NDArray[Any] = np.asarray([None if v is None else class_name(v) for v in truth_values], dtype=object)
        names.update(predicted)
        names.update(t for t in truth if t is not None)
    else:
        truth = np.asarray([_number(v) for v in truth_values], dtype=np.float64)
        labelled &= ~np.isnan(truth)
    classes = sorted(names)
    ids = table.column("request_id").to_pylist()
    probabilities_matrix = _matrix(probability_rows, classes) if classify and spec.probabilities else None
    label_times = _seconds(table.column("label_time")) if table.num_rows else np.zeros(0)
    return Rows(
        request_ids=[ids[i] for i in keep],
        versions=np.asarray(table.column("version").to_pylist(), dtype=object)[index]
        if table.num_rows
        else np.zeros(0, dtype=object),
        times=_seconds(table.column("event_time"))[index] if table.num_rows else np.zeros(0),
        predicted=np.asarray(predicted, dtype=object if classify else np.float64),
        probabilities=probabilities_matrix,
        classes=classes,
        truth=truth,
        labelled=labelled,
        label_times=np.where(labelled, label_times[index], np.nan) if table.num_rows else np.zeros(0),
        bad=table.num_rows - len(keep),
    )


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return float("nan")
    return float(value)


def _probabilities(value: Any) -> dict[str, float]:
    # By class name ({"benign": 0.9, ...}), or a list in class-index order (classes "0", "1", ...).
    items: Iterable[tuple[Any, Any]]
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return {}
    found = {}
    for key, number in items:
        if isinstance(number, bool) or not isinstance(number, int | float) or not 0.0 <= number <= 1.0:
            return {}
        found[class_name(key)] = float(number)
    return found


def _matrix(rows: list[dict[str, float]], classes: list[str]) -> Floats:
    matrix = np.zeros((len(rows), len(classes)), dtype=np.float64)
    column = {c: i for i, c in enumerate(classes)}
    for r, probabilities in enumerate(rows):
        for name, value in probabilities.items():
            matrix[r, column[name]] = value
    return matrix
