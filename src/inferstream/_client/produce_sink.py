"""The produce sink: validates a batch, produces the good records and handles the bad ones per ``on_error``.

``fail`` raises at the first bad record (after producing the ones before it), ``skip``
leaves bad records out, ``dlq`` sends them to the dead-letter topic with the reason.
Records the broker refuses at delivery (too large, topic gone) are handled the same
way, after one retry alone for a batch refused as too large.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
from collections.abc import Iterator, Mapping, Sequence
from operator import attrgetter
from typing import Any

from inferstream._client.core import Core
from inferstream._client.produce_report import OnError, ProduceReport, Rejected
from inferstream.connectors.files import SourceRecord
from inferstream.connectors.kafka.dlq import DeadLetterWriter
from inferstream.connectors.kafka.producer import DeliveryFailure
from inferstream.errors import ContractError, DeliveryError, FieldProblem, RecordValidationError, TopicError
from inferstream.schemas.codec import Codec
from inferstream.schemas.jsonpolicy import INT_MAX, INT_MIN
from inferstream.schemas.records import Contract


class ProduceSink:
    """Validates batches, produces the good records and handles the bad per ``on_error``."""

    def __init__(
        self,
        core: Core,
        topic: str,
        codec: Codec[Any],
        on_error: OnError,
        headers: list[tuple[str, bytes]],
        report: ProduceReport,
        lines: bool,
    ) -> None:
        self.core = core
        self.topic = topic
        self.codec = codec
        self.on_error = on_error
        self.headers = headers
        self.report = report
        self.lines = lines
        self.missing_topic = False
        self._dlq: DeadLetterWriter | None = None

    @property
    def dlq(self) -> DeadLetterWriter:
        """The dead-letter writer (on the client's producer), made when the first record needs it."""
        if self._dlq is None:
            core = self.core
            self._dlq = DeadLetterWriter(core.settings, stage="produce", producer=core.producer(), metrics=core.metrics)
        return self._dlq

    def send(self, batch: Sequence[SourceRecord | Mapping[str, Any] | Contract]) -> None:
        """Validate one batch, produce its good records and handle its bad ones."""
        # A batch's records are acyclic and freed by reference counting: keeping the cyclic
        # collector out of the way while thousands of them are alive saves ~1.5 µs a record.
        with paused_gc():
            self._send_batch(batch)

    def _send_batch(self, batch: Sequence[SourceRecord | Mapping[str, Any] | Contract]) -> None:
        first = self.report.read + 1
        self.report.read += len(batch)
        if SourceRecord not in set(map(type, batch)):  # a loop in C (SourceRecord is final)
            # The SDK's path: mappings or records, positions by index.
            self._send(batch, [None] * len(batch), first)
            return
        values: list[Any] = []
        where: list[SourceRecord | None] = []
        for item in batch:
            if isinstance(item, SourceRecord):
                if item.error is not None:
                    if self.on_error == "fail":  # the records before it are produced first
                        self._send(values, where, first)
                        values, where = [], []
                    problem = RecordValidationError(
                        self.codec.name,
                        [FieldProblem(field="", reason=item.error)],
                        line=item.line if self.lines else None,
                        raw=item.raw,
                    )
                    self.reject(item, problem, item.error, ())
                    continue
                values.append(item.value)
                where.append(item)
            else:
                values.append(item)
                where.append(None)
        self._send(values, where, first)

    def _send(self, values: Sequence[Any], where: Sequence[SourceRecord | None], first: int) -> None:
        if not self.missing_topic:
            encoded = self.codec.encode_batch(values)  # every record good: checked and written in compiled code
            if encoded is not None:
                self._produce(encoded.payloads(), encoded.keys)
                done = encoded.written
                self.report.produced += done
                if done == len(values):
                    return
                values, where, first = values[done:], where[done:], first + done
        result = self.codec.validate_batch(values)
        records, positions, errors = result.records, result.positions, result.errors
        if errors and self.on_error == "fail":
            # Records before the first bad one are produced, then the bad one raises.
            first_bad = min(errors)
            self._produce_records([r for i, r in zip(positions, records, strict=True) if i < first_bad])
            errors = {first_bad: errors[first_bad]}
        for index, invalid in errors.items():
            source = where[index]
            line = source.line if source is not None else first + index
            problem = RecordValidationError(self.codec.name, invalid.problems, line=line if self.lines else None)
            reason = "; ".join(str(p) for p in problem.problems)
            self.reject(source, problem, reason, problem.fields, original=values[index], position=line)
        if self.missing_topic:
            for index, record in zip(positions, records, strict=True):
                self.reject(
                    where[index],
                    TopicError(f"topic {self.topic} does not exist"),
                    f"topic {self.topic} does not exist",
                    (),
                    original=record,
                    position=first + index,
                )
            return
        self._produce_records(records)

    def _produce_records(self, records: Sequence[Contract]) -> None:
        if not records:
            return
        contract = self.codec.contract
        if contract.key is Contract.key:  # the key is the key field (librdkafka encodes str keys)
            keys: list[bytes | str | None] = list(map(attrgetter(contract.key_field), records))
        else:
            keys = [r.key() for r in records]
        self._produce(self.codec.encode_many(records), keys)
        self.report.produced += len(records)

    def _produce(self, values: list[bytes] | Iterator[bytes], keys: list[bytes | str | None]) -> None:
        producer = self.core.producer()
        producer.produce_many(self.topic, values, keys, self.headers)
        producer.poll(0)

    def reject(
        self,
        source: SourceRecord | None,
        error: Exception,
        reason: str,
        fields: tuple[str, ...],
        original: Any = None,
        position: int | None = None,
    ) -> None:
        """Handle one bad record: raise (``fail``), count it (``skip``), or dead-letter and count it (``dlq``)."""
        line = source.line if source is not None else position
        if self.on_error == "fail":
            self.core.producer().flush()
            raise error
        dead = False
        if self.on_error == "dlq":
            raw = source.raw if source is not None and source.raw else _raw_of(original, self.codec)
            value = source.value if source is not None and source.value is not None else original
            key = _key_of(value, self.codec)
            self.dlq.send(payload=raw, error=error, source_topic=self.topic, key=key, stage="produce")
            dead = True
        self.report.rejected.append(Rejected(line=line, reason=reason, fields=fields, dead_lettered=dead))

    def finish(self) -> None:
        """Wait for every record's delivery and handle those the broker refused; flush the dead letters."""
        producer = self.core.producer()
        try:
            producer.flush()
        except DeliveryError as exc:
            self._delivery_failures(list(exc.failures))
        if self._dlq is not None:
            self._dlq.flush()

    def _delivery_failures(self, failures: list[DeliveryFailure]) -> None:
        # Records the broker refused (too large, topic gone): dead-letter or report them.
        own = [f for f in failures if f.topic == self.topic]
        if len(own) != len(failures):
            raise DeliveryError(f"{len(failures) - len(own)} dead letters were not delivered", failures=failures)
        self.report.produced -= len(own)
        # Delivery reports do not carry headers back: every record here had the sink's.
        own = self._with_headers(self._retry_alone(self._with_headers(own)))
        for failure in own:
            reason = f"{failure.reason} ({failure.code})"
            if self.on_error == "fail":
                raise failure.error()
            dead = False
            if self.on_error == "dlq":
                self.dlq.send(
                    payload=failure.value,
                    error=failure.error(),
                    source_topic=self.topic,
                    key=failure.key,
                    headers=failure.headers,
                    stage="produce",
                )
                dead = True
            self.report.rejected.append(Rejected(line=None, reason=reason, dead_lettered=dead))
        if self._dlq is not None:
            self._dlq.flush()

    def _with_headers(self, failures: list[DeliveryFailure]) -> list[DeliveryFailure]:
        return [f if f.headers else dataclasses.replace(f, headers=list(self.headers)) for f in failures]

    def _retry_alone(self, failures: list[DeliveryFailure]) -> list[DeliveryFailure]:
        """Resend records refused as too large one by one: the broker refuses a whole batch
        when the batch is too large, so most of its records fit when sent alone."""
        producer = self.core.producer()
        remaining = []
        for failure in failures:
            if failure.code != "MSG_SIZE_TOO_LARGE" or failure.tag == _ALONE:
                remaining.append(failure)
                continue
            producer.produce(failure.topic, failure.value, failure.key, failure.headers, tag=_ALONE)
            try:
                producer.flush()
                self.report.produced += 1
            except DeliveryError as exc:
                remaining.extend(exc.failures)
        return remaining


_ALONE = "sent-alone"
_MAX_REPR = 1 << 20


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector for a block (reference counting still frees)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _key_of(value: Any, codec: Codec[Any]) -> bytes | None:
    # Keep the bad record's key when it has a usable id, so its dead letter is findable.
    if isinstance(value, Contract):
        return value.key()
    if isinstance(value, Mapping):
        key = value.get(codec.contract.key_field)
        if isinstance(key, str) and key:
            return key.encode("utf-8", "backslashreplace")  # a lone surrogate must not stop the dead letter
        if isinstance(key, int) and INT_MIN <= key <= INT_MAX:
            return str(key).encode()
    return None


def _raw_of(original: Any, codec: Codec[Any]) -> bytes:
    # The bytes a bad record would have had: JSON, as close as its values allow.
    try:
        if isinstance(original, Contract):
            return codec.encode(original)
        return json.dumps(original, default=str, separators=(",", ":")).encode()
    except (ContractError, ValueError, RecursionError):  # a lone surrogate, a huge or deep value
        return repr(original)[:_MAX_REPR].encode("utf-8", "backslashreplace")
