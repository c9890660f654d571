"""The local stack: services fetched from Maven Central and run as plain processes.

``inferstream up`` starts a single-node Kafka (KRaft, broker and controller in one
JVM) from the jars Maven resolves, so a laptop or a CI runner needs Java and Maven,
not a container engine; ``--brokers 3`` starts a local KRaft cluster
(:class:`~inferstream.stack.kafka.KafkaCluster`) and ``--es-nodes 2`` a local
Elasticsearch cluster, each node in a folder of its own on ports derived from the
configured ones. The same classes start the brokers of the integration tests.

Layout under the state directory (``Settings.state_dir``, ``.inferstream`` by default)::

    cache/kafka-<version>/lib/      the jars, shared by every server of that version
    kafka/<version>/                one server: server.properties, log4j2.properties,
        data/                       the KRaft log directory
        logs/                       server.log (log4j2) and kafka.out (the JVM's stdout/stderr)
        kafka.pid
        cluster-<n>/node-<id>/      one node of an n-broker cluster (the same files)

Every failure raises :class:`inferstream.errors.StackError` with what to do about it.
"""

from __future__ import annotations

from inferstream.stack.kafka import KafkaServer, KafkaStatus

__all__ = ["KafkaServer", "KafkaStatus"]
