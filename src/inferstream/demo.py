"""The end-to-end demo behind ``inferstream demo``: what the platform does today, live.

It starts what it needs (a local Kafka from Maven unless one is reachable),
produces a stream of sample events (texts from Python's own documentation and
tabular rows whose distribution shifts half-way) and a few bad records that land
on the dead-letter topic, reads the stream back, builds the demo classifier,
serves it with an inference worker, streams requests through it (measurements
shifting half-way), reads the predictions, asks for one with ``predict()``, and
stops what it started. The stages that later components add (routing events to
requests, vector search, drift alerts) are listed as such.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from inferstream.client import Client
from inferstream.config import Settings
from inferstream.connectors.kafka.admin import TopicAdmin
from inferstream.errors import KafkaError
from inferstream.stack.kafka import KafkaServer

#: Stages of the full pipeline that are not part of the platform yet.
NOT_YET_BUILT = (
    "the ingest processor (events routed to model requests)",
    "embedding workers and the vector index sink (search)",
    "drift monitors (alerts and reports)",
)

Say = Callable[[str], None]


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
    samples: list[dict[str, Any]] = field(default_factory=list)
    not_yet_built: tuple[str, ...] = NOT_YET_BUILT

    @property
    def accounted(self) -> bool:
        """True when every event was read back, every request answered, every bad record dead-lettered."""
        return (
            self.events_read == self.events_produced
            and self.predictions + self.request_dead_letters == self.requests
            and self.dead_letters == self.bad_records + self.request_dead_letters
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


def sample_events(count: int, *, seed: int = 7, shift_after: float = 0.5) -> Iterator[dict[str, Any]]:
    """Alternating text and tabular events; tabular features drift after ``shift_after``."""
    rng = np.random.default_rng(seed)
    texts = sample_texts()
    countries = np.array(["FR", "DE", "ES", "IT", "NL"])
    for i in range(count):
        drifted = i >= count * shift_after
        if i % 2 == 0:
            yield {
                "id": f"doc-{i}",
                "type": "doc",
                "source": "pydoc",
                "text": texts[(i // 2) % len(texts)],
            }
        else:
            amount = float(rng.lognormal(3.0 + (0.8 if drifted else 0.0), 0.5))
            yield {
                "id": f"txn-{i}",
                "type": "transaction",
                "source": "demo",
                "features": {
                    "amount": round(amount, 2),
                    "items": int(rng.poisson(6 if drifted else 3)),
                    "country": str(rng.choice(countries, p=[0.1, 0.1, 0.1, 0.1, 0.6] if drifted else None)),
                },
            }


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


def run_demo(settings: Settings, *, events: int = 2000, say: Say = print) -> DemoSummary:
    """Run the demo against the configured Kafka, starting a local one if none answers."""
    started = time.perf_counter()
    server: KafkaServer | None = None
    summary = DemoSummary(settings.kafka.bootstrap_servers, "", started_kafka=False)
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
        _stream(settings.model_copy(update={"topics": topics}), events, summary, say)
    finally:
        # Also on Ctrl-C, even half-way through starting: stop what the demo started.
        if server is not None:
            say("stopping the local Kafka the demo started ...")
            server.stop()
        summary.elapsed_s = time.perf_counter() - started
    return summary


def _stream(settings: Settings, events: int, summary: DemoSummary, say: Say) -> None:
    with Client(settings) as client:
        say(f"creating the platform topics under the prefix {summary.prefix!r} ...")
        client.topics.ensure_platform_topics()
        say(f"producing {events} sample events (texts and transactions; transactions shift half-way) ...")
        report = client.produce("events", sample_events(events))
        summary.events_produced = report.produced
        summary.produce_rps = report.records_per_s
        say(f"producing {len(BAD_RECORDS)} bad records: they go to the dead-letter topic with the reason ...")
        bad = client.produce("events", BAD_RECORDS, on_error="dlq")
        summary.bad_records = len(bad.rejected)
        say("reading the stream back ...")
        # `with`: on Ctrl-C the consumer leaves its group before the broker goes away.
        with client.subscribe("events", from_beginning=True, max_records=events, idle_timeout=15) as stream:
            for message in stream:
                summary.events_read += 1
                if message.record is not None and len(summary.samples) < 4 and summary.events_read % 97 == 1:
                    summary.samples.append(message.record.model_dump(mode="json", exclude_none=True))
        _serve_predictions(client, settings, summary, say)
        summary.dead_letters = sum(1 for _ in client.dead_letters())


def clinical_requests(count: int, *, shift_after: float = 0.5) -> Iterator[dict[str, Any]]:
    """Inference requests from the breast cancer data set; measurements grow 30% after the shift."""
    from inferstream.serving.demo_models import TABULAR_NAME, TABULAR_VERSION, tabular_rows

    before, _ = tabular_rows()
    after, _ = tabular_rows(scale=1.3)
    shift_at = max(int(count * shift_after), 1)
    for i in range(count):
        # The same patients after the shift, measured 30% larger: only the shift differs.
        rows = after if i >= shift_at else before
        yield {
            "request_id": f"req-{i}",
            "model": TABULAR_NAME,
            "version": TABULAR_VERSION,
            "inputs": rows[(i % shift_at) % len(rows)],
        }


def _serve_predictions(client: Client, settings: Settings, summary: DemoSummary, say: Say) -> None:
    from inferstream.schemas.records import Prediction
    from inferstream.serving.demo_models import TABULAR_NAME, build_demo_models
    from inferstream.serving.repository import ModelRepository
    from inferstream.serving.worker import InferenceWorker

    repository = ModelRepository(settings.models_dir)
    if TABULAR_NAME not in repository.names():
        say(f"building the demo models into {settings.models_dir} (reproducible, no model hub) ...")
        build_demo_models(settings.models_dir)
    worker = InferenceWorker(settings, repository.resolve(TABULAR_NAME))
    thread = threading.Thread(target=worker.run, name="demo-worker", daemon=True)
    thread.start()
    try:
        if not worker.ready.wait(60):
            raise KafkaError("the inference worker did not start within 60 s")
        count = max(summary.events_produced // 2, 10)
        say(f"sending {count} requests to {worker.request_topic}; measurements grow 30% half-way ...")
        summary.requests = client.produce(worker.request_topic, clinical_requests(count)).produced
        say(f"reading predictions from {worker.output_topic} ...")
        latencies: list[float] = []
        malignant = [0, 0]
        with client.subscribe("predictions", from_beginning=True, max_records=count, idle_timeout=30) as stream:
            for message in stream:
                if isinstance(message.record, Prediction):
                    summary.predictions += 1
                    latencies.append(message.record.latency.total_ms)
                    after = int(message.record.request_id.split("-")[1]) >= count / 2
                    malignant[after] += message.record.outputs.get("label") == "malignant"
        inputs = next(clinical_requests(1))["inputs"]
        client.predict(f"{TABULAR_NAME}:1", inputs, timeout=30)  # the first call creates the reply topic
        started = time.perf_counter()
        answer = client.predict(f"{TABULAR_NAME}:1", inputs, timeout=30)
        summary.predict_round_trip_ms = (time.perf_counter() - started) * 1000
        say(f"predict() round trip: {answer.outputs['label']} in {summary.predict_round_trip_ms:.1f} ms")
        if latencies:
            summary.latency_p50_ms, summary.latency_p99_ms = (float(v) for v in np.percentile(latencies, [50, 99]))
        half = max(count // 2, 1)
        summary.malignant_share_before = malignant[0] / half
        summary.malignant_share_after = malignant[1] / max(count - half, 1)
    finally:
        worker.stop()
        thread.join(60)
    summary.request_dead_letters = worker.stats.dead_letters
    summary.mean_batch_size = worker.stats.mean_batch_size
