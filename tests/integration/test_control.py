"""Routes, live rollouts and shadows against the real broker."""

import shutil
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest

from inferstream import Client, Settings
from inferstream.errors import ConfigError
from inferstream.schemas import Prediction
from inferstream.serving.compare import compare
from inferstream.serving.demo_models import TABULAR_NAME, build_tabular, tabular_rows
from inferstream.serving.repository import ModelRepository
from inferstream.serving.routes import promote, read_routes, rollback, set_route
from inferstream.serving.worker import InferenceWorker, WorkerOptions
from inferstream.stack.testing import running_in_thread


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    build_tabular(root)
    # Version 2: the same graph under another version number (routing is what is tested).
    shutil.copytree(root / TABULAR_NAME / "1", root / TABULAR_NAME / "2")
    toml = root / TABULAR_NAME / "2" / "model.toml"
    toml.write_text(toml.read_text().replace('version = "1"', 'version = "2"', 1))
    return root


@pytest.fixture
def control(settings: Settings, models_dir: Path) -> Settings:
    settings = settings.model_copy(update={"models_dir": models_dir})
    with Client(settings) as client:
        client.topics.ensure_platform_topics()
    return settings


@contextmanager
def running(settings: Settings, version: str, options: WorkerOptions | None = None) -> Iterator[InferenceWorker]:
    worker = InferenceWorker(settings, ModelRepository(settings.models_dir).get(TABULAR_NAME, version), options=options)
    with running_in_thread(worker):
        yield worker


def _ask_many(client: Client, ids: list[str]) -> list[Prediction]:
    rows, _ = tabular_rows()
    with ThreadPoolExecutor(8) as pool:
        return list(
            pool.map(lambda i: client.predict(TABULAR_NAME, rows[hash(i) % len(rows)], request_id=i, timeout=30), ids)
        )


def test_a_route_splits_requests_and_changes_take_effect_without_restarts(control: Settings) -> None:
    set_route(control, TABULAR_NAME, {"1": 50, "2": 50})
    with running(control, "1"), running(control, "2"), Client(control) as client:
        first = _ask_many(client, [f"a{i}" for i in range(300)])
        by_version = Counter(p.version for p in first)
        assert by_version["1"] + by_version["2"] == 300
        assert 100 < by_version["1"] < 200, by_version  # 50/50 within a wide tolerance
        # The route a request id took is stable: asking again lands on the same version.
        again = {p.request_id: p.version for p in _ask_many(client, [p.request_id for p in first[:50]])}
        assert all(again[p.request_id] == p.version for p in first[:50])

        promote(control, TABULAR_NAME, "2")  # live: this client's route table follows the control topic
        client.routes.wait_for(TABULAR_NAME, lambda r: r is not None and len(r.versions) == 1)
        assert {p.version for p in _ask_many(client, [f"b{i}" for i in range(100)])} == {"2"}

        back = rollback(control, TABULAR_NAME)
        assert {v.version for v in back.versions} == {"1", "2"}
        client.routes.wait_for(TABULAR_NAME, lambda r: r is not None and len(r.versions) == 2)
        assert {p.version for p in _ask_many(client, [f"c{i}" for i in range(100)])} == {"1", "2"}


def test_routes_are_kept_with_their_history_and_bad_ones_refused(control: Settings) -> None:
    with pytest.raises(ConfigError, match="no route"), Client(control) as client:
        client.predict(TABULAR_NAME, {}, timeout=1)
    set_route(control, TABULAR_NAME, {"1": 100})
    set_route(control, TABULAR_NAME, {"1": 90, "2": 10}, shadow=["2"])
    current = read_routes(control)[TABULAR_NAME]
    assert [(v.version, v.weight) for v in current.versions] == [("1", 90), ("2", 10)]
    assert current.shadow == ["2"]
    assert [(v.version, v.weight) for v in current.previous or []] == [("1", 100)]
    with pytest.raises(ConfigError, match="no version 7"):
        set_route(control, TABULAR_NAME, {"7": 100}, known_versions=["1", "2"])


def test_a_shadow_sees_every_request_and_users_never_see_it(control: Settings) -> None:
    set_route(control, TABULAR_NAME, {"1": 100}, shadow=["2"])
    with (
        running(control, "1"),
        running(control, "2", WorkerOptions(shadow_of=("1",))) as shadow,
        Client(control) as client,
    ):
        answers = _ask_many(client, [f"s{i}" for i in range(200)])
        assert {p.version for p in answers} == {"1"}
        assert not any(p.shadow for p in answers)
        asked = {p.request_id for p in answers}
        shadowed = [
            m.record
            for m in client.subscribe("predictions-shadow", from_beginning=True, max_records=200, idle_timeout=30)
            if isinstance(m.record, Prediction)
        ]
        assert shadow.group_id == control.topics.worker_group(TABULAR_NAME, "2", shadow=True)
    assert {p.request_id for p in shadowed} == asked
    assert all(p.shadow and p.version == "2" for p in shadowed)
    with Client(control) as client:
        seen = [
            m.record
            for m in client.subscribe("predictions", from_beginning=True, idle_timeout=5)
            if isinstance(m.record, Prediction)
        ]
    assert len(seen) == 200
    assert {p.version for p in seen} == {"1"}  # the shadow wrote nothing here
    result = compare(control, TABULAR_NAME, "1", "2")
    assert (result.primary_count, result.shadow_count, result.joined) == (200, 200, 200)
    assert result.agreement == 1.0  # the same graph under two versions


def _predictions(settings: Settings) -> Counter[str]:
    with Client(settings) as client:
        return Counter(
            m.record.request_id
            for m in client.subscribe("predictions", from_beginning=True, idle_timeout=5)
            if isinstance(m.record, Prediction)
        )


def test_exactly_once_serves_each_request_once_across_restarts(control: Settings) -> None:
    rows, _ = tabular_rows()
    topic = control.topics.request_topic(TABULAR_NAME, "1")

    def requests(start: int, stop: int) -> list[dict[str, object]]:
        return [
            {"request_id": f"e{i}", "model": TABULAR_NAME, "version": "1", "inputs": rows[i % len(rows)]}
            for i in range(start, stop)
        ]

    bad = {"request_id": "bad", "model": TABULAR_NAME, "version": "1", "inputs": {"nope": 1.0}}
    with Client(control) as client:
        client.topics.ensure_request_topic(TABULAR_NAME, "1")
        client.produce(topic, [*requests(0, 3000), bad])
    with running(control, "1", WorkerOptions(exactly_once=True)) as worker:
        deadline = time.monotonic() + 60
        while worker.stats.requests < 3001 and time.monotonic() < deadline:
            time.sleep(0.1)
    with Client(control) as client:
        client.produce(topic, requests(3000, 3500))
    with running(control, "1", WorkerOptions(exactly_once=True)) as worker:  # a new transactional id
        deadline = time.monotonic() + 60
        while worker.stats.requests < 500 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert worker.stats.requests == 500  # the first run's offsets were committed in its transactions
    counts = _predictions(control)
    assert set(counts) == {f"e{i}" for i in range(3500)}
    assert max(counts.values()) == 1
    with Client(control) as client:
        letters = list(client.dead_letters())
    assert [letter.source_offset is not None for letter in letters] == [True]
