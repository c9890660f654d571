"""docs/metrics.md names every metric the processes export, with its type and labels, and nothing else.

Each process's registry is built as the process builds it (``cli/_metrics.py``'s
helper, then the process's own objects, which register their metric sets), without a
broker: constructing them contacts nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from metrics_doc import PROCESSES as DOCUMENTED_PROCESSES
from metrics_doc import documented_metrics

from inferstream.cli._metrics import exported_metrics
from inferstream.config import Settings
from inferstream.metrics import Metrics
from inferstream.monitoring.reference import build_reference
from inferstream.monitoring.spec import MonitorSpec
from inferstream.serving.demo_models import TABULAR_NAME
from inferstream.serving.repository import ModelRepository


def _serve(settings: Settings, tmp: Path, models_dir: Path) -> Metrics:
    from inferstream.serving.worker import InferenceWorker

    metrics = exported_metrics(settings, None)
    InferenceWorker(settings, ModelRepository(models_dir).resolve(f"{TABULAR_NAME}:1"), metrics=metrics)
    return metrics


def _supervisor(settings: Settings, tmp: Path, models_dir: Path) -> Metrics:
    from inferstream.serving.supervisor import Supervisor

    metrics = exported_metrics(settings, None)
    Supervisor(settings, ["serve"], topics=["requests"], group_id="g", metrics=metrics)
    return metrics


def _ingest(settings: Settings, tmp: Path, models_dir: Path) -> Metrics:
    return exported_metrics(settings, None)  # the processor counts on the shared metrics only


def _index(settings: Settings, tmp: Path, models_dir: Path) -> Metrics:
    from inferstream.streams.index_sink import IndexSink

    metrics = exported_metrics(settings, None)
    IndexSink(settings, metrics=metrics).store.close()
    return metrics


def _table(settings: Settings, tmp: Path, models_dir: Path) -> Metrics:
    from inferstream.streams.table_sink import InferenceTableSink

    metrics = exported_metrics(settings, None)
    InferenceTableSink(settings, root=tmp / "table", metrics=metrics)
    return metrics


def _monitor(settings: Settings, tmp: Path, models_dir: Path) -> Metrics:
    from inferstream.streams.drift_monitor import DriftMonitor

    spec = MonitorSpec.model_validate({"name": "m", "model": "scorer", "version": "1", "columns": [{"name": "x"}]})
    rows = [{"model": "scorer", "version": "1", "inputs": {"x": float(i)}, "outputs": {}} for i in range(50)]
    reference = build_reference(spec, rows, root=tmp / "references", source="test")
    metrics = exported_metrics(settings, None)
    DriftMonitor(settings, spec, reference=reference, metrics=metrics, reports=False)
    # `monitor run` of a quality monitor: its metric set beside the drift monitor's.
    from inferstream.streams.quality_monitor import QualityMonitor

    quality = MonitorSpec.model_validate(
        {
            "name": "q",
            "type": "quality",
            "model": "scorer",
            "window": {"kind": "time"},
            "quality": {"task": "regression", "prediction": "score", "thresholds": {"mae": 1.0}},
        }
    )
    QualityMonitor(settings, quality, metrics=metrics, reports=False)
    return metrics


def _gateway(settings: Settings, tmp: Path, models_dir: Path) -> Metrics:
    from inferstream.gateway import create_app

    metrics = Metrics(namespace=settings.metrics.namespace)  # as `inferstream gateway` builds it
    create_app(settings, metrics=metrics)
    return metrics


PROCESSES: dict[str, Callable[[Settings, Path, Path], Metrics]] = {
    "serve": _serve,
    "supervisor": _supervisor,
    "ingest": _ingest,
    "index": _index,
    "table": _table,
    "monitor": _monitor,
    "gateway": _gateway,
}


def test_the_catalog_builds_every_process_the_list_names() -> None:
    assert set(PROCESSES) == DOCUMENTED_PROCESSES


def _exported(metrics: Metrics) -> dict[str, tuple[str, tuple[str, ...]]]:
    """Exported name → (type, labels) of every family the registry holds."""
    found: dict[str, tuple[str, tuple[str, ...]]] = {}
    for collector, names in metrics.registry._collector_to_names.items():
        labels = tuple(getattr(collector, "_labelnames", getattr(collector, "labelnames", ())))
        for family in collector.describe() if hasattr(collector, "describe") else collector.collect():
            if family.name in names or f"{family.name}_total" in names or family.name + "_bucket" in names:
                name = f"{family.name}_total" if family.type == "counter" else family.name
                found[name] = (family.type, labels)
    return found


@pytest.fixture(scope="module")
def exported(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, tuple[str, ...]]]:
    """Per process: its exported metrics."""
    tmp = tmp_path_factory.mktemp("catalog")
    settings = Settings.load(state_dir=tmp / "state", models_dir=models_dir)
    return {name: _exported(build(settings, tmp, models_dir)) for name, build in PROCESSES.items()}  # type: ignore[misc]


def test_every_exported_metric_is_documented_with_its_type_labels_and_processes(
    exported: dict[str, dict[str, tuple[str, tuple[str, ...]]]],
) -> None:
    documented = documented_metrics()
    for process, metrics in exported.items():
        for name, (kind, labels) in metrics.items():
            assert name in documented, f"{process} exports {name}, which docs/metrics.md does not list"
            assert documented[name][:2] == (kind, labels), f"{name}: exported as {kind} {labels}"
            assert process in documented[name][2], f"{process} exports {name}; docs/metrics.md does not say so"


def test_every_documented_metric_is_exported_where_the_list_says(
    exported: dict[str, dict[str, tuple[str, ...]]],
) -> None:
    for name, (_kind, _labels, processes) in documented_metrics().items():
        for process in processes:
            assert name in exported[process], f"docs/metrics.md lists {name} for {process}, which does not export it"
