"""Quality of a model's outputs against labels, with scikit-learn.

What ``models retrain`` reports on its held-out split and ``models compare`` on labelled
shadow traffic. Classifiers: ``accuracy``, ``f1`` (of the second class for two classes, as
scikit-learn's binary F1; the macro mean of the classes' F1 otherwise), ``auc`` (ROC AUC;
one-vs-rest macro for more classes) and ``log_loss``, the last two only with probabilities
and when the labels hold more than one class. Regressors: ``mae``, ``rmse`` and ``r2`` (from
two labels on). A metric that cannot be computed is left out rather than made up.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from inferstream.errors import ConfigError
from inferstream.serving.config import ModelConfig

#: Every metric, and whether a higher value is better.
HIGHER_IS_BETTER = {
    "accuracy": True,
    "f1": True,
    "auc": True,
    "log_loss": False,
    "mae": False,
    "rmse": False,
    "r2": True,
}
CLASSIFIER_METRICS = ("accuracy", "f1", "auc", "log_loss")
REGRESSOR_METRICS = ("mae", "rmse", "r2")


def metrics_of(kind: str) -> tuple[str, ...]:
    """The metrics of a model kind (``classifier`` or ``regressor``)."""
    return CLASSIFIER_METRICS if kind == "classifier" else REGRESSOR_METRICS


def check_metric(metric: str, kind: str) -> str:
    """``metric`` if it measures a model of ``kind``; ConfigError naming the choices otherwise."""
    if metric not in metrics_of(kind):
        raise ConfigError(f"{metric!r} is not a metric of a {kind}: use one of {', '.join(metrics_of(kind))}")
    return metric


def target_of(config: ModelConfig, value: Any) -> float | int:
    """A label as a classifier's class index or a regressor's number; ValueError with the reason otherwise.

    A class is its name in ``outputs.labels`` or its index there.
    """
    if config.kind == "regressor":
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ValueError("label is not a finite number")
        return float(value)
    names = config.outputs.labels or []
    if isinstance(value, str) and value in names:
        return names.index(value)
    if isinstance(value, bool | int) and 0 <= int(value) < len(names):
        return int(value)
    raise ValueError(f"label is not one of the classes {names} nor their index")


def classifier_metrics(
    truth: np.ndarray, predicted: np.ndarray, probabilities: np.ndarray | None, classes: int
) -> dict[str, float]:
    """Accuracy, F1, ROC AUC and log loss of class indices ``predicted`` against ``truth``.

    ``probabilities``: (rows, classes), in class-index order, or None.
    """
    from sklearn.metrics import accuracy_score, f1_score, log_loss, roc_auc_score

    labels = list(range(classes))
    binary = classes == 2
    found = {
        "accuracy": float(accuracy_score(truth, predicted)),
        "f1": float(
            f1_score(truth, predicted, labels=labels, average="binary" if binary else "macro", zero_division=0.0)
        ),
    }
    if probabilities is not None and len(np.unique(truth)) > 1:
        # float32 graphs and rounded predictions sum to 1 only nearly: scikit-learn warns of that.
        probabilities = np.clip(np.asarray(probabilities, dtype=np.float64), 1e-15, 1.0)
        probabilities = probabilities / probabilities.sum(axis=1, keepdims=True)
        if binary:
            found["auc"] = float(roc_auc_score(truth, probabilities[:, 1]))
        elif len(np.unique(truth)) == classes:
            found["auc"] = float(roc_auc_score(truth, probabilities, multi_class="ovr", labels=labels))
        found["log_loss"] = float(log_loss(truth, probabilities, labels=labels))
    return found


def regressor_metrics(truth: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """MAE, RMSE and R² of ``predicted`` against ``truth``."""
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    found = {
        "mae": float(mean_absolute_error(truth, predicted)),
        "rmse": float(np.sqrt(mean_squared_error(truth, predicted))),
    }
    if len(truth) > 1:
        found["r2"] = float(r2_score(truth, predicted))
    return found


def beats(metric: str, candidate: float, incumbent: float) -> bool:
    """Whether ``candidate`` is strictly better than ``incumbent`` on ``metric``."""
    return candidate > incumbent if HIGHER_IS_BETTER[metric] else candidate < incumbent


__all__ = [
    "CLASSIFIER_METRICS",
    "HIGHER_IS_BETTER",
    "REGRESSOR_METRICS",
    "beats",
    "check_metric",
    "classifier_metrics",
    "metrics_of",
    "regressor_metrics",
    "target_of",
]
