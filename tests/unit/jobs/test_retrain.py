"""Retraining from the inference table, without a broker: reproducible, with lineage, refusing too few rows."""

from __future__ import annotations

import hashlib
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from inferstream.errors import ModelError
from inferstream.jobs.retrain import RetrainOptions, estimator_family, retrain
from inferstream.jobs.training_data import TooFewRowsError
from inferstream.monitoring.label_table import write_labels
from inferstream.monitoring.table import write_batch
from inferstream.schemas.records import Label, Prediction
from inferstream.serving.demo_models import TABULAR_NAME, build_demo_models, build_tabular, tabular_rows
from inferstream.serving.onnx import OnnxModel
from inferstream.serving.repository import ModelRepository

START = datetime(2026, 1, 1, tzinfo=UTC)


def _table(root: Path, count: int, *, flip: bool = False, labelled: int | None = None, bad: int = 0) -> None:
    """``count`` breast-cancer predictions (one a minute), the first ``labelled`` of them labelled.

    ``flip``: the labels say the other class (a concept drift); ``bad``: the last that many labels are no class.
    """
    rows, targets = tabular_rows()
    names = ["malignant", "benign"]
    pick = np.random.default_rng(7).permutation(len(rows))[:count]
    predictions = [
        (
            offset,
            Prediction(
                request_id=f"r{offset:04d}",
                event_time=START + timedelta(minutes=offset),
                model=TABULAR_NAME,
                version="1",
                inputs=rows[i],
                outputs={"label": names[targets[i]]},
                latency={"queue_ms": 0, "compute_ms": 0, "total_ms": 0},
            ),
        )
        for offset, i in enumerate(pick)
    ]
    write_batch(root, "t.predictions", 0, predictions)
    labels = []
    for offset, i in enumerate(pick[: count if labelled is None else labelled]):
        value: object = names[1 - targets[i] if flip else targets[i]]
        if offset >= count - bad:
            value = "unknown"
        labels.append((offset, Label(id=f"r{offset:04d}", label=value, label_time=START + timedelta(days=1))))
    write_labels(root, "t.labels", 0, labels)


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    build_tabular(root)
    return root


def test_the_same_rows_and_seed_give_the_same_bytes_and_another_seed_another_model(
    tmp_path: Path, models_dir: Path
) -> None:
    table = tmp_path / "table"
    _table(table, 120)
    first = retrain(models_dir, TABULAR_NAME, RetrainOptions(table=table, seed=3))
    again = retrain(models_dir, TABULAR_NAME, RetrainOptions(table=table, seed=3, source_version="1"))
    assert (first.version.config.version, again.version.config.version) == ("2", "3")
    assert first.version.onnx_path.read_bytes() == again.version.onnx_path.read_bytes()
    assert first.lineage.data_sha256 == again.lineage.data_sha256
    assert first.lineage.metrics == again.lineage.metrics
    other = retrain(models_dir, TABULAR_NAME, RetrainOptions(table=table, seed=4, source_version="1"))
    assert other.lineage.data_sha256 == first.lineage.data_sha256  # same data, another split
    assert other.version.onnx_path.read_bytes() != first.version.onnx_path.read_bytes()


def test_the_new_version_keeps_the_interface_and_its_lineage_says_where_it_came_from(
    tmp_path: Path, models_dir: Path
) -> None:
    table = tmp_path / "table"
    _table(table, 100, bad=5)
    since = START + timedelta(minutes=10)
    done = retrain(models_dir, TABULAR_NAME, RetrainOptions(table=table, since=since, seed=1, holdout=0.25))
    assert done.family_reason == "its graph (LinearClassifier)"
    reread = ModelRepository(models_dir).get(TABULAR_NAME, "2")
    lineage = reread.config.training
    assert lineage is not None
    assert lineage == done.lineage
    assert (lineage.source_version, lineage.estimator, lineage.seed) == ("1", "logistic_regression", 1)
    assert (lineage.since, lineage.until, lineage.table) == (since, None, str(table))
    assert lineage.rows == 85 == lineage.train_rows + lineage.holdout_rows  # 100 - 10 before since - 5 bad
    assert lineage.holdout_rows == 22
    assert done.data.skipped == {"label is not one of the classes ['malignant', 'benign'] nor their index": 5}
    assert lineage.first_event_time == START + timedelta(minutes=10)
    assert lineage.last_event_time == START + timedelta(minutes=94)  # the last 5 were skipped
    assert lineage.sha256 == hashlib.sha256(reread.onnx_path.read_bytes()).hexdigest()
    assert {"accuracy", "f1_macro", "roc_auc", "log_loss", "ece"} <= set(lineage.metrics)
    assert lineage.metrics["accuracy"] > 0.85
    assert lineage.metrics["roc_auc"] > 0.9
    written = tomllib.loads((reread.directory / "model.toml").read_text())
    assert written["training"]["data_sha256"] == lineage.data_sha256
    # The worker's interface: same input, label and probabilities outputs, class names.
    old = ModelRepository(models_dir).get(TABULAR_NAME, "1").config
    assert (reread.config.inputs, reread.config.outputs, reread.config.preprocessing) == (
        old.inputs,
        old.outputs,
        old.preprocessing,
    )
    outputs = OnnxModel(reread).load().run({"input": np.zeros((3, 30), dtype=np.float32)})
    assert outputs["label"].shape == (3,)
    assert outputs["probabilities"].shape == (3, 2)
    # A version retrained from a retrained one keeps the family its lineage names.
    assert estimator_family(reread) == ("logistic_regression", "its lineage")


def test_a_concept_drift_is_learned(tmp_path: Path, models_dir: Path) -> None:
    table = tmp_path / "table"
    _table(table, 150, flip=True)
    done = retrain(models_dir, TABULAR_NAME, RetrainOptions(table=table, estimator="gradient_boosting"))
    assert done.lineage.estimator == "gradient_boosting"
    assert done.family_reason == "--estimator"
    assert done.lineage.metrics["accuracy"] > 0.8  # the old model gets these labels wrong


def test_too_few_labelled_rows_are_refused_with_the_counts_and_nothing_is_registered(
    tmp_path: Path, models_dir: Path
) -> None:
    table = tmp_path / "table"
    _table(table, 60, labelled=12)
    expected = r"12 usable labelled rows .* \(60 rows, 48 without a label\).*at least 30"
    with pytest.raises(TooFewRowsError, match=expected):
        retrain(models_dir, TABULAR_NAME, RetrainOptions(table=table))
    assert ModelRepository(models_dir).versions(TABULAR_NAME) == ["1"]
    assert [p.name for p in (models_dir / TABULAR_NAME).iterdir()] == ["1"]  # no staging left behind


def test_only_tabular_models_are_retrained(tmp_path: Path) -> None:
    root = tmp_path / "models"
    build_demo_models(root)
    with pytest.raises(ModelError, match="text-topic:1 is a classifier fed by vector preprocessing"):
        retrain(root, "text-topic", RetrainOptions(table=tmp_path / "table"))


def _regressor(root: Path) -> None:
    """``target:1``: a linear regression over two features, converted with skl2onnx."""
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.linear_model import LinearRegression

    x = np.random.default_rng(0).normal(size=(50, 2)).astype(np.float32)
    model = to_onnx(LinearRegression().fit(x, x @ [1.0, 2.0]), initial_types=[("input", FloatTensorType([None, 2]))])
    directory = root / "target" / "1"
    directory.mkdir(parents=True)
    (directory / "model.onnx").write_bytes(model.SerializeToString())
    (directory / "model.toml").write_text(
        'name = "target"\nversion = "1"\nkind = "regressor"\n'
        '[preprocessing]\ntype = "tabular"\nfeatures = ["a", "b"]\n'
        '[[inputs]]\nname = "input"\nsource = "features"\nshape = [-1, 2]\n'
        '[outputs]\nscore = "variable"\n'
    )


def test_a_regressor_is_retrained_on_numeric_labels_and_scored_by_its_errors(tmp_path: Path) -> None:
    models, table = tmp_path / "models", tmp_path / "table"
    _regressor(models)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(60, 2))
    predictions = [
        (
            i,
            Prediction(
                request_id=f"r{i}",
                event_time=START,
                model="target",
                version="1",
                inputs={"a": float(a), "b": float(b)},
                outputs={"score": 0.0},
                latency={"queue_ms": 0, "compute_ms": 0, "total_ms": 0},
            ),
        )
        for i, (a, b) in enumerate(x)
    ]
    write_batch(table, "t.predictions", 0, predictions)
    # The relation changed: the target is now 3a - b; one label is no number.
    labels = [(i, Label(id=f"r{i}", label=float(3 * a - b))) for i, (a, b) in enumerate(x)]
    labels[0] = (0, Label(id="r0", label="high"))
    write_labels(table, "t.labels", 0, labels)
    done = retrain(models, "target", RetrainOptions(table=table, seed=2))
    assert (done.lineage.estimator, done.family_reason) == ("ridge", "its graph (LinearRegressor)")
    assert done.data.skipped == {"label is not a finite number": 1}
    assert done.lineage.rows == 59
    assert set(done.lineage.metrics) == {"mae", "rmse", "r2"}
    assert done.lineage.metrics["r2"] > 0.99
    score = OnnxModel(done.version).load().run({"input": np.array([[1.0, 1.0]], dtype=np.float32)})["variable"]
    assert float(score.reshape(-1)[0]) == pytest.approx(2.0, abs=0.1)


def test_the_cli_refuses_bad_options_and_too_few_rows_at_once(
    tmp_path: Path, models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from inferstream.cli import app
    from inferstream.errors import ConfigError

    table = tmp_path / "table"
    _table(table, 40, labelled=10)
    monkeypatch.setenv("INFERSTREAM_MODELS_DIR", str(models_dir))
    runner = CliRunner()
    retrain_ = ["models", "retrain", TABULAR_NAME, "--from-table", str(table)]
    metric = runner.invoke(app, [*retrain_, "--promote-if-better", "mae"])
    assert isinstance(metric.exception, ConfigError)
    assert "'mae' is not a metric of a classifier" in str(metric.exception)
    both = runner.invoke(app, [*retrain_, "--promote-if-better", "f1_macro", "--no-shadow"])
    assert isinstance(both.exception, ConfigError)
    assert "drop --no-shadow" in str(both.exception)
    few = runner.invoke(app, retrain_)
    assert isinstance(few.exception, TooFewRowsError)
    assert "10 usable labelled rows" in str(few.exception)
    assert ModelRepository(models_dir).versions(TABULAR_NAME) == ["1"]
