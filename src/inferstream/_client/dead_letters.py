"""Dead letters: listing and filtering what is on the dead-letter topic, and replaying it to its source topics."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from inferstream._client.core import Core
from inferstream._client.subscribe import Subscription
from inferstream.connectors.kafka.dlq import ATTEMPT_HEADER, DeadLetterFilter, from_message
from inferstream.connectors.kafka.reader import read_bounded
from inferstream.schemas.records import DeadLetter

# The SDK logs under one name, whichever of its modules speaks.
log = logging.getLogger("inferstream.client")

_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")


@dataclass
class ReplayReport:
    """What a dead-letter replay did."""

    read: int = 0
    replayed: int = 0
    exhausted: int = 0
    unrecoverable: int = 0
    filtered: int = 0


def letter_filter(
    core: Core,
    source_topic: str | None,
    stage: str | None,
    reason: str | None,
    since: datetime | None,
    until: datetime | None,
) -> DeadLetterFilter:
    """The filter of ``Client.dead_letters`` and ``Client.replay_dead_letters`` (the source topic by full name)."""
    return DeadLetterFilter(
        source_topic=core.names.full(source_topic) if source_topic else None,
        stage=stage,
        reason=reason,
        since=since,
        until=until,
    )


def read_dead_letters(core: Core, wanted: DeadLetterFilter, max_records: int | None) -> Iterator[DeadLetter]:
    """The dead letters on the topic now that ``wanted`` takes, oldest first (at most ``max_records``)."""
    topic = core.settings.topics.platform_topics()["dead-letters"]
    count = 0
    for message in read_bounded(core.settings, topic):
        letter = from_message(message)
        if not wanted.matches(letter):
            continue
        yield letter
        count += 1
        if max_records is not None and count >= max_records:
            return


def replay_dead_letters(
    core: Core, wanted: DeadLetterFilter, *, max_records: int | None, group: str, idle_timeout: float
) -> ReplayReport:
    """Re-send the dead letters ``wanted`` takes to their source topics (``Client.replay_dead_letters``)."""
    report = ReplayReport()
    max_attempts = core.settings.dead_letters.max_attempts
    subscription = Subscription(
        core.settings,
        [core.settings.topics.platform_topics()["dead-letters"]],
        group=group,
        from_beginning=True,
        max_records=max_records,
        idle_timeout=idle_timeout,
        codec=None,
        metrics=core.metrics,
    )
    producer = core.producer()
    with subscription:
        for message in (m for batch in subscription.raw() for m in batch):
            report.read += 1
            letter = from_message(message)
            if not wanted.matches(letter):
                report.filtered += 1
                continue
            if letter.attempt >= max_attempts:
                report.exhausted += 1
                continue
            if not _TOPIC_NAME.fullmatch(letter.source_topic) or not core.names.exists(letter.source_topic):
                # Nowhere to send it back to (no source, or a topic gone): it stays, counted.
                log.warning("dead letter %s: source topic %r cannot take it back", letter.id, letter.source_topic)
                report.unrecoverable += 1
                continue
            payload = letter.payload
            if letter.truncated:
                spilled = _read_spill(letter)
                if spilled is None:
                    report.unrecoverable += 1
                    continue
                payload = spilled
            headers = [(k, v) for k, v in letter.original_headers if k != ATTEMPT_HEADER]
            headers.append((ATTEMPT_HEADER, str(letter.attempt + 1).encode()))
            producer.produce(letter.source_topic, payload, key=letter.original_key, headers=headers)
            report.replayed += 1
            subscription.before_commit(producer.flush)
    return report


def _read_spill(letter: DeadLetter) -> bytes | None:
    if not letter.spill_path:
        return None
    path = Path(letter.spill_path)
    return path.read_bytes() if path.is_file() else None
