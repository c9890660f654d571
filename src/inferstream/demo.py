"""The end-to-end demo behind ``inferstream demo``: what the platform does today, live.

It starts what it needs (a local Kafka from Maven unless one is reachable),
produces a stream of sample events (texts from Python's own documentation and
tabular rows whose distribution shifts half-way), a few bad records that land on
the dead-letter topic, reads the stream back, and stops what it started. The
stages that later components add (predictions, vector search, drift alerts) are
listed as such.
"""

from __future__ import annotations

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
    "ONNX inference workers (predictions, request/reply)",
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
    elapsed_s: float = 0.0
    samples: list[dict[str, Any]] = field(default_factory=list)
    not_yet_built: tuple[str, ...] = NOT_YET_BUILT

    @property
    def accounted(self) -> bool:
        """True when events read back + dead letters = everything that was sent."""
        return self.events_read == self.events_produced and self.dead_letters == self.bad_records


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
        summary.dead_letters = sum(1 for _ in client.dead_letters())
