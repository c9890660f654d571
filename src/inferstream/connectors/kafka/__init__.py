"""The Kafka layer (confluent-kafka): producer, consumer, admin, consumer groups, dead letters, bounded reads."""

from inferstream.connectors.kafka.admin import PartitionInfo, TopicAdmin, TopicInfo, platform_topic_configs
from inferstream.connectors.kafka.consumer import Consumer, Message
from inferstream.connectors.kafka.dlq import (
    ATTEMPT_HEADER,
    DeadLetterFilter,
    DeadLetterWriter,
    attempt_of,
    from_message,
    to_headers,
)
from inferstream.connectors.kafka.groups import (
    GroupAdmin,
    GroupInfo,
    OffsetMove,
    PartitionLag,
    ResetPlan,
    ResetTarget,
)
from inferstream.connectors.kafka.producer import DeliveryFailure, Producer
from inferstream.connectors.kafka.reader import read_bounded

__all__ = [
    "ATTEMPT_HEADER",
    "Consumer",
    "DeadLetterFilter",
    "DeadLetterWriter",
    "DeliveryFailure",
    "GroupAdmin",
    "GroupInfo",
    "Message",
    "OffsetMove",
    "PartitionInfo",
    "PartitionLag",
    "Producer",
    "ResetPlan",
    "ResetTarget",
    "TopicAdmin",
    "TopicInfo",
    "attempt_of",
    "from_message",
    "platform_topic_configs",
    "read_bounded",
    "to_headers",
]
