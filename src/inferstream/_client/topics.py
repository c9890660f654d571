"""Topic names as users write them: logical platform names, full names, and the closest existing one."""

from __future__ import annotations

import contextlib
import difflib
from collections.abc import Callable

from inferstream.config import Settings
from inferstream.connectors.kafka.admin import TopicAdmin
from inferstream.errors import KafkaError, TopicError
from inferstream.schemas.records import Contract, contract_named


class TopicNames:
    """Turns the names users write into full topic names, and says which topics exist (remembering those that do)."""

    def __init__(self, settings: Settings, admin: Callable[[], TopicAdmin]) -> None:
        self.settings = settings
        self._admin = admin
        self._known: set[str] = set()

    def full(self, name: str) -> str:
        """The full name of a topic: logical platform names get the prefix, others pass as given."""
        topics = self.settings.topics
        if name in topics.platform_topics():
            return topics.platform_topics()[name]
        logical = topics.logical(name)
        if logical.startswith(f"{topics.requests_prefix}.") or logical.startswith(f"{topics.replies_prefix}."):
            return topics.name(logical)
        return name

    def contract_for(self, topic: str) -> type[Contract] | None:
        """The contract of a platform topic, or None for a topic the platform does not own."""
        topics = self.settings.topics
        logical = topics.logical(self.full(topic))
        by_topic: dict[str, str] = {
            topics.events: "event",
            topics.predictions: "prediction",
            topics.predictions_shadow: "prediction",
            topics.embeddings: "embedding",
            topics.control: "route",
            topics.drift_alerts: "drift-alert",
            topics.labels: "label",
            topics.dead_letters: "dead-letter",
        }
        if logical in by_topic:
            return contract_named(by_topic[logical])
        if logical.startswith(f"{topics.requests_prefix}."):
            return contract_named("inference-request")
        if logical.startswith(f"{topics.replies_prefix}."):
            return contract_named("prediction")
        return None

    def exists(self, topic: str) -> bool:
        """Whether the topic (a full name) exists; a topic seen once is not asked about again."""
        if topic in self._known:
            return True
        if self._admin().exists(topic):
            self._known.add(topic)
            return True
        return False

    def require(self, topic: str) -> None:
        """Raise ``TopicError`` naming the closest topic when ``topic`` (a full name) does not exist."""
        if not self.exists(topic):
            raise TopicError(self.missing_message(topic))

    def missing_message(self, topic: str) -> str:
        """Why ``topic`` (a full name that does not exist) cannot be used, with the closest topic's name."""
        create = f"create it with `inferstream topics create {topic}`"
        guess = self.closest(topic)
        if guess is not None:
            return f"topic {topic} does not exist; did you mean {guess}? ({create})"
        if topic in self.settings.topics.platform_topics().values():
            create = "create the platform's topics with `inferstream topics create --platform`"
        return f"topic {topic} does not exist: {create}"

    def closest(self, topic: str) -> str | None:
        """The platform topic, or existing topic under the prefix, whose name is closest to ``topic`` (difflib).

        Names are compared without the prefix (a shared prefix would make every name look
        alike), and also whole when ``topic`` has another prefix or none.
        """
        topics = self.settings.topics
        candidates = set(topics.platform_topics().values())
        with contextlib.suppress(KafkaError):  # the platform's names still help
            candidates.update(n for n in self._admin().list(timeout=5.0) if n.startswith(topics.prefix))
        candidates.discard(topic)
        spellings: dict[str, str] = {}
        for candidate in sorted(candidates):
            spellings.setdefault(topics.logical(candidate), candidate)
            if not topic.startswith(topics.prefix):
                spellings.setdefault(candidate, candidate)
        matches = difflib.get_close_matches(topics.logical(topic), spellings, n=1)
        return spellings[matches[0]] if matches else None
