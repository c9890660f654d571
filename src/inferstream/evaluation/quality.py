"""Quality of predictions against their labels (scikit-learn's metrics), one set of names for every user.

The quality monitors judge windows with them, ``models retrain`` reports them on its
held-out rows, ``models compare`` on labelled shadow traffic, and ``--if-better`` picks
one of the headline metrics to decide a promotion.

Classification: accuracy, precision/recall/F1 per class and their macro F1, ROC AUC
(binary: of the positive class, the last of ``classes``; more classes: one-vs-rest,
macro), log loss and the expected calibration error; the last three need the
probabilities. Regression: MAE, RMSE and R². A metric that the rows cannot define
(ROC AUC with one class present, R² of a constant target) is ``None``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from inferstream.errors import ConfigError

#: The headline metrics of each kind of model (``--if-better`` takes one), and whether higher is better.
CLASSIFIER_METRICS = ("accuracy", "f1_macro", "roc_auc", "log_loss", "ece")
REGRESSOR_METRICS = ("mae", "rmse", "r2")
HIGHER_IS_BETTER = {
    "accuracy": True,
    "f1_macro": True,
    "roc_auc": True,
    "log_loss": False,
    "ece": False,
    "mae": False,
    "rmse": False,
    "r2": True,
}

#: Bins of the expected calibration error (equal width over the confidence).
ECE_BINS = 10

Floats = npt.NDArray[np.float64]


def expected_calibration_error(confidence: Floats, correct: npt.NDArray[np.bool_], bins: int = ECE_BINS) -> float:
    """Σ over confidence bins of |accuracy − mean confidence| weighted by the bin's share of rows."""
    if not len(confidence):
        return float("nan")
    which = np.clip((confidence * bins).astype(np.int64), 0, bins - 1)  # 1.0 goes in the last bin
    counts = np.bincount(which, minlength=bins)
    hits = np.bincount(which, weights=correct.astype(np.float64), minlength=bins)
    confident = np.bincount(which, weights=confidence, minlength=bins)
    used = counts > 0
    gaps = np.abs(hits[used] - confident[used])  # n_b · |acc_b − conf_b|
    return float(gaps.sum() / len(confidence))


def classification_metrics(
    truth: Sequence[str], predicted: Sequence[str], classes: Sequence[str], probabilities: Floats | None
) -> dict[str, float | None]:
    """Metrics of labelled rows; ``probabilities``: one row per prediction, one column per class (or None)."""
    from sklearn.metrics import accuracy_score, log_loss, precision_recall_fscore_support, roc_auc_score

    y = np.asarray(truth, dtype=object)
    p = np.asarray(predicted, dtype=object)
    labels = list(classes)
    if not len(y):  # no label yet: nothing realised (CBPE's estimate stands alone)
        return {"accuracy": None, "f1_macro": None}
    out: dict[str, float | None] = {"accuracy": float(accuracy_score(y, p))}
    precision, recall, f1, _ = precision_recall_fscore_support(y, p, labels=labels, zero_division=0)
    out["f1_macro"] = float(np.mean(f1)) if labels else None  # over every class, as the estimate is
    for i, name in enumerate(labels):
        out[f"precision[{name}]"] = float(precision[i])
        out[f"recall[{name}]"] = float(recall[i])
        out[f"f1[{name}]"] = float(f1[i])
    if probabilities is None:
        return out
    index = {c: i for i, c in enumerate(labels)}
    named = np.asarray([t in index for t in y], dtype=bool)
    y_idx = np.asarray([index[t] for t in y[named]], dtype=np.int64)
    probs = probabilities[named]
    out["roc_auc"] = None
    if len(np.unique(y_idx)) > 1:
        if len(labels) == 2:
            out["roc_auc"] = float(roc_auc_score(y_idx == 1, probs[:, 1]))
        elif len(np.unique(y_idx)) == len(labels):
            out["roc_auc"] = float(roc_auc_score(y_idx, probs, multi_class="ovr", labels=list(range(len(labels)))))
    # float32 graphs and rounded outputs sum to 1 only nearly: scikit-learn warns of that.
    normalised = np.clip(probs, 1e-15, 1.0)
    normalised = normalised / normalised.sum(axis=1, keepdims=True)
    out["log_loss"] = float(log_loss(y_idx, normalised, labels=list(range(len(labels))))) if len(y_idx) else None
    confidence = probabilities.max(axis=1) if len(probabilities) else np.zeros(0)
    out["ece"] = expected_calibration_error(confidence, y == p) if len(y) else None
    return out


def regression_metrics(truth: Floats, predicted: Floats) -> dict[str, float | None]:
    """MAE, RMSE and R² of labelled rows (R² None when the target is constant)."""
    from sklearn.metrics import mean_absolute_error, r2_score, root_mean_squared_error

    if not len(truth):
        return {"mae": None, "rmse": None, "r2": None}
    r2 = float(r2_score(truth, predicted)) if len(truth) > 1 and np.ptp(truth) > 0 else None
    return {
        "mae": float(mean_absolute_error(truth, predicted)),
        "rmse": float(root_mean_squared_error(truth, predicted)),
        "r2": r2,
    }


def metrics_of(kind: str) -> tuple[str, ...]:
    """The headline metrics of a model kind (``classifier`` or ``regressor``)."""
    return CLASSIFIER_METRICS if kind == "classifier" else REGRESSOR_METRICS


def check_metric(metric: str, kind: str) -> str:
    """``metric`` if it measures a model of ``kind``; ConfigError naming the choices otherwise."""
    if metric not in metrics_of(kind):
        raise ConfigError(f"{metric!r} is not a metric of a {kind}: use one of {', '.join(metrics_of(kind))}")
    return metric


def beats(metric: str, candidate: float, incumbent: float) -> bool:
    """Whether ``candidate`` is strictly better than ``incumbent`` on ``metric``."""
    return candidate > incumbent if HIGHER_IS_BETTER[metric] else candidate < incumbent


def known(metrics: dict[str, float | None]) -> dict[str, float]:
    """The metrics the rows could define (lineage and comparisons leave the others out)."""
    return {name: value for name, value in metrics.items() if value is not None}
