"""The end-to-end demo behind ``inferstream demo``: the whole platform, live, on this machine.

It starts what it needs (a local Kafka from Maven unless one is reachable), builds
the demo models, and runs the platform: the ingest processor (faust, a process of
its own) routes events to model requests, an embedding worker and a classifier
worker serve them, the index sink keeps the vector index (embedded store, or
Elasticsearch when configured) in sync, and a drift monitor watches the
predictions against a reference. It produces documentation passages and clinical
measurements that grow 30% half-way, plus a few bad records (dead-lettered), then
shows the predictions, a search, the drift alert with its report, a ``predict()``
round trip, and stops everything it started (also on Ctrl-C).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np

from inferstream.client import Client
from inferstream.config import Settings
from inferstream.connectors.kafka.admin import TopicAdmin
from inferstream.demo_quality import LoopSummary, QualityLoop
from inferstream.errors import InferstreamError, KafkaError
from inferstream.stack.kafka import KafkaServer

if TYPE_CHECKING:
    from inferstream.evaluation.queries import LabelledQuery
    from inferstream.schemas.records import Route
    from inferstream.serving.repository import ModelVersion

Say = Callable[[str], None]
#: Called with the demo's settings and its summary while the platform still runs (``demo --keep``
#: serves the dashboard there until Ctrl-C); the platform stops when it returns.
Keep = Callable[[Settings, "DemoSummary"], None]


@dataclass
class DemoSummary:
    """What the demo did; every produced event is either read back or accounted for."""

    bootstrap_servers: str
    prefix: str
    started_kafka: bool
    events_produced: int = 0
    events_read: int = 0
    bad_records: int = 0
    dead_letters: int = 0
    produce_rps: float = 0.0
    requests: int = 0
    predictions: int = 0
    request_dead_letters: int = 0
    mean_batch_size: float = 0.0
    latency_p50_ms: float = 0.0
    latency_p99_ms: float = 0.0
    malignant_share_before: float = 0.0
    malignant_share_after: float = 0.0
    predict_round_trip_ms: float = 0.0
    elapsed_s: float = 0.0
    planned_events: int = 0
    indexed: int = 0
    embedding_dead_letters: int = 0
    alerts: int = 0
    alert: dict[str, Any] | None = None
    report_path: str | None = None
    search_query: str = ""
    search_hits: list[str] = field(default_factory=list)
    search_ms: float = 0.0
    samples: list[dict[str, Any]] = field(default_factory=list)
    #: the quality loop after the drift: labels, the quality alert, v2 retrained, on trial, promoted
    loop: LoopSummary = field(default_factory=LoopSummary)

    @property
    def documents(self) -> int:
        """Documentation events (every other event): each one should be in the index."""
        return self.events_produced - self.events_produced // 2

    @property
    def accounted(self) -> bool:
        """True when every event was read back and answered or indexed, every bad record dead-lettered."""
        return (
            self.events_read == self.events_produced
            and self.predictions + self.request_dead_letters == self.requests
            and self.indexed + self.embedding_dead_letters == self.documents
            and self.dead_letters == self.bad_records + self.request_dead_letters + self.embedding_dead_letters
        )


def sample_texts() -> list[str]:
    """Passages of Python's own documentation (``pydoc_data.topics``), a corpus every CPython has."""
    from pydoc_data.topics import topics

    passages = []
    for name in sorted(topics):
        for paragraph in topics[name].split("\n\n"):
            text = " ".join(paragraph.split())
            if 80 <= len(text) <= 600:
                passages.append(text)
    return passages


def passage_id(position: int) -> str:
    """The id :func:`sample_events` gives the passage at ``position`` of :func:`sample_texts` (its first pass)."""
    return f"doc-{2 * position}"


def demo_queries(*, passages: int = 500, count: int = 60, seed: int = 17) -> list[LabelledQuery]:
    """The labelled query set over the first ``passages`` passages the demo indexes (a 1000-event run's).

    The set shipped as ``inferstream/evaluation/demo-queries.jsonl``; ``inferstream eval
    build-queries`` writes it again.
    """
    from inferstream.evaluation.queries import build_query_set

    return build_query_set(sample_texts()[:passages], passage_id, count=count, seed=seed)


def sample_events(
    count: int, *, seed: int = 7, shift_after: float = 0.5, origin: datetime | None = None, every_s: float = 1.0
) -> Iterator[dict[str, Any]]:
    """Alternating documentation passages and clinical measurements; the measurements shift after ``shift_after``.

    With ``origin``, the k-th clinical event happened ``k * every_s`` seconds after it (else: when produced).
    """
    texts = sample_texts()
    rows = clinical_rows(count // 2, shift_after=shift_after)
    for i in range(count):
        if i % 2 == 0:
            yield {"id": f"doc-{i}", "type": "doc", "source": "pydoc", "text": texts[(i // 2) % len(texts)]}
        else:
            features, shifted = next(rows)
            at = None if origin is None else origin + timedelta(seconds=i // 2 * every_s)
            yield _clinical_event(i, features, "shifted" if shifted else "baseline", at)


def _clinical_event(i: int, features: dict[str, float], phase: str, at: datetime | None) -> dict[str, Any]:
    event: dict[str, Any] = {"id": f"patient-{i}", "type": "clinical", "source": "demo", "features": features}
    event["attributes"] = {"phase": phase}
    if at is not None:
        event["event_time"] = at
    return event


def clinical_labels(count: int, *, shift_after: float = 0.5) -> list[dict[str, Any]]:
    """The diagnoses of the clinical events of ``sample_events(count)``, as labels by event id."""
    cases = clinical_cases(count // 2, shift_after=shift_after)
    return [_label(2 * k + 1, diagnosis) for k, (_, _, diagnosis) in enumerate(cases)]


def further_clinical(
    events: int, count: int, origin: datetime, every_s: float = 1.0
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``count`` clinical events after ``sample_events(events)`` (new patients, measured 30% larger), and their labels.

    Their ids and event times go on from the sample events' (``sample_events(origin=, every_s=)``).
    """
    from inferstream.serving.demo_models import tabular_rows

    after, targets = tabular_rows(scale=1.3)
    clinical = events // 2
    first = max(int(clinical * 0.5), 1)  # the first patient the shifted half has not seen
    produced, labels = [], []
    for j in range(count):
        patient, i = (first + j) % len(after), events + 2 * j + 1
        produced.append(
            _clinical_event(i, after[patient], "shifted", origin + timedelta(seconds=(clinical + j) * every_s))
        )
        labels.append(_label(i, DIAGNOSES[targets[patient]]))
    return produced, labels


def _label(i: int, diagnosis: str) -> dict[str, Any]:
    return {"id": f"patient-{i}", "id_type": "event", "label": diagnosis}


BAD_RECORDS: list[dict[str, Any]] = [
    {"id": "bad-1", "text": "an event without a type"},
    {"id": "bad-2", "type": "transaction", "features": {"amount": [1, 2]}},
    {"id": "bad-3", "type": "doc"},
]


def _reachable(settings: Settings) -> bool:
    try:
        TopicAdmin(settings).list(timeout=3.0)
    except KafkaError:
        return False
    return True


def run_demo(settings: Settings, *, events: int = 1000, say: Say = print, keep: Keep | None = None) -> DemoSummary:
    """Run the demo against the configured Kafka, starting a local one if none answers.

    ``keep``, when given, is called once everything has been shown, with the platform
    still running (its workers, sink, monitor and Kafka); the demo stops when it returns.
    """
    started = time.perf_counter()
    server: KafkaServer | None = None
    summary = DemoSummary(settings.kafka.bootstrap_servers, "", started_kafka=False, planned_events=events)
    try:
        if not _reachable(settings):
            server = KafkaServer.from_settings(settings)
            if not server.fetched:
                say(f"fetching Kafka {server.version} from Maven Central (once) ...")
                server.fetch()
            say(f"starting a local Kafka {server.version} on {server.bootstrap_servers} ...")
            server.start()
            kafka = settings.kafka.model_copy(update={"bootstrap_servers": server.bootstrap_servers})
            settings = settings.model_copy(update={"kafka": kafka})
        summary.bootstrap_servers = settings.kafka.bootstrap_servers
        summary.started_kafka = server is not None
        summary.prefix = f"demo-{uuid.uuid4().hex[:8]}."
        topics = settings.topics.model_copy(update={"prefix": summary.prefix})
        _stream(settings.model_copy(update={"topics": topics}), events, summary, say, keep)
    finally:
        # Also on Ctrl-C, even half-way through starting: stop what the demo started.
        if server is not None:
            say("stopping the local Kafka the demo started ...")
            server.stop()
        summary.elapsed_s = time.perf_counter() - started
    return summary


def _stream(settings: Settings, events: int, summary: DemoSummary, say: Say, keep: Keep | None) -> None:
    # Files of this run (vector store, references, reports) under the state dir, apart from other runs.
    settings = settings.model_copy(update={"state_dir": settings.state_dir / "demo" / summary.prefix.rstrip(".")})
    # The clinical events' event times fill eight quality windows from a window boundary (four after the
    # shift, four more for the traffic after retraining), ending before now.
    origin = datetime.fromtimestamp((time.time() - 12 * QUALITY_WINDOW_S) // QUALITY_WINDOW_S * QUALITY_WINDOW_S, UTC)
    loop = QualityLoop(settings, say, window_s=QUALITY_WINDOW_S, min_labels=max(events // 2 // 16, 10))
    with Client(settings) as client, _Platform(settings, say, loop) as platform:
        say(f"creating the platform topics under the prefix {summary.prefix!r} ...")
        client.topics.ensure_platform_topics()
        platform.start(summary)
        say(
            f"producing {events} sample events: documentation passages (→ embeddings → the vector index) and "
            "clinical measurements (→ predictions → the drift monitor), 30% larger after the half-way point ..."
        )
        report = client.produce("events", sample_events(events, origin=origin, every_s=clinical_every_s(events)))
        summary.events_produced = report.produced
        summary.produce_rps = report.records_per_s
        say(f"producing {len(BAD_RECORDS)} bad records: they go to the dead-letter topic with the reason ...")
        bad = client.produce("events", BAD_RECORDS, on_error="dlq")
        summary.bad_records = len(bad.rejected)
        # When each event entered Kafka (its record's timestamp): the clinical events' event times are
        # set in the past for the quality windows, so the end-to-end latency is measured from here.
        entered: dict[str, float] = {}
        with client.subscribe("events", from_beginning=True, max_records=events, idle_timeout=15) as stream:
            for message in stream:
                summary.events_read += 1
                if message.record is not None and message.timestamp_ms is not None:
                    entered[str(getattr(message.record, "id", ""))] = message.timestamp_ms / 1000
                if message.record is not None and len(summary.samples) < 2 and summary.events_read % 97 == 1:
                    summary.samples.append(message.record.model_dump(mode="json", exclude_none=True))
        platform.follow(client, summary, entered)
        _close_the_loop(client, loop, events, origin, platform)
        summary.loop = loop.summary
        _ask(client, summary, say)
        summary.dead_letters = sum(1 for _ in client.dead_letters())
        if keep is not None:
            keep(settings, summary)


#: Fewest events the quality loop runs on: retraining needs 30 labelled rows after the shift, and the
#: quality windows enough labels for a verdict.
LOOP_MIN_EVENTS = 200


def _close_the_loop(client: Client, loop: QualityLoop, events: int, origin: datetime, platform: _Platform) -> None:
    """Labels, the quality alert, v2 retrained on the shifted half, on trial as a shadow, promoted if better.

    A loop that cannot finish (too few events, no alert, retraining refused) is said and
    shown in the summary; the rest of the demo goes on.
    """
    if events < LOOP_MIN_EVENTS:
        loop.stopped(f"the quality loop needs --events {LOOP_MIN_EVENTS} or more, not {events}")
        return
    clinical, every_s = events // 2, clinical_every_s(events)
    try:
        loop.archive(client, clinical_labels(events), predictions=clinical)
        loop.alert(client)
        shift = max(int(clinical * 0.5), 1)
        done = loop.retrain(origin + timedelta(seconds=shift * every_s), origin + timedelta(seconds=clinical * every_s))

        def produce_further() -> list[dict[str, Any]]:
            further, labels = further_clinical(events, clinical // 2, origin, every_s)
            client.produce("events", further)
            return labels

        decision = loop.trial(done, produce_further, client)
    except InferstreamError as exc:
        loop.stopped(str(exc))
        return
    if decision.promote:
        # The route sends the model's traffic to v2 now: a worker serves it (v1's keeps serving ``:1``).
        platform.serve(loop.settings, done.version)


#: Seconds per quality window.
QUALITY_WINDOW_S = 60


def clinical_every_s(events: int) -> float:
    """Event time between two clinical events: ``events`` fill eight quality windows, four before the shift."""
    return 8 * QUALITY_WINDOW_S / max(events // 2, 1)


#: The classifier's classes, by the data set's target index.
DIAGNOSES = ("malignant", "benign")


def clinical_rows(count: int, *, shift_after: float = 0.5) -> Iterator[tuple[dict[str, float], bool]]:
    """Breast cancer measurements; after the shift the same patients measure 30% larger."""
    for features, shifted, _ in clinical_cases(count, shift_after=shift_after):
        yield features, shifted


def clinical_cases(count: int, *, shift_after: float = 0.5) -> Iterator[tuple[dict[str, float], bool, str]]:
    """:func:`clinical_rows` with each patient's diagnosis.

    The diagnoses do not grow with the measurements: after the shift the relation of the
    measurements to the diagnosis is not the one the classifier learned (a concept drift).
    """
    from inferstream.serving.demo_models import tabular_rows

    before, targets = tabular_rows()
    after, _ = tabular_rows(scale=1.3)
    shift_at = max(int(count * shift_after), 1)
    for i in range(count):
        shifted, patient = i >= shift_at, (i % shift_at) % len(before)
        yield (after if shifted else before)[patient], shifted, DIAGNOSES[targets[patient]]


def clinical_requests(count: int, *, shift_after: float = 0.5) -> Iterator[dict[str, Any]]:
    """Inference requests for the demo classifier (measurements grow 30% after the shift)."""
    from inferstream.serving.demo_models import TABULAR_NAME, TABULAR_VERSION

    for i, (row, _) in enumerate(clinical_rows(count, shift_after=shift_after)):
        yield {"request_id": f"req-{i}", "model": TABULAR_NAME, "version": TABULAR_VERSION, "inputs": row}


#: What the ingest processor does with the demo's events.
INGEST_RULES = [
    {"type": "doc", "model": "minilm", "version": "1", "input": "text"},
    {"type": "clinical", "model": "breast-cancer", "version": "1", "input": "features"},
]
#: Features the demo's drift monitor watches (and the predicted label).
MONITORED = ["mean_radius", "mean_texture", "mean_perimeter", "mean_area", "mean_smoothness"]


class _Platform:
    """Everything the demo runs besides Kafka, started and stopped together (also on Ctrl-C)."""

    def __init__(self, settings: Settings, say: Say, loop: QualityLoop) -> None:
        self.settings = settings
        self.say = say
        self.loop = loop
        self._threads: list[tuple[Any, threading.Thread]] = []
        self._ingest: subprocess.Popen[bytes] | None = None
        self.workers: dict[str, Any] = {}
        self.sink: Any = None
        self.monitor: Any = None

    def __enter__(self) -> _Platform:
        return self

    def __exit__(self, *exc: object) -> None:
        self.say("stopping the ingest processor, the workers, the sinks and the monitors ...")
        if self._ingest is not None and self._ingest.poll() is None:
            self._ingest.send_signal(signal.SIGTERM)
            try:
                self._ingest.wait(60)
            except subprocess.TimeoutExpired:
                self._ingest.kill()
        for component, _ in self._threads:
            component.stop()
        for _, thread in self._threads:
            thread.join(60)

    def serve(self, settings: Settings, version: ModelVersion) -> None:
        """Run a worker of ``version`` too (a promoted one)."""
        from inferstream.serving.worker import InferenceWorker

        self.say(f"a worker serves {version.config.ref}, where the route sends {version.config.name}'s traffic now")
        self._run(version.config.ref, InferenceWorker(settings, version))

    def _run(self, name: str, component: Any) -> None:
        thread = threading.Thread(target=component.run, name=f"demo-{name}", daemon=True)
        thread.start()
        self._threads.append((component, thread))

    def start(self, summary: DemoSummary) -> None:
        from inferstream.monitoring.reference import build_reference, references_dir
        from inferstream.monitoring.spec import MonitorSpec
        from inferstream.serving.demo_models import EMBEDDER_NAME, TABULAR_NAME, build_demo_models
        from inferstream.serving.repository import ModelRepository
        from inferstream.serving.worker import InferenceWorker
        from inferstream.streams.drift_monitor import DriftMonitor
        from inferstream.streams.index_sink import IndexSink

        settings = self.settings
        repository = ModelRepository(settings.models_dir)
        if not {TABULAR_NAME, EMBEDDER_NAME} <= set(repository.names()):
            self.say(f"building the demo models into {settings.models_dir} (reproducible, no model hub) ...")
            build_demo_models(settings.models_dir)
        for name in (TABULAR_NAME, EMBEDDER_NAME):
            worker = InferenceWorker(settings, repository.resolve(name))
            self.workers[name] = worker
            self._run(name, worker)
        for worker in self.workers.values():
            if not worker.ready.wait(120):
                raise KafkaError(f"the {worker.config.ref} worker did not start within 120 s")
        store = settings.elasticsearch.url or f"the embedded vector store in {settings.state_dir / 'vectors'}"
        self.say(f"workers serve breast-cancer:1 and minilm:1; the index sink writes to {store} ...")
        self.sink = IndexSink(settings)
        self._run("index", self.sink)
        spec = MonitorSpec.model_validate(
            {
                "name": "demo-clinical",
                "model": TABULAR_NAME,
                "version": "1",
                "columns": [{"name": f} for f in MONITORED],
                "window": {"kind": "count", "size": max(summary_window(summary), 10)},
                "alerting": {"alert_after": 1, "alert_window": 1, "resolve_after": 2},
            }
        )
        # The reference: the measurements as they were (before the shift), profiled once.
        records = [
            {"model": TABULAR_NAME, "version": "1", "inputs": row} for row, _ in clinical_rows(569, shift_after=1)
        ]
        build_reference(spec, records, root=references_dir(settings), source="the breast cancer data set")
        self.monitor = DriftMonitor(settings, spec)
        self._run("monitor", self.monitor)
        self.say(f"drift monitor {spec.name!r} watches {', '.join(MONITORED)} in windows of {spec.window.size} ...")
        for name, component in self.loop.components(settings.models_dir):
            self._run(name, component)
        self.say("the table sink and the label sink archive predictions and labels; a quality monitor reads them ...")
        self._ingest = _start_ingest(settings)
        self.say("the ingest processor (faust) routes events: docs → minilm:1, clinical → breast-cancer:1 ...")
        _wait_for_group(settings, f"{settings.topics.prefix}ingest", self._ingest)

    def follow(self, client: Client, summary: DemoSummary, entered: dict[str, float]) -> None:
        from inferstream.schemas.records import Prediction
        from inferstream.serving.demo_models import EMBEDDER_NAME, TABULAR_NAME

        clinical = summary.events_produced // 2
        docs = summary.events_produced - clinical
        summary.requests = clinical
        self.say(f"reading {clinical} predictions as they flow ...")
        latencies: list[float] = []
        malignant = [0, 0]
        with client.subscribe("predictions", from_beginning=True, max_records=clinical, idle_timeout=90) as stream:
            for message in stream:
                record = message.record
                if isinstance(record, Prediction) and record.model == TABULAR_NAME:
                    summary.predictions += 1
                    since = entered.get(record.source_event_id or "")
                    latencies.append(
                        record.latency.total_ms if since is None else (record.predicted_at.timestamp() - since) * 1000
                    )
                    malignant[record.attributes.get("phase") == "shifted"] += record.outputs.get("label") == "malignant"
                    if summary.predictions % max(clinical // 4, 1) == 0:
                        self.say(f"  {summary.predictions}/{clinical} predictions")
        if latencies:
            summary.latency_p50_ms, summary.latency_p99_ms = (float(v) for v in np.percentile(latencies, [50, 99]))
        half = max(clinical // 2, 1)
        summary.malignant_share_before = malignant[0] / half
        summary.malignant_share_after = malignant[1] / max(clinical - half, 1)
        self.say(f"waiting for the index sink to hold the {docs} documents ...")
        deadline = time.monotonic() + 600
        shown = time.monotonic()
        embedder = self.workers[EMBEDDER_NAME]
        # A passage longer than the tokenizer's limit is dead-lettered by the embedder, not indexed.
        while self.sink.stats.upserts + embedder.stats.dead_letters < docs and time.monotonic() < deadline:
            time.sleep(0.5)
            if time.monotonic() - shown >= 10:
                self.say(f"  {self.sink.stats.upserts}/{docs} documents indexed")
                shown = time.monotonic()
        summary.indexed = self.sink.stats.upserts
        summary.embedding_dead_letters = embedder.stats.dead_letters
        self.say("waiting for the drift monitor to close its windows ...")
        deadline = time.monotonic() + 60
        while self.monitor.stats.predictions < clinical and time.monotonic() < deadline:
            time.sleep(0.5)
        for alert in client.alerts(from_beginning=True, idle_timeout=5):
            if alert.status == "drift":
                summary.alerts += 1
                if summary.alert is None:
                    summary.alert = alert.model_dump(mode="json", include={"monitor", "window_count", "severity"})
                    summary.alert["drifted"] = [c.column for c in alert.columns if c.drifted]
                    summary.report_path = alert.report_path
        worker = self.workers[TABULAR_NAME]
        summary.request_dead_letters = worker.stats.dead_letters
        summary.mean_batch_size = worker.stats.mean_batch_size


def summary_window(summary: DemoSummary) -> int:
    """Rows per drift window: eight windows over the clinical half of the events."""
    return max(summary.planned_events // 2 // 8, 10)


def _wait_for_group(settings: Settings, group: str, process: subprocess.Popen[bytes], timeout: float = 120) -> None:
    """Wait until ``group`` has members with partitions (the ingest processor is consuming)."""
    import confluent_kafka.admin

    admin = confluent_kafka.admin.AdminClient(settings.kafka.base_config())
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise KafkaError(f"the ingest processor exited with {process.returncode} before it joined {group}")
        try:
            description: Any = admin.describe_consumer_groups([group])[group].result(timeout=10)
            if description.members and any(m.assignment.topic_partitions for m in description.members):
                return
        except confluent_kafka.KafkaException:
            pass  # the group does not exist yet
        time.sleep(0.5)
    raise KafkaError(f"the ingest processor did not join its group {group} within {timeout:.0f} s")


def _start_ingest(settings: Settings) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "INFERSTREAM_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "INFERSTREAM_TOPICS__PREFIX": settings.topics.prefix,
        "INFERSTREAM_STATE_DIR": str(settings.state_dir),
        "INFERSTREAM_INGEST__RULES": json.dumps(INGEST_RULES),
        "INFERSTREAM_INGEST__GROUP": f"{settings.topics.prefix}ingest",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "inferstream", "stream", "ingest"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _ask(client: Client, summary: DemoSummary, say: Say) -> None:
    from inferstream.serving.demo_models import TABULAR_NAME

    texts = sample_texts()
    query = texts[4]  # a passage the stream indexed (doc-8): the search must find it first
    summary.search_query = " ".join(query.split()[:12])
    result = client.search(summary.search_query, k=3)
    summary.search_hits = [hit.id for hit in result.hits]
    summary.search_ms = result.latency.total_ms
    say(f"search {summary.search_query!r}: {', '.join(summary.search_hits)} in {summary.search_ms:.1f} ms")
    row, _ = next(clinical_rows(1))
    client.predict(f"{TABULAR_NAME}:1", row, timeout=30)  # the first call creates the reply topic
    started = time.perf_counter()
    answer = client.predict(f"{TABULAR_NAME}:1", row, timeout=30)
    summary.predict_round_trip_ms = (time.perf_counter() - started) * 1000
    say(f"predict() round trip: {answer.outputs['label']} in {summary.predict_round_trip_ms:.1f} ms")
    loop = summary.loop
    if loop.promoted and loop.retrained is not None:
        # A bare name goes where the route sends it: to v2 once this client has seen the promotion.
        promoted = loop.retrained.partition(":")[2]
        client.routes.wait_for(TABULAR_NAME, lambda route: route is not None and _primary(route) == promoted, 30)
        answer = client.predict(TABULAR_NAME, row, timeout=60)
        loop.served_by = f"{answer.model}:{answer.version}"
        say(f"predict() of {TABULAR_NAME!r} after the promotion: {answer.outputs['label']} from {loop.served_by}")


def _primary(route: Route) -> str | None:
    routed = [v.version for v in route.versions if v.weight > 0]
    return routed[0] if len(routed) == 1 else None
