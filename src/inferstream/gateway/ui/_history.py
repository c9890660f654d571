"""What the dashboard reads from the topics when it starts: the recent predictions and alerts.

Workers run without metrics ports by default, so the history of each model version
comes from the predictions topic itself: a bounded read of its newest records (at
most about ``total`` records, none older than ``since``). Blocking: run it in
a thread. Records that are not single predictions (a prediction batch, anything
undecodable) are passed over.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

import confluent_kafka
import orjson

from inferstream.config import Settings
from inferstream.connectors.kafka.admin import TopicAdmin
from inferstream.connectors.kafka.reader import read_bounded
from inferstream.errors import ContractError
from inferstream.schemas.codec import codec_for
from inferstream.schemas.records import DriftAlert


@dataclass(frozen=True, slots=True)
class Seen:
    """The fields of a prediction the dashboard keeps."""

    model: str
    version: str
    predicted_at: float
    total_ms: float


def newest_records(
    settings: Settings, topic: str, total: int, since: datetime | None
) -> Iterator[confluent_kafka.Message]:
    """The newest records of ``topic`` up to now: about ``total`` (shared by its partitions), none before ``since``."""
    partitions = TopicAdmin(settings).describe(topic, with_config=False).partitions
    per_partition = max(total // max(len(partitions), 1), 1)
    starts = {p.partition: max(p.low, p.high - per_partition) for p in partitions}
    # Records the broker deleted meanwhile are no loss here: the view is of what is left.
    return read_bounded(settings, topic, since=since, start_offsets=starts, on_gap=lambda *_: None)


def recent_predictions(settings: Settings, *, total: int, since: datetime, tail: int) -> tuple[list[Seen], list[bytes]]:
    """The newest single predictions on the topic (about ``total``, from ``since``), and the last ``tail`` as bytes."""
    topic = settings.topics.platform_topics()["predictions"]
    found = []
    last: deque[bytes] = deque(maxlen=tail)
    for message in newest_records(settings, topic, total, since):
        value = message.value()
        seen = parse_prediction(value) if value else None
        if seen is not None and value is not None:
            found.append(seen)
            last.append(value)
    return found, list(last)


def parse_prediction(value: bytes) -> Seen | None:
    """The dashboard's fields of a prediction's JSON (None for anything else: never raises)."""
    try:
        record = orjson.loads(value)
        latency = record["latency"]["total_ms"]
        at = datetime.fromisoformat(record["predicted_at"]).timestamp()
        model, version = record["model"], record["version"]
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
    if not isinstance(model, str) or not isinstance(version, str) or not isinstance(latency, int | float):
        return None
    return Seen(model, version, at, float(latency))


def recent_alerts(settings: Settings, *, total: int) -> list[DriftAlert]:
    """The newest drift alerts on the topic (about ``total``), oldest first."""
    topic = settings.topics.platform_topics()["drift-alerts"]
    codec = codec_for(DriftAlert)
    alerts = []
    for message in newest_records(settings, topic, total, None):
        value = message.value()
        if not value:
            continue
        try:
            alerts.append(codec.decode(value, headers=message.headers()))
        except ContractError:
            continue
    return sorted(alerts, key=lambda alert: alert.event_time)
