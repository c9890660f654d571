"""evidently HTML reports of a quality monitor's window: ClassificationPreset or RegressionPreset.

The window's labelled predictions (a sample of at most ``window.report_rows``) against
the reference window's, when one is declared. Binary classifiers are described with
their positive class (the last class) and its probability; more classes with every
class's probability; regressors with their target and prediction.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from inferstream.monitoring.quality_rows import Rows
from inferstream.monitoring.reports import save_report
from inferstream.monitoring.spec import MonitorSpec

_TARGET, _PREDICTION = "target", "prediction"


def _labelled_sample(rows: Rows, limit: int, seed: int = 0) -> Rows:
    labelled = np.flatnonzero(rows.labelled)
    if len(labelled) > limit:
        labelled = np.sort(np.random.default_rng(seed).choice(labelled, limit, replace=False))
    return rows.take(labelled)


def _frame(rows: Rows, classes: list[str], task: str) -> Any:
    import pandas as pd

    if task == "regression":
        return pd.DataFrame({_TARGET: rows.truth.astype(float), _PREDICTION: rows.predicted.astype(float)})
    frame = pd.DataFrame({_TARGET: list(rows.truth), _PREDICTION: list(rows.predicted)})
    if rows.probabilities is not None:
        column = {c: i for i, c in enumerate(rows.classes)}
        for name in classes:
            frame[name] = rows.probabilities[:, column[name]] if name in column else 0.0
    return frame


def write_quality_report(
    directory: Path, spec: MonitorSpec, *, start: datetime, end: datetime, current: Rows, reference: Rows | None
) -> Path:
    """Run evidently's classification or regression preset on the window's labelled rows; the HTML path."""
    from evidently import BinaryClassification, DataDefinition, Dataset, MulticlassClassification, Regression, Report
    from evidently.presets import ClassificationPreset, RegressionPreset

    assert spec.quality is not None
    task = spec.quality.task
    limit = spec.window.report_rows
    current = _labelled_sample(current, limit)
    reference = None if reference is None else _labelled_sample(reference, limit)
    classes = sorted(set(current.classes) | set(reference.classes if reference is not None else []))
    if task == "regression":
        definition = DataDefinition(
            regression=[Regression(target=_TARGET, prediction=_PREDICTION)], numerical_columns=[_TARGET, _PREDICTION]
        )
        preset: Any = RegressionPreset()
    else:
        has_probabilities = current.probabilities is not None
        if len(classes) == 2:
            task_spec: Any = BinaryClassification(
                target=_TARGET,
                prediction_labels=_PREDICTION,
                prediction_probas=classes[1] if has_probabilities else None,
                pos_label=classes[1],
            )
        else:
            task_spec = MulticlassClassification(
                target=_TARGET, prediction_labels=_PREDICTION, prediction_probas=classes if has_probabilities else None
            )
        definition = DataDefinition(classification=[task_spec], categorical_columns=[_TARGET, _PREDICTION])
        preset = ClassificationPreset()
    snapshot = Report([preset]).run(
        Dataset.from_pandas(_frame(current, classes, task), data_definition=definition),
        None
        if reference is None or not len(reference)
        else Dataset.from_pandas(_frame(reference, classes, task), data_definition=definition),
    )
    return save_report(snapshot, directory, start, end)
