"""The promote-if-better rule and the quality metrics it reads, without a broker."""

from __future__ import annotations

import numpy as np
import pytest

from inferstream.errors import ConfigError
from inferstream.evaluation.quality import check_metric, classification_metrics, regression_metrics
from inferstream.schemas.records import Route, RouteVersion
from inferstream.serving.compare import Comparison
from inferstream.serving.labelled_quality import LabelledQuality
from inferstream.serving.promotion import decide, primary_of, shadow_of


def _comparison(labelled: int, primary: dict[str, float], shadow: dict[str, float]) -> Comparison:
    return Comparison(
        model="m",
        primary="1",
        shadow="2",
        primary_count=500,
        shadow_count=400,
        joined=400,
        agreement=0.9,
        max_probability_diff=0.3,
        primary_compute_ms=None,
        shadow_compute_ms=None,
        quality=LabelledQuality(labelled, 0, primary, shadow),
    )


def test_a_better_shadow_with_enough_labels_is_promoted_and_the_reason_says_so() -> None:
    decision = decide(_comparison(120, {"accuracy": 0.8}, {"accuracy": 0.9}), "accuracy", 100)
    assert decision.promote
    assert decision.reason == (
        "promoted: v2's accuracy 0.9000 beats v1's 0.8000 on 120 labelled requests (higher is better)"
    )


def test_too_few_labels_a_worse_or_equal_shadow_and_a_missing_metric_are_not_promoted() -> None:
    few = decide(_comparison(99, {"accuracy": 0.1}, {"accuracy": 1.0}), "accuracy", 100)
    assert not few.promote
    assert "99 labelled requests answered by both v1 and v2 (of 400 shadow predictions)" in few.reason
    assert "fewer than the 100 asked for" in few.reason
    same = decide(_comparison(100, {"accuracy": 0.9}, {"accuracy": 0.9}), "accuracy", 100)
    assert not same.promote
    assert "does not beat" in same.reason
    # Lower is better for losses and errors.
    loss = decide(_comparison(100, {"log_loss": 0.3}, {"log_loss": 0.4}), "log_loss", 100)
    assert not loss.promote
    assert "(lower is better)" in loss.reason
    assert decide(_comparison(100, {"mae": 0.4}, {"mae": 0.3}), "mae", 100).promote
    missing = decide(_comparison(100, {"accuracy": 1.0}, {"accuracy": 1.0}), "roc_auc", 100)
    assert not missing.promote
    assert "auc cannot be computed" in missing.reason
    none = Comparison("m", "1", "2", 5, 5, 5, 1.0, None, None, None, quality=None)
    assert not decide(none, "accuracy", 1).promote


def test_the_route_names_one_primary_and_a_shadow() -> None:
    route = Route(model="m", versions=[RouteVersion(version="1", weight=100)], shadow=["2", "3"])
    assert (primary_of(route, "m"), shadow_of(route, "m")) == ("1", "3")
    split = Route(model="m", versions=[RouteVersion(version="1", weight=50), RouteVersion(version="2", weight=50)])
    with pytest.raises(ConfigError, match="sends traffic to v1, v2"):
        primary_of(split, "m")
    with pytest.raises(ConfigError, match="no shadow version"):
        shadow_of(split, "m")
    with pytest.raises(ConfigError, match="no version"):
        primary_of(None, "m")


def test_metrics_match_their_definitions_and_unknown_ones_are_refused() -> None:
    truth = ["b", "m", "m", "b", "m"]
    predicted = ["b", "m", "b", "b", "m"]
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.7, 0.3], [0.1, 0.9]])
    found = classification_metrics(truth, predicted, ["b", "m"], probabilities)
    assert found["accuracy"] == pytest.approx(0.8)
    assert found["f1[m]"] == pytest.approx(0.8)  # precision 1, recall 2/3
    assert found["f1_macro"] == pytest.approx((0.8 + 0.8) / 2)  # b: precision 2/3, recall 1
    assert found["roc_auc"] == pytest.approx(1.0)
    assert found["log_loss"] == pytest.approx(-np.mean(np.log([0.9, 0.8, 0.4, 0.7, 0.9])))
    assert classification_metrics(["m", "m"], ["m", "b"], ["b", "m"], probabilities[:2])["roc_auc"] is None
    errors = regression_metrics(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 5.0]))
    assert errors["mae"] == pytest.approx(2 / 3)
    assert errors["rmse"] == pytest.approx(np.sqrt(4 / 3))
    assert errors["r2"] == pytest.approx(1 - 4 / 2)
    with pytest.raises(ConfigError, match="'mae' is not a metric of a classifier: use one of accuracy, f1_macro"):
        check_metric("mae", "classifier")
