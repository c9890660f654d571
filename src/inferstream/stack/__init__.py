"""The local stack: services fetched from Maven Central and run as plain processes.

``inferstream up`` starts a single-node Kafka (KRaft, broker and controller in one
JVM) from the jars Maven resolves, so a laptop or a CI runner needs Java and Maven,
not a container engine. The same classes start the brokers of the integration tests.

Layout under the state directory (``Settings.state_dir``, ``.inferstream`` by default)::

    cache/kafka-<version>/lib/      the jars, shared by every server of that version
    kafka/<version>/                one server: server.properties, log4j2.properties,
        data/                       the KRaft log directory
        logs/                       server.log (log4j2) and kafka.out (the JVM's stdout/stderr)
        kafka.pid

Every failure raises :class:`inferstream.errors.StackError` with what to do about it.
"""

from __future__ import annotations

from inferstream.stack.kafka import KafkaServer, KafkaStatus

__all__ = ["KafkaServer", "KafkaStatus"]
