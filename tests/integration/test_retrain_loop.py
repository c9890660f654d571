"""Retrain → shadow → promote against the real broker.

The labels of the breast cancer rows are flipped (a concept drift: the inputs stay, their
truth changes), so the served version gets them wrong and a version retrained on them
gets them right: the loop must notice and promote it, and only once enough labels came.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow.compute as pc
import pytest

from inferstream import Client, Settings
from inferstream.monitoring.table import read_table, table_dir
from inferstream.serving.compare import compare
from inferstream.serving.demo_models import TABULAR_NAME, build_tabular, tabular_rows
from inferstream.serving.repository import ModelRepository
from inferstream.serving.routes import read_routes, set_route
from inferstream.serving.shadow_trial import shadow_trial
from inferstream.serving.worker import InferenceWorker, WorkerOptions
from inferstream.stack.testing import cli_env, running_in_thread
from inferstream.streams.label_sink import LabelTableSink
from inferstream.streams.table_sink import InferenceTableSink

NAMES = ["malignant", "benign"]


@pytest.fixture
def loop(settings: Settings, tmp_path: Path) -> Settings:
    models = tmp_path / "models"
    build_tabular(models)
    settings = settings.model_copy(update={"models_dir": models})
    with Client(settings) as client:
        client.topics.ensure_platform_topics()
    set_route(settings, TABULAR_NAME, {"1": 100})
    return settings


def _traffic(settings: Settings, prefix: str, rows: range) -> list[str]:
    """Ask the model (by its bare name) for ``rows`` of the data set, then label them with the other class."""
    inputs, targets = tabular_rows()
    ids = [f"{prefix}{i}" for i in rows]
    with Client(settings) as client, ThreadPoolExecutor(8) as pool:
        answers = list(
            pool.map(lambda i: client.predict(TABULAR_NAME, inputs[i], request_id=f"{prefix}{i}", timeout=30), rows)
        )
        assert [a.request_id for a in answers] == ids
        client.produce_labels([{"id": f"{prefix}{i}", "label": NAMES[1 - targets[i]]} for i in rows], source="audit")
    return ids


def _wait(condition: Callable[[], bool], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert condition()


def _cli(settings: Settings, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "inferstream", *args],
        capture_output=True,
        env=cli_env(settings, settings.models_dir),
        timeout=300,
        check=False,
    )
    output = done.stdout.decode() + done.stderr.decode()
    assert done.returncode == 0, output
    print(output)
    return " ".join(output.split())  # rich wraps long lines


def _worker(settings: Settings, version: str, options: WorkerOptions | None = None) -> InferenceWorker:
    return InferenceWorker(settings, ModelRepository(settings.models_dir).get(TABULAR_NAME, version), options=options)


def test_a_retrained_version_is_shadowed_compared_on_labels_and_promoted_only_when_better(loop: Settings) -> None:
    table = table_dir(loop)
    # 1. Served traffic and its (late) labels land in the inference table and the label table.
    with (
        running_in_thread(_worker(loop, "1")),
        running_in_thread(InferenceTableSink(loop, max_delay_s=0.5)),
        running_in_thread(LabelTableSink(loop, max_delay_s=0.5)),
    ):
        _traffic(loop, "a", range(80))

        def labelled() -> int:
            rows = read_table(table, model=TABULAR_NAME, columns=["request_id", "label"])
            return int(pc.sum(pc.is_valid(rows.column("label"))).as_py() or 0)

        _wait(lambda: labelled() == 80)

    # 2. Retrain: a new version, registered with its lineage, and a shadow in the route.
    output = _cli(
        loop, "models", "retrain", TABULAR_NAME, "--from-table", str(table), "--seed", "1", "--min-rows", "40"
    )
    assert (
        f"registered {TABULAR_NAME}:2 from {TABULAR_NAME}:1: logistic_regression (its graph (LinearClassifier))"
        in output
    )
    assert f"{loop.topics.request_topic(TABULAR_NAME, '1')} in group" in output
    assert f"writes only to {loop.topics.platform_topics()['predictions-shadow']}" in output
    lineage = ModelRepository(loop.models_dir).get(TABULAR_NAME, "2").config.training
    assert lineage is not None
    assert (lineage.source_version, lineage.rows, lineage.train_rows, lineage.holdout_rows) == ("1", 80, 64, 16)
    assert lineage.metrics["accuracy"] > 0.8  # of the flipped labels: it learned the new relation
    route = read_routes(loop)[TABULAR_NAME]
    assert [(v.version, v.weight) for v in route.versions] == [("1", 100.0)]
    assert route.shadow == ["2"]

    # 3. The primary serves, the shadow answers the same requests (the earlier ones too); labels come.
    with (
        running_in_thread(_worker(loop, "1")),
        running_in_thread(_worker(loop, "2", WorkerOptions(shadow_of=("1",)))) as shadow,
    ):
        _traffic(loop, "b", range(100, 160))
        _wait(lambda: shadow.stats.predictions >= 140)

    # 4. Compare reports both sides' quality on the same labelled requests.
    result = compare(loop, TABULAR_NAME, "1", "2")
    assert result.quality is not None
    assert (result.joined, result.quality.labelled, result.quality.unusable) == (140, 140, 0)
    assert (
        set(result.quality.primary)
        == set(result.quality.shadow)
        == {"accuracy", "f1_macro", "roc_auc", "log_loss", "ece"}
    )
    assert result.quality.primary["accuracy"] < 0.3 < 0.7 < result.quality.shadow["accuracy"]
    compared = _cli(loop, "models", "compare", TABULAR_NAME, "1", "2")
    assert "labelled requests in both │ 140" in compared
    assert f"v1: {result.quality.primary['accuracy']:.4f}, v2: {result.quality.shadow['accuracy']:.4f}" in compared

    # 5. Not enough labels: nothing moves, and it says why.
    refused = _cli(loop, "models", "promote", TABULAR_NAME, "--if-better", "accuracy", "--min-labelled", "141")
    assert "not promoted: 140 labelled requests answered by both v1 and v2" in refused
    assert "fewer than the 141 asked for" in refused
    assert [v.version for v in read_routes(loop)[TABULAR_NAME].versions] == ["1"]
    # Enough, and better: the shadow gets all the traffic.
    promoted = _cli(loop, "models", "promote", TABULAR_NAME, "--if-better", "accuracy", "--min-labelled", "140")
    assert "promoted: v2's accuracy" in promoted
    assert "on 140 labelled requests (higher is better)" in promoted
    route = read_routes(loop)[TABULAR_NAME]
    assert [(v.version, v.weight) for v in route.versions] == [("2", 100.0)]
    assert route.shadow == []
    assert [(v.version, v.weight) for v in route.previous or []] == [("1", 100.0)]


def test_a_shadow_on_trial_is_promoted_once_enough_labels_came_and_not_when_they_do_not(loop: Settings) -> None:
    # v2 and v3: v1's graph; v2 names its classes the other way round, so it fits the flipped labels.
    root = loop.models_dir / TABULAR_NAME
    for version in ("2", "3"):
        shutil.copytree(root / "1", root / version)
        toml = root / version / "model.toml"
        toml.write_text(toml.read_text().replace('version = "1"', f'version = "{version}"', 1))
    toml = root / "2" / "model.toml"
    toml.write_text(toml.read_text().replace('labels = ["malignant", "benign"]', 'labels = ["benign", "malignant"]'))
    repository = ModelRepository(loop.models_dir)
    set_route(loop, TABULAR_NAME, {"1": 100}, shadow=["2", "3"])
    with running_in_thread(_worker(loop, "1")):
        _traffic(loop, "c", range(30))
    # v3 answers as v1 does: equal accuracy is no reason to promote, whatever the labels.
    same = shadow_trial(
        loop, repository.get(TABULAR_NAME, "3"), primary="1", metric="accuracy", min_labelled=30, wait_s=120, poll_s=1
    )
    assert not same.promote
    assert same.reason.startswith("not promoted: v3's accuracy")
    assert "does not beat v1's" in same.reason
    # Too few labels within the wait: not promoted, and it says how many came.
    waited = shadow_trial(
        loop, repository.get(TABULAR_NAME, "3"), primary="1", metric="accuracy", min_labelled=31, wait_s=3, poll_s=1
    )
    assert not waited.promote
    assert "30 labelled requests" in waited.reason
    assert waited.reason.endswith("after waiting 3 s")
    assert [v.version for v in read_routes(loop)[TABULAR_NAME].versions] == ["1"]
    # v2 gets the labels right: promoted once 30 of its predictions have labels.
    better = shadow_trial(
        loop, repository.get(TABULAR_NAME, "2"), primary="1", metric="f1_macro", min_labelled=30, wait_s=120, poll_s=1
    )
    assert better.promote
    assert better.reason.startswith("promoted: v2's f1")
    assert better.route is not None
    assert read_routes(loop)[TABULAR_NAME].versions == better.route.versions
    assert [(v.version, v.weight) for v in better.route.versions] == [("2", 100.0)]
