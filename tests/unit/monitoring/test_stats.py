"""Per-window statistics from sketches agree with evidently 0.7 on the same data."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd
import pytest

from inferstream.monitoring.stats import choose_method, merge_all, profile_column, score, sketch_column


def _evidently(
    reference: pd.DataFrame, current: pd.DataFrame, numerical: list[str], categorical: list[str]
) -> dict[str, tuple[str, float]]:
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(numerical_columns=numerical, categorical_columns=categorical)
    snapshot = Report([DataDriftPreset()]).run(
        Dataset.from_pandas(current, data_definition=definition),
        Dataset.from_pandas(reference, data_definition=definition),
    )
    out: dict[str, tuple[str, float]] = {}
    for metric in snapshot.dict()["metrics"]:
        found = re.match(r"ValueDrift\(column=(.+?),method=(.+?),threshold", metric["metric_name"])
        if found:
            out[found.group(1)] = (found.group(2), float(metric["value"]))
    return out


_NAMES = {
    "wasserstein": "Wasserstein distance (normed)",
    "jensenshannon": "Jensen-Shannon distance",
    "ks": "K-S p_value",
    "chisquare": "chi-square p_value",
    "z": "Z-test p_value",
}


def _frames(rng: np.random.Generator, n_ref: int, n_cur: int, shift: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    def frame(n: int, delta: float) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "gauss": rng.normal(10 + delta, 2, n),
                "skewed": rng.lognormal(0, 0.5 + delta / 4, n),
                "integers": rng.integers(0, 40, n) + int(delta * 5),
                "few": rng.choice(
                    [1.0, 2.0, 3.0, 4.0], n, p=[0.4, 0.3, 0.2, 0.1] if not delta else [0.1, 0.2, 0.3, 0.4]
                ),
                "binary": rng.choice([0.0, 1.0], n, p=[0.5, 0.5] if not delta else [0.3, 0.7]),
                "colour": rng.choice(["red", "green", "blue"], n, p=[0.5, 0.3, 0.2] if not delta else [0.3, 0.3, 0.4]),
                "flag": rng.choice(["yes", "no"], n, p=[0.5, 0.5] if not delta else [0.4, 0.6]),
            }
        )

    return frame(n_ref, 0.0), frame(n_cur, shift)


@pytest.mark.parametrize(
    ("n_ref", "n_cur", "shift"), [(5000, 2000, 0.0), (5000, 2000, 0.6), (800, 600, 0.0), (800, 600, 0.6)]
)
def test_window_statistics_agree_with_evidently(n_ref: int, n_cur: int, shift: float) -> None:
    rng = np.random.default_rng(7)
    reference, current = _frames(rng, n_ref, n_cur, shift)
    numerical = ["gauss", "skewed", "integers", "few", "binary"]
    categorical = ["colour", "flag"]
    expected = _evidently(reference, current, numerical, categorical)
    for column in numerical + categorical:
        kind = "numerical" if column in numerical else "categorical"
        values: Any = reference[column].to_numpy()
        profile = profile_column(column, kind, values)
        # Windows arrive in pieces (panes): the sketches of the pieces add up.
        pieces = np.array_split(current[column].to_numpy(), 3)
        result = score(profile, merge_all([sketch_column(profile, piece) for piece in pieces]))
        assert result is not None
        method, value = expected[column]
        assert _NAMES[result.method] == method, column
        if result.method == "wasserstein":
            # Exact but in the few spans where the two CDFs cross (taken linear there).
            assert result.score == pytest.approx(value, rel=0.01, abs=0.001), column
        elif result.method == "ks":
            assert result.score == pytest.approx(value, rel=0.15, abs=0.02), column  # Smirnov's asymptotic p
        else:
            assert result.score == pytest.approx(value, rel=1e-6, abs=1e-9), column
        assert result.drifted == (
            value <= 0.05
            if result.method == "ks"
            else value < 0.05
            if result.method in ("chisquare", "z")
            else value >= 0.1
        ), column


def test_default_choice_follows_evidently_rules() -> None:
    rng = np.random.default_rng(1)
    assert choose_method("numerical", rng.normal(size=2000)) == "wasserstein"
    assert choose_method("numerical", rng.normal(size=500)) == "ks"
    assert choose_method("numerical", rng.integers(0, 3, 2000).astype(float)) == "jensenshannon"
    assert choose_method("numerical", rng.integers(0, 4, 500).astype(float)) == "chisquare"
    assert choose_method("numerical", rng.integers(0, 2, 500).astype(float)) == "z"
    assert choose_method("categorical", np.array(["a", "b", "c"] * 400, dtype=object)) == "jensenshannon"
    assert choose_method("categorical", np.array(["a", "b"] * 100, dtype=object)) == "z"


def test_embedding_distance_flags_a_moved_centroid_only() -> None:
    rng = np.random.default_rng(3)
    reference = rng.normal(size=(3000, 16))
    profile = profile_column("vector", "embedding", reference)
    same = score(profile, sketch_column(profile, rng.normal(size=(1000, 16))))
    moved = score(profile, sketch_column(profile, rng.normal(size=(1000, 16)) + 0.3))
    assert same is not None
    assert moved is not None
    assert not same.drifted
    assert moved.drifted
    assert moved.score > 5 * same.score


def test_profiles_survive_json() -> None:
    rng = np.random.default_rng(5)
    profile = profile_column("x", "numerical", rng.normal(size=3000))
    again = type(profile).from_json(profile.to_json())
    window = rng.normal(0.5, 1, 1000)
    assert score(again, sketch_column(again, window)) == score(profile, sketch_column(profile, window))


def test_psi_override_and_unseen_categories() -> None:
    rng = np.random.default_rng(9)
    profile = profile_column("x", "numerical", rng.normal(size=3000), method="psi", threshold=0.2)
    assert profile.method == "psi"
    assert profile.threshold == 0.2
    shifted = score(profile, sketch_column(profile, rng.normal(1, 1, 1000)))
    assert shifted is not None
    assert shifted.drifted
    colours = profile_column("c", "categorical", np.array(["a", "b"] * 1000, dtype=object))
    unseen = score(colours, sketch_column(colours, np.array(["a", "b", "zz"] * 300, dtype=object)))
    assert unseen is not None
    assert unseen.method == "jensenshannon"
    assert unseen.drifted
