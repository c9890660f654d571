"""The error tree of inferstream.

Every error raised on purpose by the platform derives from one root, so callers
can catch ``InferstreamError`` and know it came from here::

    InferstreamError
    ├── ConfigError                 settings or files that cannot be used
    ├── ContractError               a record that does not fit its topic's contract
    │   ├── RecordValidationError   ... with where (line, field) and why
    │   ├── RecordEncodingError     a record holds a value JSON cannot carry
    │   ├── RequestRejectedError    a worker refused a request (its reason came back as the reply)
    │   └── RoutingError            a valid record that no routing rule covers
    ├── KafkaError                  anything the broker or client refused
    │   ├── DeliveryError           a produced record was not acknowledged
    │   ├── TopicError              a topic is missing or cannot be created
    │   ├── CommitError             offsets could not be committed
    │   ├── GroupError              a consumer group is missing, in use, or its offsets cannot be moved
    │   └── TransactionError        an exactly-once transaction failed (fenced or aborted)
    ├── ModelError                  a model in the repository cannot be loaded or run
    │   └── ProviderUnavailableError  the configured execution provider (GPU) is not there
    ├── StackError                  the local stack (Kafka from Maven) failed to start/stop
    ├── RequestTimeoutError              a request/reply call ran past its timeout
    ├── SinkError                   a sink cannot write (its target is misconfigured)
    │   └── SinkBackpressureError   the target is down or overloaded: retry after ``retry_after`` s
    └── SearchError                 a search cannot run (no index, another model, a bad query)

Messages say what was wrong, where (topic, partition, offset, line, field) and
what to do about it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


class InferstreamError(Exception):
    """Root of every error inferstream raises on purpose."""


class ConfigError(InferstreamError):
    """Settings, a config file or a model file that cannot be used."""


class ContractError(InferstreamError):
    """A record that does not fit the contract of its topic."""


@dataclass(frozen=True, slots=True)
class FieldProblem:
    """One problem in one record: the dotted field path and the reason."""

    field: str
    reason: str

    def __str__(self) -> str:
        return f"{self.field}: {self.reason}" if self.field else self.reason


class RecordValidationError(ContractError):
    """A record failed validation; says which record (line), which fields and why."""

    def __init__(
        self,
        contract: str,
        problems: Sequence[FieldProblem],
        *,
        line: int | None = None,
        raw: bytes | None = None,
    ) -> None:
        self.contract = contract
        self.problems = tuple(problems)
        self.line = line
        self.raw = raw
        where = f"line {line}: " if line is not None else ""
        detail = "; ".join(str(p) for p in self.problems) or "invalid record"
        super().__init__(f"{where}{contract} record is invalid: {detail}")

    @property
    def fields(self) -> tuple[str, ...]:
        """The dotted paths of the fields at fault (empty string for the whole record)."""
        return tuple(p.field for p in self.problems)


class RecordEncodingError(ContractError):
    """A record holds a value its JSON encoding cannot carry (an integer beyond 64 bits, a lone surrogate)."""


class RequestRejectedError(ContractError):
    """A worker refused a request (bad inputs, another version, a passed deadline); the reason came back."""

    def __init__(self, message: str, *, request_id: str, error_class: str, stage: str = "serve") -> None:
        self.request_id = request_id
        self.error_class = error_class
        self.stage = stage
        super().__init__(message)


class RoutingError(ContractError):
    """A valid record that no routing rule covers (an event type without a rule, a rule's input missing)."""


class KafkaError(InferstreamError):
    """The broker or the Kafka client refused something."""


class DeliveryError(KafkaError):
    """A produced record was not acknowledged by the broker."""

    def __init__(
        self,
        message: str,
        *,
        topic: str | None = None,
        code: str | None = None,
        key: bytes | None = None,
        retriable: bool = False,
        failures: Sequence[Any] = (),
    ) -> None:
        self.topic = topic
        self.code = code
        self.key = key
        self.retriable = retriable
        #: Every failed record (``DeliveryFailure``) when raised by ``Producer.flush()``.
        self.failures = tuple(failures)
        super().__init__(message)


class TopicError(KafkaError):
    """A topic is missing, or cannot be created or described."""


class CommitError(KafkaError):
    """Offsets could not be committed (a rebalance took the partition, or the broker is down)."""


class GroupError(KafkaError):
    """A consumer group is missing, has active members, or its offsets cannot be read or moved."""


class TransactionError(KafkaError):
    """An exactly-once worker's transaction failed; nothing of it is visible, and it is served again.

    The worker restarts from its last committed transaction (a new producer fences
    the old one; the consumer resumes from the committed offsets).
    """


class ModelError(InferstreamError):
    """A model in the repository cannot be found, loaded, checked or run."""


class ProviderUnavailableError(ModelError):
    """The model is configured for an execution provider (CUDA, TensorRT) this machine lacks."""


class StackError(InferstreamError):
    """The local stack (Kafka, Elasticsearch) could not be fetched, started or stopped."""


class RequestTimeoutError(InferstreamError, TimeoutError):
    """A request/reply call got no answer within its timeout."""


class SinkError(InferstreamError):
    """A sink cannot write: its target is misconfigured (an index of another shape, a locked store)."""


class SinkBackpressureError(SinkError):
    """The sink's target is down or overloaded: nothing was lost, pause and retry after ``retry_after`` s."""

    def __init__(self, message: str, *, retry_after: float) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class SearchError(InferstreamError):
    """A search cannot run: no index yet, an index of another model, an unknown filter field."""
