"""Quality estimated before labels come: confidence-based performance estimation (CBPE).

When a classifier's probabilities are calibrated, the probability it gives the
predicted class is the chance that the prediction is right, so a window's expected
accuracy is their mean, and its expected confusion matrix follows from them:
per class *c*, TP = Σ p_c over rows predicted *c*, FP = Σ (1 − p_c) over the same
rows, FN = Σ p_c over rows predicted otherwise; F1_c = 2TP / (2TP + FP + FN).
That is NannyML's CBPE, written here with numpy.

Models are seldom calibrated: :class:`Calibration` fits one isotonic map per class
(one-vs-rest) from the probabilities to the outcomes of a labelled reference window,
then renormalises each row. CBPE assumes P(y | x) holds: it follows data drift,
not a concept drift (the labels, when they come, show that one).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]


@dataclass
class Calibration:
    """Isotonic maps per class from predicted probability to observed frequency (identity until fitted)."""

    maps: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def fit(cls, probabilities: Floats, truth: Ints, classes: Sequence[str]) -> Calibration:
        """Fit on a labelled reference: ``truth`` holds indexes into ``classes``, the probabilities' columns."""
        from sklearn.isotonic import IsotonicRegression

        maps = {}
        for column, name in enumerate(classes):
            iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
            iso.fit(probabilities[:, column], (truth == column).astype(np.float64))
            maps[name] = iso
        return cls(maps)

    def apply(self, probabilities: Floats, classes: Sequence[str]) -> Floats:
        """Calibrated probabilities (rows renormalised to sum to 1); a class the reference lacked is kept as is."""
        if not self.maps or not len(probabilities):
            return probabilities
        mapped = np.column_stack(
            [
                self.maps[name].predict(probabilities[:, i]) if name in self.maps else probabilities[:, i]
                for i, name in enumerate(classes)
            ]
        )
        if mapped.shape[1] == 2:
            # Binary: the positive class's map alone (one-vs-rest maps of the two need not sum to 1).
            return np.column_stack([1.0 - mapped[:, 1], mapped[:, 1]])
        total = mapped.sum(axis=1, keepdims=True)
        out: Floats = np.divide(mapped, total, out=np.full_like(mapped, 1.0 / mapped.shape[1]), where=total > 0)
        return out


def estimate(probabilities: Floats, predicted: Ints, classes: Sequence[str]) -> dict[str, float | None]:
    """Expected accuracy, F1 per class and macro F1 of rows; ``predicted`` indexes the predicted class."""
    if not len(predicted):
        return {"accuracy": None, "f1_macro": None}
    rows = np.arange(len(predicted))
    out: dict[str, float | None] = {"accuracy": float(probabilities[rows, predicted].mean())}
    f1s = []
    for i, name in enumerate(classes):
        chosen = predicted == i
        p = probabilities[:, i]
        tp = float(p[chosen].sum())
        fp = float((1.0 - p[chosen]).sum())
        fn = float(p[~chosen].sum())
        denominator = 2 * tp + fp + fn
        f1 = 2 * tp / denominator if denominator > 0 else 0.0
        out[f"f1[{name}]"] = f1
        f1s.append(f1)
    out["f1_macro"] = float(np.mean(f1s))
    return out
