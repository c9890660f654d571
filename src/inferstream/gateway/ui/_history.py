"""What the dashboard reads from the topics when it starts: the recent predictions and alerts.

Workers run without metrics ports by default, so the history of each model version
comes from the predictions topic itself: a bounded read of its newest records (at
most ``per_partition`` a partition, none older than ``since``). Blocking: run it in
a thread. Records that are not single predictions (a prediction batch, anything
undecodable) are passed over.
"""

from __future__ import annotations

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
    """The fields of a prediction the dashboard keeps (and the raw record, for the tail)."""

    model: str
    version: str
    predicted_at: float
    total_ms: float
    raw: bytes


def newest_records(
    settings: Settings, topic: str, per_partition: int, since: datetime | None
) -> Iterator[confluent_kafka.Message]:
    """The newest records of ``topic`` up to now: at most ``per_partition`` a partition, none before ``since``."""
    partitions = TopicAdmin(settings).describe(topic, with_config=False).partitions
    starts = {p.partition: max(p.low, p.high - per_partition) for p in partitions}
    # Records the broker deleted meanwhile are no loss here: the view is of what is left.
    return read_bounded(settings, topic, since=since, start_offsets=starts, on_gap=lambda *_: None)


def recent_predictions(settings: Settings, *, per_partition: int, since: datetime) -> list[Seen]:
    """The newest single predictions on the topic (at most ``per_partition`` a partition, from ``since``)."""
    topic = settings.topics.platform_topics()["predictions"]
    found = []
    for message in newest_records(settings, topic, per_partition, since):
        value = message.value()
        seen = parse_prediction(value) if value else None
        if seen is not None:
            found.append(seen)
    return found


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
    return Seen(model, version, at, float(latency), value)


def recent_alerts(settings: Settings, *, per_partition: int) -> list[DriftAlert]:
    """The newest drift alerts on the topic, oldest first (at most ``per_partition`` a partition)."""
    topic = settings.topics.platform_topics()["drift-alerts"]
    codec = codec_for(DriftAlert)
    alerts = []
    for message in newest_records(settings, topic, per_partition, None):
        value = message.value()
        if not value:
            continue
        try:
            alerts.append(codec.decode(value, headers=message.headers()))
        except ContractError:
            continue
    return sorted(alerts, key=lambda alert: alert.event_time)
