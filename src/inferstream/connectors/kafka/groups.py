"""Consumer groups: who reads what, how far behind, and moving a group's offsets.

What ``kafka-consumer-groups --describe`` and ``--reset-offsets`` do, through
confluent-kafka's AdminClient:

- :meth:`GroupAdmin.describe` gives a group's state, its members and, per
  partition, the committed offset, the log end offset and the lag between them;
- :meth:`GroupAdmin.reset` plans new offsets for one topic of a group (an offset,
  the log start or end, the first record at or after a time, or a shift of the
  committed offset) and, with ``execute=True``, commits them. A target outside the
  log is clamped to its start or end, and the plan says so.

Kafka moves the offsets of a group only while no consumer of it runs, so a reset
refuses a group with active members.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from concurrent.futures import Future
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import confluent_kafka
from confluent_kafka import ConsumerGroupState, ConsumerGroupTopicPartitions, IsolationLevel, TopicPartition
from confluent_kafka.admin import AdminClient, ConsumerGroupDescription, MemberDescription, OffsetSpec

from inferstream.config import Settings
from inferstream.connectors.kafka._util import error_of
from inferstream.errors import GroupError, KafkaError, TopicError

_TIMEOUT_S = 15.0

#: Kafka's own names for the states (as ``kafka-consumer-groups`` prints them).
_STATES = {
    ConsumerGroupState.STABLE: "Stable",
    ConsumerGroupState.EMPTY: "Empty",
    ConsumerGroupState.DEAD: "Dead",
    ConsumerGroupState.PREPARING_REBALANCING: "PreparingRebalance",
    ConsumerGroupState.COMPLETING_REBALANCING: "CompletingRebalance",
}

#: Errors of an offset change that mean the group has (or just had) a running consumer.
_IN_USE = (
    confluent_kafka.KafkaError.UNKNOWN_MEMBER_ID,
    confluent_kafka.KafkaError.REBALANCE_IN_PROGRESS,
    confluent_kafka.KafkaError.ILLEGAL_GENERATION,
)
_UNREACHABLE = (
    confluent_kafka.KafkaError._TIMED_OUT,
    confluent_kafka.KafkaError._TRANSPORT,
    confluent_kafka.KafkaError._ALL_BROKERS_DOWN,
)

_Key = tuple[str, int]


@dataclass(frozen=True, slots=True)
class PartitionLag:
    """One partition a group reads or committed: its offsets, its lag and who reads it now."""

    topic: str
    partition: int
    #: The next offset the group reads; None when it never committed one here.
    committed: int | None
    #: The offset the next record written gets; None when the partition is gone.
    log_end: int | None
    #: Records written that the group has not committed yet (None when unknown).
    lag: int | None
    #: The member the partition is assigned to, if any.
    member_id: str | None = None
    client_id: str | None = None
    host: str | None = None


@dataclass(frozen=True, slots=True)
class GroupInfo:
    """A consumer group: its state (Kafka's name), member count and partitions."""

    group: str
    state: str
    members: int
    partitions: list[PartitionLag]

    @property
    def lag(self) -> int:
        """The total lag over the partitions where it is known."""
        return sum(p.lag or 0 for p in self.partitions)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping, with the total lag."""
        return {**asdict(self), "lag": self.lag}


@dataclass(frozen=True, slots=True)
class ResetTarget:
    """Where :meth:`GroupAdmin.reset` moves a group's offsets: build one with a class method."""

    kind: Literal["offset", "earliest", "latest", "datetime", "shift"]
    #: The offset (``offset``) or the shift (``shift``).
    value: int = 0
    #: The time (``datetime``), timezone-aware.
    time: datetime | None = None

    @classmethod
    def to_offset(cls, offset: int) -> ResetTarget:
        """This offset, in every partition reset."""
        return cls("offset", value=offset)

    @classmethod
    def to_earliest(cls) -> ResetTarget:
        """The log start: read again every record still retained."""
        return cls("earliest")

    @classmethod
    def to_latest(cls) -> ResetTarget:
        """The log end: skip every record written so far."""
        return cls("latest")

    @classmethod
    def to_datetime(cls, time: datetime) -> ResetTarget:
        """The first record with a timestamp at or after ``time`` (naive means UTC); the log end if none."""
        return cls("datetime", time=time if time.tzinfo is not None else time.replace(tzinfo=UTC))

    @classmethod
    def shift_by(cls, count: int) -> ResetTarget:
        """The committed offset moved by ``count`` records (negative: back)."""
        return cls("shift", value=count)

    def __str__(self) -> str:
        if self.kind == "offset":
            return f"offset {self.value}"
        if self.kind == "shift":
            return f"shift by {self.value:+d}"
        if self.kind == "datetime" and self.time is not None:
            return f"first record at or after {self.time.isoformat()}"
        return self.kind


@dataclass(frozen=True, slots=True)
class OffsetMove:
    """One partition of a reset: the group's committed offset and the new one."""

    topic: str
    partition: int
    #: None when the group never committed an offset here.
    current: int | None
    new: int
    #: Why ``new`` is not exactly what was asked (clamped to the log), or None.
    note: str | None = None


@dataclass(frozen=True, slots=True)
class ResetPlan:
    """What a reset does; ``executed`` says whether the offsets were committed or only planned."""

    group: str
    target: ResetTarget
    moves: list[OffsetMove]
    executed: bool

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping."""
        return {
            "group": self.group,
            "target": str(self.target),
            "executed": self.executed,
            "moves": [asdict(move) for move in self.moves],
        }


class GroupAdmin:
    """The consumer groups of the configured cluster: describe them, move their offsets."""

    def __init__(self, settings: Settings, *, timeout: float = _TIMEOUT_S) -> None:
        self._settings = settings
        self._timeout = timeout
        self._admin = AdminClient(dict(settings.kafka.base_config()))

    def describe(self, group: str) -> GroupInfo:
        """State, members, and per partition the committed offset, log end and lag of one group."""
        info = self.describe_many([group])[0]
        if info.state == "Dead" and not info.partitions:
            raise GroupError(f"consumer group {group} does not exist (list them with `inferstream groups --all`)")
        return info

    def describe_many(self, groups: Sequence[str]) -> list[GroupInfo]:
        """:meth:`describe` for several groups at once (a missing group comes back ``Dead`` and empty)."""
        if not groups:
            return []
        descriptions = self._descriptions(groups)
        committed = {group: self._committed(group) for group in groups}
        owners = {group: _owners(descriptions[group]) for group in groups}
        ends = self._offsets({k for g in groups for k in committed[g].keys() | owners[g].keys()}, OffsetSpec.latest())
        infos = []
        for group in groups:
            rows = []
            for key in sorted(committed[group].keys() | owners[group].keys()):
                offset, end, member = committed[group].get(key), ends.get(key), owners[group].get(key)
                rows.append(
                    PartitionLag(
                        topic=key[0],
                        partition=key[1],
                        committed=offset,
                        log_end=end,
                        lag=None if offset is None or end is None else max(end - offset, 0),
                        member_id=member.member_id if member else None,
                        client_id=member.client_id if member else None,
                        host=member.host if member else None,
                    )
                )
            description = descriptions[group]
            state = _STATES.get(getattr(description, "state", None), "Unknown")  # type: ignore[arg-type]
            infos.append(GroupInfo(group=group, state=state, members=len(description.members), partitions=rows))
        return infos

    def reset(
        self,
        group: str,
        topic: str,
        target: ResetTarget,
        *,
        partitions: Sequence[int] | None = None,
        execute: bool = False,
    ) -> ResetPlan:
        """Plan new committed offsets of ``group`` on ``topic`` (every partition, or those given).

        Nothing changes unless ``execute``: then the new offsets are committed. A target
        before the log start or past its end is clamped to it (the move's ``note`` says
        so). Raises ``GroupError`` while the group has members (stop its consumers
        first), or for a shift where the group has no committed offset to shift from.
        """
        description = self._descriptions([group])[group]
        if description.members:
            raise GroupError(_in_use(group, description.members))
        keys = [(topic, partition) for partition in self._partitions(topic, partitions)]
        current = self._committed(group, keys)
        starts = self._offsets(keys, OffsetSpec.earliest())
        ends = self._offsets(keys, OffsetSpec.latest())
        found: dict[_Key, int | None] = {}
        if target.kind == "datetime" and target.time is not None:
            found = self._offsets(keys, OffsetSpec.for_timestamp(int(target.time.timestamp() * 1000)))
        moves = []
        for key in keys:
            start, end = starts.get(key), ends.get(key)
            if start is None or end is None:
                raise TopicError(f"cannot read the offsets of {key[0]} partition {key[1]}: is it being deleted?")
            wanted, note = _wanted(group, target, key, current.get(key), (start, end), found.get(key))
            if wanted < start:
                wanted, note = start, f"clamped to the log start {start} (asked {wanted})"
            elif wanted > end:
                wanted, note = end, f"clamped to the log end {end} (asked {wanted})"
            moves.append(OffsetMove(key[0], key[1], current.get(key), wanted, note))
        if execute:
            self._commit(group, moves)
        return ResetPlan(group=group, target=target, moves=moves, executed=execute)

    def _commit(self, group: str, moves: Sequence[OffsetMove]) -> None:
        request = ConsumerGroupTopicPartitions(group, [TopicPartition(m.topic, m.partition, m.new) for m in moves])
        future = self._admin.alter_consumer_group_offsets([request], request_timeout=self._timeout)[group]
        try:
            result = future.result()
        except confluent_kafka.KafkaException as exc:
            error = error_of(exc)
            if error.code() in _IN_USE:
                raise GroupError(_in_use(group, [])) from exc
            raise GroupError(f"cannot move the offsets of group {group}: {error.str()}") from exc
        for tp in result.topic_partitions or []:
            if tp.error is None:
                continue
            if tp.error.code() in _IN_USE:
                raise GroupError(_in_use(group, []))
            raise GroupError(
                f"cannot move the offset of group {group} on {tp.topic} partition {tp.partition}: {tp.error.str()}"
            )

    def _descriptions(self, groups: Sequence[str]) -> dict[str, ConsumerGroupDescription]:
        futures = self._admin.describe_consumer_groups(list(groups), request_timeout=self._timeout)
        return {group: self._wait(future, f"describe consumer group {group}") for group, future in futures.items()}

    def _committed(self, group: str, keys: Sequence[_Key] | None = None) -> dict[_Key, int]:
        """The group's committed offsets (of ``keys``, or all); partitions without one are left out."""
        wanted = None if keys is None else [TopicPartition(topic, partition) for topic, partition in keys]
        request = ConsumerGroupTopicPartitions(group, wanted)
        future = self._admin.list_consumer_group_offsets([request], request_timeout=self._timeout)[group]
        result = self._wait(future, f"read the committed offsets of group {group}")
        return {
            (tp.topic, tp.partition): tp.offset
            for tp in result.topic_partitions or []
            if tp.error is None and tp.offset >= 0
        }

    def _offsets(self, keys: Iterable[_Key], spec: OffsetSpec) -> dict[_Key, int | None]:
        """The offset ``spec`` names in each partition; None where there is none (no such record, topic gone)."""
        request = {TopicPartition(topic, partition): spec for topic, partition in keys}
        if not request:
            return {}
        offsets: dict[_Key, int | None] = {}
        # Read-uncommitted, as kafka-consumer-groups: the log end counts every record written.
        futures = self._admin.list_offsets(
            request, isolation_level=IsolationLevel.READ_UNCOMMITTED, request_timeout=self._timeout
        )
        for tp, future in futures.items():
            try:
                info: Any = future.result()  # ListOffsetsResultInfo (its type stub lacks the fields)
                offset = int(info.offset)
            except confluent_kafka.KafkaException as exc:
                if error_of(exc).code() != confluent_kafka.KafkaError.UNKNOWN_TOPIC_OR_PART:
                    raise self._error(exc, f"read the offsets of {tp.topic} partition {tp.partition}") from exc
                offset = -1
            offsets[(tp.topic, tp.partition)] = offset if offset >= 0 else None
        return offsets

    def _partitions(self, topic: str, wanted: Sequence[int] | None) -> list[int]:
        try:
            metadata = self._admin.list_topics(topic=topic, timeout=self._timeout).topics.get(topic)
        except confluent_kafka.KafkaException as exc:
            raise self._error(exc, f"read the partitions of {topic}") from exc
        if metadata is None or metadata.error is not None or not metadata.partitions:
            raise TopicError(f"topic {topic} does not exist (list topics with `inferstream topics list`)")
        existing = sorted(metadata.partitions)
        missing = sorted(set(wanted or ()) - set(existing))
        if missing:
            raise TopicError(
                f"topic {topic} has partitions {existing[0]}-{existing[-1]}: no partition {missing[0]} to reset"
            )
        return sorted(set(wanted)) if wanted else existing

    def _wait(self, future: Future[Any], what: str) -> Any:
        try:
            return future.result()
        except confluent_kafka.KafkaException as exc:
            raise self._error(exc, what) from exc

    def _error(self, exc: confluent_kafka.KafkaException, what: str) -> KafkaError:
        error = error_of(exc)
        hint = ""
        if error.code() in _UNREACHABLE:
            hint = (
                f" (is Kafka at {self._settings.kafka.bootstrap_servers} reachable? "
                "start a local broker with `inferstream up`)"
            )
        return KafkaError(f"cannot {what}: {error.str()}{hint}")

    # Last, so that the ``list[...]`` annotations above mean the builtin.
    def list(self, *, all_groups: bool = False, match: str | None = None) -> list[str]:
        """Ids of the consumer groups, sorted: the platform's (under the topic prefix) unless ``all_groups``.

        ``match`` keeps the ids that contain it (case-insensitive).
        """
        result = self._wait(self._admin.list_consumer_groups(request_timeout=self._timeout), "list consumer groups")
        if result.errors:
            raise self._error(result.errors[0], "list consumer groups")
        prefix = "" if all_groups else self._settings.topics.prefix
        needle = (match or "").lower()
        return sorted(
            listing.group_id
            for listing in result.valid or []
            if listing.group_id.startswith(prefix) and needle in listing.group_id.lower()
        )


def _owners(description: ConsumerGroupDescription) -> dict[_Key, MemberDescription]:
    return {(tp.topic, tp.partition): m for m in description.members for tp in m.assignment.topic_partitions}


def _wanted(
    group: str, target: ResetTarget, key: _Key, current: int | None, bounds: tuple[int, int], found: int | None
) -> tuple[int, str | None]:
    """The offset ``target`` asks for in one partition (before clamping), and a note."""
    start, end = bounds
    if target.kind == "offset":
        return target.value, None
    if target.kind == "earliest":
        return start, None
    if target.kind == "latest":
        return end, None
    if target.kind == "datetime":
        if found is None:
            return end, "no record at or after that time: the log end"
        return found, None
    if current is None:
        raise GroupError(
            f"group {group} has no committed offset on {key[0]} partition {key[1]} to shift from: "
            "reset that partition to an offset, the earliest or the latest first, or leave it out (--partition)"
        )
    return current + target.value, None


def _in_use(group: str, members: Sequence[MemberDescription]) -> str:
    who = ""
    if members:
        clients = ", ".join(sorted({m.client_id for m in members}))
        who = f" has {len(members)} active member{'s' if len(members) != 1 else ''} ({clients}):"
    else:
        who = " is in use:"
    return (
        f"consumer group {group}{who} stop the group's consumers first "
        "(Kafka moves the offsets of a group only while none of its consumers runs)"
    )
