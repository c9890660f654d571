"""Retraining: a new version of a tabular model from the inference table's labelled rows.

The labelled rows (:mod:`inferstream.jobs.training_data`) are split into a training and a
held-out part (stratified by class where every class has two rows, with the seed), an
estimator of the source version's family is fitted on the training part with scikit-learn,
converted with skl2onnx to a graph of the source version's interface (its input name and
type, its ``label``/``probabilities`` or ``score`` output names), and scored on the
held-out part *through ONNX Runtime*, so the metrics are those of the file that will serve.
The version is validated (loaded, checked against the graph, a dummy batch run) before it
is moved into place as the next version of the model; its ``model.toml`` keeps the lineage
under ``[training]``: the source version, estimator, seed, table, window asked for and
event-time range used, row counts, a sha256 of the training data and of the graph, and the
held-out metrics.

The estimator family: the one the source version's lineage names; else the one its graph
shows (a linear classifier or regressor → logistic regression / ridge; a tree ensemble →
gradient boosting); else logistic regression for a classifier and gradient boosting for a
regressor. The same data, seed and library versions give a byte-identical ``model.onnx``.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from inferstream.errors import ConfigError, ModelError
from inferstream.evaluation.quality import classification_metrics, known, regression_metrics
from inferstream.jobs.training_data import TooFewRowsError, TrainingData, labelled_rows, tabular_features
from inferstream.serving.config import ModelConfig, TrainingLineage
from inferstream.serving.onnx import OnnxModel, ValidationReport
from inferstream.serving.registry import next_version, render_toml
from inferstream.serving.repository import ModelRepository, ModelVersion

_OPSET = 17
#: Estimator families by model kind; the first is the default.
FAMILIES = {
    "classifier": ("logistic_regression", "gradient_boosting"),
    "regressor": ("gradient_boosting", "ridge"),
}
# ONNX-ML operators that tell a graph's family.
_GRAPH_FAMILIES = {
    "LinearClassifier": "logistic_regression",
    "LinearRegressor": "ridge",
    "TreeEnsembleClassifier": "gradient_boosting",
    "TreeEnsembleRegressor": "gradient_boosting",
    "TreeEnsemble": "gradient_boosting",
}
STEPS = ("read the labelled rows", "train", "convert to ONNX", "score the held-out rows", "register")


@dataclass(frozen=True)
class RetrainOptions:
    """What to train from and how."""

    table: Path
    since: datetime | None = None
    until: datetime | None = None
    seed: int = 0
    holdout: float = 0.2
    min_rows: int = 30
    #: The version retrained (default: the latest); its interface and family are kept.
    source_version: str | None = None
    #: An estimator family of :data:`FAMILIES` (default: the source version's).
    estimator: str | None = None


@dataclass(frozen=True)
class Retrained:
    """What retraining made: the new version, the one it came from, and how."""

    version: ModelVersion
    source: ModelVersion
    lineage: TrainingLineage
    #: why this estimator family ("its lineage", "its graph (LinearClassifier)", "the default")
    family_reason: str
    data: TrainingData
    report: ValidationReport


def estimator_family(version: ModelVersion) -> tuple[str, str]:
    """The estimator family of a version, and how it is known (see the module)."""
    config = version.config
    if config.training is not None:
        return config.training.estimator, "its lineage"
    import onnx

    graph = onnx.load(str(version.onnx_path), load_external_data=False).graph
    for node in graph.node:
        family = _GRAPH_FAMILIES.get(node.op_type)
        if family in FAMILIES[config.kind]:
            return family, f"its graph ({node.op_type})"
    return FAMILIES[config.kind][0], f"the default for a {config.kind}"


def _estimator(kind: str, family: str, seed: int) -> Any:
    from sklearn.ensemble import GradientBoostingClassifier, GradientBoostingRegressor
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if kind == "classifier" and family == "logistic_regression":
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=seed))
    if kind == "classifier":
        return GradientBoostingClassifier(n_estimators=100, max_depth=3, random_state=seed)
    if family == "ridge":
        return make_pipeline(StandardScaler(), Ridge(alpha=1.0))
    return GradientBoostingRegressor(n_estimators=100, max_depth=3, random_state=seed)


def _split(data: TrainingData, kind: str, holdout: float, seed: int) -> tuple[np.ndarray, ...]:
    from sklearn.model_selection import train_test_split

    stratify = None
    if kind == "classifier":
        counts = np.bincount(data.target)
        stratify = data.target if counts[counts > 0].min() >= 2 else None
    return tuple(train_test_split(data.features, data.target, test_size=holdout, random_state=seed, stratify=stratify))


def _to_onnx(estimator: Any, config: ModelConfig) -> bytes:
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType

    spec = config.inputs[0]
    tensor = DoubleTensorType if spec.dtype == "float64" else FloatTensorType
    last = estimator.steps[-1][1] if hasattr(estimator, "steps") else estimator
    options = {id(last): {"zipmap": False}} if config.kind == "classifier" else None
    model = to_onnx(
        estimator,
        initial_types=[(spec.name, tensor([None, len(tabular_features(config))]))],
        options=options,
        target_opset=_OPSET,
    )
    outputs = config.outputs
    names = {"output_label": outputs.label, "output_probability": outputs.probabilities, "variable": outputs.score}
    graph = model.graph
    for output in graph.output:
        new = names.get(output.name)
        if new and new != output.name:
            old = output.name
            output.name = new
            for node in graph.node:
                node.output[:] = [new if o == old else o for o in node.output]
    model.producer_name = "inferstream models retrain"
    model.producer_version = ""
    model.doc_string = ""
    return bytes(model.SerializeToString())


def _holdout_metrics(model: OnnxModel, config: ModelConfig, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    outputs = model.run({config.inputs[0].name: x.astype(config.inputs[0].dtype)})
    spec = config.outputs
    if config.kind == "regressor":
        assert spec.score is not None
        return known(regression_metrics(y, np.asarray(outputs[spec.score], dtype=np.float64).reshape(len(y))))
    names = spec.labels or []
    probabilities = np.asarray(outputs[spec.probabilities], np.float64) if spec.probabilities else None
    if spec.label:
        predicted = np.asarray(outputs[spec.label]).astype(np.int64).reshape(len(y))
    else:
        assert probabilities is not None
        predicted = probabilities.argmax(axis=1)
    truth, guessed = [names[i] for i in y], [names[i] for i in predicted]
    return known(classification_metrics(truth, guessed, names, probabilities))


def retrain(
    models_dir: Path,
    name: str,
    options: RetrainOptions,
    on_step: Callable[[str], None] | None = None,
) -> Retrained:
    """Train, convert, score and register the next version of ``name`` (see the module).

    ``on_step`` is told each step's name as it starts (for progress bars).
    """
    step = on_step or (lambda _: None)
    if not 0 < options.holdout < 1:
        raise ConfigError(f"--holdout is the share of rows held out, in (0, 1), not {options.holdout}")
    repository = ModelRepository(models_dir)
    source = repository.get(name, options.source_version)
    config = source.config
    tabular_features(config)
    family, reason = estimator_family(source)
    if options.estimator is not None:
        if options.estimator not in FAMILIES[config.kind]:
            raise ConfigError(
                f"{options.estimator!r} is no estimator for a {config.kind}: use {', '.join(FAMILIES[config.kind])}"
            )
        family, reason = options.estimator, "--estimator"
    step(STEPS[0])
    data = labelled_rows(options.table, config, since=options.since, until=options.until, min_rows=options.min_rows)
    x_train, x_test, y_train, y_test = _split(data, config.kind, options.holdout, options.seed)
    if config.kind == "classifier":
        missing = sorted(set(range(len(config.outputs.labels or []))) - set(y_train.tolist()))
        if missing:
            names = [(config.outputs.labels or [])[i] for i in missing]
            raise TooFewRowsError(
                f"the training rows of {name} hold no label of the class(es) {names}: the new version must "
                "know every class of the old one; produce labels of those classes or widen --since/--until"
            )
    step(STEPS[1])
    estimator = _estimator(config.kind, family, options.seed)
    estimator.fit(x_train, y_train)
    step(STEPS[2])
    onnx_bytes = _to_onnx(estimator, config)
    version = next_version(repository.versions(name))
    staging = Path(tempfile.mkdtemp(prefix=f".retrain-{name}-", dir=models_dir / name))
    try:
        directory = staging / version
        directory.mkdir()
        (directory / "model.onnx").write_bytes(onnx_bytes)
        lineage = TrainingLineage(
            source_version=config.version,
            estimator=family,
            seed=options.seed,
            table=str(options.table),
            since=options.since,
            until=options.until,
            first_event_time=data.first_event_time,
            last_event_time=data.last_event_time,
            rows=data.rows,
            train_rows=len(y_train),
            holdout_rows=len(y_test),
            data_sha256=data.sha256,
            metrics={},
            sha256=hashlib.sha256(onnx_bytes).hexdigest(),
            trained_at=datetime.now(UTC),
        )
        staged = ModelVersion(config=config.model_copy(update={"version": version}), directory=directory)
        step(STEPS[3])
        model = OnnxModel(staged)
        try:
            report = model.validate()
        except ModelError as exc:
            raise ModelError(f"the retrained graph does not fit {config.ref}'s model.toml: {exc}") from None
        lineage = lineage.model_copy(update={"metrics": _holdout_metrics(model, config, x_test, y_test)})
        step(STEPS[4])
        new_config = ModelConfig.model_validate(
            {
                **config.model_dump(exclude={"source", "training"}),
                "version": version,
                "training": lineage,
            }
        )
        header = (
            f"# Retrained by `inferstream models retrain` from {config.ref} ({family}, seed {options.seed}):\n"
            "# the lineage and held-out metrics are under [training].\n"
        )
        (directory / "model.toml").write_text(render_toml(new_config, header))
        final = models_dir / name / version
        directory.rename(final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return Retrained(
        version=ModelVersion(config=new_config, directory=final),
        source=source,
        lineage=lineage,
        family_reason=reason,
        data=data,
        report=replace(report, ref=new_config.ref),
    )


__all__ = ["FAMILIES", "STEPS", "RetrainOptions", "Retrained", "estimator_family", "retrain"]
