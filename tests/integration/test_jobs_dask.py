"""The Beam jobs on a real dask.distributed cluster (2 worker processes) give what the in-process runner gives.

Counts and checksums of backfill, batch scoring and export on both runners, the same
drift reference from the scored rows, replay's records; a task
whose worker dies is retried on the other one without duplicating its output (replay: for
read_committed readers, whether the worker died mid-transaction or after its last commit).
"""

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from distributed import Client, LocalCluster, get_task_stream

from inferstream.config import Settings
from inferstream.connectors.kafka.admin import TopicAdmin
from inferstream.connectors.kafka.producer import Producer
from inferstream.connectors.kafka.reader import read_bounded
from inferstream.connectors.kafka.transactions import ResumableTransactions
from inferstream.demo import sample_texts
from inferstream.jobs._pipeline import JobResult, WriteParts, join_parts, make_pipeline, run
from inferstream.jobs.backfill import backfill
from inferstream.jobs.reference import build as build_reference_job
from inferstream.jobs.score import score
from inferstream.jobs.topics import ProduceRows, export_topic, replay, unit_name
from inferstream.serving.demo_models import TABULAR_NAME, tabular_rows

#: A drift monitor of the demo classifier: one feature and the predicted label.
MONITORS = "\n".join(
    [
        "[[monitors]]",
        'name = "bc"',
        'model = "breast-cancer"',
        'columns = [{ name = "mean_texture" }, { name = "label", kind = "prediction" }]',
    ]
)


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    """A scheduler and two worker processes on loopback, no dashboard."""
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    ) as local:
        yield local


@pytest.fixture
def models_settings(settings: Settings, models_dir: Path) -> Settings:
    return settings.model_copy(update={"models_dir": models_dir})


def _fill(settings: Settings, name: str, count: int, *, partitions: int) -> str:
    """A new topic of ``count`` records (key-i, value-i, header n=i) spread over its partitions; its name."""
    topic = settings.topics.name(name)
    TopicAdmin(settings).create(topic, partitions=partitions, config={"retention.ms": "-1"})
    with Producer(settings) as producer:
        for i in range(count):
            producer.produce(
                topic, f"value-{i}".encode(), f"key-{i}".encode(), [("n", str(i).encode())], partition=i % partitions
            )
        producer.flush()
    return topic


def _on_dask(cluster: LocalCluster) -> list[str]:
    return ["--runner", "dask", "--dask-address", cluster.scheduler_address]


def _workers_used(cluster: LocalCluster, job: Any) -> tuple[JobResult, set[str]]:
    with Client(cluster) as client, get_task_stream(client=client) as stream:
        result = job()
    return result, {task["worker"] for task in stream.data}


def _same(local: JobResult, distributed: JobResult) -> None:
    counts = (distributed.rows_in, distributed.rows_out, distributed.rejected, distributed.checksum)
    assert counts == (local.rows_in, local.rows_out, local.rejected, local.checksum)
    assert distributed.accounted


def test_backfill_and_score_on_two_workers_match_the_in_process_runner(
    models_settings: Settings, cluster: LocalCluster, tmp_path: Path
) -> None:
    texts = sample_texts()[:120]
    corpus = []
    for k in range(3):
        lines = [json.dumps({"id": f"f{k}-{i}", "text": t}) for i, t in enumerate(texts[k * 40 : (k + 1) * 40])]
        lines[4:4] = ["{not json", json.dumps({"id": f"blank-{k}", "text": "  "})]
        corpus.append(tmp_path / f"corpus-{k}.jsonl")
        corpus[-1].write_text("\n".join(lines) + "\n")

    local = backfill(models_settings, corpus, tmp_path / "local" / "e.parquet")
    distributed, workers = _workers_used(
        cluster, lambda: backfill(models_settings, corpus, tmp_path / "dask" / "e.parquet", flags=_on_dask(cluster))
    )

    assert (local.rows_in, local.rows_out, local.rejected) == (126, 120, 6)
    _same(local, distributed)
    assert len(workers) == 2
    assert str(local.checksum).startswith("120:")
    a = pq.read_table(tmp_path / "local" / "e.parquet").sort_by("id")
    b = pq.read_table(tmp_path / "dask" / "e.parquet").sort_by("id")
    assert a.drop(["vector"]).equals(b.drop(["vector"]))
    vectors = [np.stack(t.column("vector").to_numpy(zero_copy_only=False)) for t in (a, b)]
    np.testing.assert_allclose(vectors[0], vectors[1], atol=1e-6)
    assert not list(tmp_path.glob("*/*.parts"))  # the parts were joined and removed
    rejects = pq.read_table(distributed.rejects_path).to_pylist()
    assert sorted((r["source"], r["line"]) for r in rejects) == sorted((str(c), n) for c in corpus for n in (5, 6))

    rows, _ = tabular_rows()
    patients = []
    for k in range(2):
        part = [dict(r, request_id=f"p{k}-{i}") for i, r in enumerate(rows[k * 70 : (k + 1) * 70])]
        part[3] = {**part[3], "mean_radius": None}
        patients.append(tmp_path / f"patients-{k}.parquet")
        pq.write_table(pa.Table.from_pylist(part), patients[-1])
    local = score(models_settings, patients, model=TABULAR_NAME, table_dir=tmp_path / "table-local")
    distributed = score(
        models_settings, patients, model=TABULAR_NAME, table_dir=tmp_path / "table-dask", flags=_on_dask(cluster)
    )
    assert (local.rows_in, local.rows_out, local.rejected) == (140, 138, 2)
    _same(local, distributed)
    again = score(  # a second run on Dask rewrites the same inference-table files
        models_settings, patients, model=TABULAR_NAME, table_dir=tmp_path / "table-dask", flags=_on_dask(cluster)
    )
    assert again.checksum == local.checksum

    monitors = tmp_path / "monitors.toml"
    monitors.write_text(MONITORS)
    monitoring = models_settings.monitoring.model_copy(update={"monitors_file": monitors})
    profiles = []
    for name, flags in (("local", []), ("dask", _on_dask(cluster))):
        at = models_settings.model_copy(update={"monitoring": monitoring, "state_dir": tmp_path / f"state-{name}"})
        files = sorted((tmp_path / f"table-{name}").glob("model=*/date=*/*.parquet"))
        built = build_reference_job(at, "bc", files, flags=flags)
        assert (built.path.name, built.count) == ("v0001", 138)
        profiles.append({column: profile.to_json() for column, profile in built.profiles.items()})
    assert set(profiles[0]) == {"mean_texture", "label"}
    for column, profile in profiles[0].items():
        for key, value in profile.items():  # rows are gathered in another order: float sums may differ in the last bits
            assert profiles[1][column][key] == (pytest.approx(value) if isinstance(value, float) else value), key


def test_export_on_two_workers_matches_the_in_process_runner(
    settings: Settings, cluster: LocalCluster, tmp_path: Path
) -> None:
    topic = _fill(settings, "dask-export", 200, partitions=4)

    local = export_topic(settings, topic, tmp_path / "local.parquet")
    distributed, workers = _workers_used(
        cluster, lambda: export_topic(settings, topic, tmp_path / "dask.parquet", flags=_on_dask(cluster))
    )

    assert local.rows_out == 200
    _same(local, distributed)
    assert len(workers) == 2
    # Parts are joined in key order (partition, offset): the same file from either runner.
    assert pq.read_table(tmp_path / "local.parquet").equals(pq.read_table(tmp_path / "dask.parquet"))


class _DieOnce(beam.DoFn):
    """Kills its worker process the first time it sees element 3 (a marker file remembers): Dask retries the task."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def process(self, n: int) -> Iterator[pa.Table]:
        if n == 3 and not self.marker.exists():
            self.marker.write_text(str(os.getpid()))
            os._exit(1)
        beam.metrics.Metrics.counter("inferstream", "rows_in").inc(10)
        yield pa.table({"n": pa.array([n * 10 + i for i in range(10)], pa.int64())})


def test_a_task_retried_after_its_worker_died_writes_its_rows_once(cluster: LocalCluster, tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    schema = pa.schema([("n", pa.int64())])
    pipeline = make_pipeline(_on_dask(cluster))
    _ = (
        pipeline
        | "numbers" >> beam.Create(list(range(6)))
        | "die once" >> beam.ParDo(_DieOnce(tmp_path / "died"))
        | "write" >> beam.ParDo(WriteParts(out, schema, ["n"]))
    )
    counters = run(pipeline)

    assert (tmp_path / "died").exists()  # a worker did die mid-task
    assert join_parts(out, schema) == 60
    assert sorted(pq.read_table(out).column("n").to_pylist()) == list(range(60))
    assert counters["rows_in"] == 60  # the attempt that died is not counted


def test_cli_runs_a_job_on_a_local_cluster_it_starts(models_settings: Settings, tmp_path: Path) -> None:
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(sample_texts()[:40])))
    env = {
        **os.environ,
        "INFERSTREAM_MODELS_DIR": str(models_settings.models_dir),
        "INFERSTREAM_STATE_DIR": str(tmp_path),
    }
    done = subprocess.run(
        [sys.executable, "-m", "inferstream", "job", "backfill", str(corpus), "--out", str(tmp_path / "e.parquet"),
         "--runner", "dask", "--dask-workers", "2"],
        capture_output=True, env=env, timeout=300, check=False,
    )  # fmt: skip
    err = done.stderr.decode()
    assert done.returncode == 0, err
    assert "backfill: read 40, written 40, rejected 0" in err
    assert "checksum 40:" in err
    assert pq.read_table(tmp_path / "e.parquet").num_rows == 40


class _ReplayThenDie(ProduceRows):
    """Replay's own DoFn in transactions of 10 records, whose worker dies once per file: file 0 with its second
    transaction's records acknowledged but not committed, file 1 right after its last transaction committed."""

    def __init__(self, settings: Settings, topic: str, run_id: str, markers: Path) -> None:
        super().__init__(settings, topic, None, keep_partitions=False, run_id=run_id, chunk_rows=10)
        self.markers = markers

    def process(self, element: tuple[int, str]) -> Iterator[int]:
        totals = list(super().process(element))
        if element[0] == 1:
            self._die_once("1")
        yield from totals

    def _commit(self, unit: ResumableTransactions, count: int) -> None:
        if unit.unit == unit_name(self.run_id, 0) and count == 20:
            unit.producer.flush()  # the broker has the records: only the commit is missing
            self._die_once("0")
        super()._commit(unit, count)

    def _die_once(self, name: str) -> None:
        marker = self.markers / name
        if not marker.exists():
            marker.write_text(str(os.getpid()))
            os._exit(1)


def _keys(settings: Settings, topic: str, isolation: str = "read_committed") -> list[bytes]:
    reader = settings.model_copy(
        update={"kafka": settings.kafka.model_copy(update={"consumer_overrides": {"isolation.level": isolation}})}
    )
    return sorted(m.key() for m in read_bounded(reader, topic, idle_timeout=10))


def test_replay_on_dask_and_what_a_retried_replay_task_does(
    settings: Settings, cluster: LocalCluster, tmp_path: Path
) -> None:
    source = _fill(settings, "dask-replay-source", 60, partitions=2)
    export_topic(settings, source, tmp_path / "all.parquet", flags=_on_dask(cluster))
    halves = [tmp_path / "a.parquet", tmp_path / "b.parquet"]
    table = pq.read_table(tmp_path / "all.parquet")
    pq.write_table(table.slice(0, 30), halves[0])
    pq.write_table(table.slice(30), halves[1])
    everything = sorted(table.column("key").to_pylist())

    target = settings.topics.name("dask-replay-target")
    TopicAdmin(settings).create(target, partitions=2, config={"retention.ms": "-1"})
    result = replay(settings, halves, target, flags=_on_dask(cluster))
    assert (result.rows_in, result.rows_out) == (60, 60)
    assert _keys(settings, target) == everything

    # Each file's worker dies once: file 0 mid-transaction, file 1 after its last commit (before
    # Dask learnt the task was done). Dask runs both tasks again; a read_committed reader sees
    # every record once.
    again = settings.topics.name("dask-replay-retried")
    TopicAdmin(settings).create(again, partitions=2, config={"retention.ms": "-1"})
    markers = tmp_path / "died"
    markers.mkdir()
    pipeline = make_pipeline(_on_dask(cluster))
    _ = (
        pipeline
        | "files" >> beam.Create([(0, str(halves[0])), (1, str(halves[1]))])
        | "produce" >> beam.ParDo(_ReplayThenDie(settings, again, "retried", markers))
    )
    counters = run(pipeline)
    assert sorted(p.name for p in markers.iterdir()) == ["0", "1"]  # both workers did die
    assert (counters["rows_in"], counters["rows_out"]) == (60, 60)
    assert _keys(settings, again) == everything
    # The dead attempt's open transaction (file 0's records 10..19) was aborted by the retry,
    # which went on from record 10: only a read_uncommitted reader sees those records twice.
    aborted = table.slice(10, 10).column("key").to_pylist()
    assert _keys(settings, again, "read_uncommitted") == sorted(everything + aborted)
