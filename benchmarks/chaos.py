"""Chaos under a steady load: kill -9 of every long-running stage, a broker restart, an Elasticsearch outage.

Every scenario runs on the same broker with topics of its own (a topic prefix per
scenario, a state directory per scenario) and real ``inferstream`` processes
started through the CLI, so ``kill -9`` is a real SIGKILL: nothing flushed,
nothing committed, no shutdown hook. A producer thread sends records at a fixed
rate from before the fault until after the restart; an id counts as sent once the
broker acknowledged it.

Scenarios (load → stages → what is counted; the fault):

- ``worker``: tabular requests → ``serve breast-cancer:1`` → predictions; kill -9 the worker.
- ``worker_eos``: the same with ``serve --exactly-once``; kill -9 the worker.
- ``ingest``: events → ``stream ingest`` → inference requests; kill -9 the ingest processor.
- ``embedder``: embedding requests → ``serve minilm:1`` → embeddings; kill -9 the embedder.
- ``index``: embeddings → ``stream index`` → Elasticsearch documents; kill -9 the index sink.
- ``table``: predictions → ``table sink`` → Parquet rows; kill -9 the table sink.
- ``monitor``: predictions → ``monitor run`` → rows in closed windows; kill -9 the monitor.
- ``broker``: events → ingest → ``serve breast-cancer:1`` → table sink; the broker stopped
  and started again on the same ports and data directory.
- ``broker_eos``: tabular requests → ``serve --exactly-once`` → predictions; the same restart.
- ``elasticsearch``: embeddings → ``stream index`` → Elasticsearch documents; Elasticsearch
  stopped for 30 s and started again on the same data directory.

A killed stage stays down for a moment (the load goes on) and is started again.

With ``--cluster`` the scenarios run on a 3-broker KRaft cluster (replication 3,
min.insync.replicas 2; producers with acks=all and idempotence, the settings' default)
and a 2-node Elasticsearch (the index with one replica), both started here:

- ``cluster_broker``: tabular requests → ``serve --exactly-once`` → predictions; kill -9 of
  the broker leading partition 0 of the predictions topic.
- ``cluster_broker_index``: embeddings → ``stream index`` → Elasticsearch documents; kill -9
  of the broker leading partition 0 of the embeddings topic.
- ``cluster_elasticsearch``: the same load; kill -9 of the Elasticsearch node that is not
  the elected master (a cluster of two cannot lose its master).

The killed node stays down for a moment and is started again on its data while the load
goes on; the cluster serves on without it, so recovery counts from the kill (failover:
every id sent before the kill is out). Each line says when the node was back in sync
(the broker in every replica set of the topic again, Elasticsearch green with both nodes).

Measured per scenario:

- **lost**: ids sent whose output never came: predictions and requests by request
  id (ingest derives its requests' ids from the event ids), embeddings and index
  documents by document id, table rows by request id; for the drift monitor, the
  rows its closed windows counted against the predictions sent (a whole number of
  windows is sent). Dead letters are counted apart (none are expected: every
  record sent is valid).
- **duplicated**: outputs beyond the first of an id, read with ``read_committed``.
  The plain worker, the ingest processor and the embedder are at-least-once: a
  killed copy's uncommitted work is done again. The exactly-once worker, the table
  sink and the drift monitor promise none; index documents are keyed by id (a
  re-sent document overwrites itself). In the ``broker`` chain a table row counts as
  a duplicate only beyond the answers on the topic (what ingest and the worker
  repeat is at-least-once, and shown apart). ``dup_exactly_once`` adds up the
  duplicates of every scenario whose stages promise none.
- **recovery**: seconds from the restart (the killed stage's new process started,
  or the broker or Elasticsearch serving again) until every id sent before the
  restart is out: the backlog drained, the lag back at its steady level. A consumer
  group waits for the killed member's session to time out before it hands its
  partitions to the new one, so this includes that timeout (``--session-timeout-ms``
  sets ``kafka.session_timeout_ms`` for every stage; the platform's default is 10 s, the
  ingest processor's faust consumer included).

The last line is ``RESULT lost_total=... dup_exactly_once=... <scenario>_lost=...
<scenario>_dup=... <scenario>_recovery_s=... recovery_max_s=...``; a scenario that
could not run here (the broker restart with ``--bootstrap-servers``, the outage with
``--elasticsearch``) reports ``nan``. With ``--cluster`` it is ``RESULT cluster_lost=...
cluster_dup_exactly_once=... <scenario>_lost=... <scenario>_dup=... <scenario>_recovery_s=...
recovery_max_s=...`` (goal: 0 lost, 0 duplicates).

    .venv/bin/python benchmarks/chaos.py --quick                    # every scenario, a few thousand records each
    .venv/bin/python benchmarks/chaos.py --quick --scenarios worker,ingest
    .venv/bin/python benchmarks/chaos.py                            # bigger loads, longer before and after
    .venv/bin/python benchmarks/chaos.py --quick --cluster          # a broker and an Elasticsearch node of a cluster
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import confluent_kafka
import numpy as np

from _harness import (
    add_common_args,
    elasticsearch,
    elasticsearch_cluster,
    kafka_broker,
    kafka_cluster,
    note,
    result_line,
)
from inferstream.client import Client
from inferstream.config import ElasticsearchSettings, Settings
from inferstream.connectors.kafka.reader import read_bounded
from inferstream.demo import sample_texts
from inferstream.monitoring.reference import build_reference, references_dir
from inferstream.monitoring.reports import monitor_state_dir, read_status
from inferstream.monitoring.spec import ColumnSpec, MonitorSpec, WindowSpec
from inferstream.monitoring.table import read_table, table_dir
from inferstream.schemas import Embedding, EmbeddingRequest, Event, InferenceRequest, Prediction, codec_for
from inferstream.serving.demo_models import (
    EMBEDDER_NAME,
    EMBEDDER_VERSION,
    TABULAR_NAME,
    TABULAR_VERSION,
    build_demo_models,
    tabular_rows,
)
from inferstream.stack.server import LocalServer
from inferstream.stack.testing import Broker, SearchServer, cli_env
from inferstream.streams.ingest import request_id_for

SCENARIOS = (
    "worker",
    "worker_eos",
    "ingest",
    "embedder",
    "index",
    "table",
    "monitor",
    "broker",
    "broker_eos",
    "elasticsearch",
)
CLUSTER_SCENARIOS = ("cluster_broker", "cluster_broker_index", "cluster_elasticsearch")
#: Scenarios whose stages promise no duplicates: their duplicates add up to ``dup_exactly_once``
#: (``cluster_dup_exactly_once`` for the cluster's).
NO_DUPLICATES = frozenset(
    {"worker_eos", "index", "table", "monitor", "broker", "broker_eos", "elasticsearch", *CLUSTER_SCENARIOS}
)
MONITOR = "chaos"
DIMS = 384


@dataclass(frozen=True)
class Plan:
    """How hard and how long each scenario runs."""

    rate: float  # records/s of the steady load (requests, events, predictions, embeddings)
    text_rate: float  # embedding requests/s for the embedder (texts are slow on a CPU)
    before_s: float  # steady load between the first output and the fault
    down_s: float  # a killed stage, or the stopped broker, stays down this long (the load goes on)
    after_s: float  # steady load after the restart
    es_outage_s: float  # Elasticsearch stays down this long
    window: int  # rows per window of the drift monitor
    start_max_s: float = 180.0  # the first output must come within this
    drain_max_s: float = 180.0  # after the load stops, give up waiting for the output after this
    stop_s: float = 90.0  # a stage that has not exited this long after SIGTERM is killed
    settle_s: float = 2.0  # after everything is out, duplicates still get this long to show


QUICK = Plan(
    rate=200, text_rate=8, before_s=5, down_s=2, after_s=8, es_outage_s=30, window=100, drain_max_s=90, stop_s=30
)
FULL = Plan(rate=1000, text_rate=20, before_s=20, down_s=5, after_s=30, es_outage_s=30, window=1000)


# -- the load ---------------------------------------------------------------------------


Make = Callable[[int], tuple[str, bytes, bytes, list[tuple[str, bytes]]]]
"""Record ``i`` of a load: (the id its output will carry, key, value, headers)."""


class Sender:
    """Produces records at a fixed rate from a thread; an id counts as sent once the broker acknowledged it.

    While the broker is away the records wait in the producer (its delivery timeout
    is two minutes) and the rate is made up once it is back.
    """

    def __init__(self, settings: Settings, topic: str, make: Make, rate: float) -> None:
        self.topic = topic
        self.rate = rate
        self._make = make
        self._producer = confluent_kafka.Producer(settings.kafka.producer_config())
        self._next = 0
        self._acked: list[tuple[str, float]] = []  # (output id, when acknowledged), in order
        self.failed: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"sender-{topic}", daemon=True)
        self._stopped = False

    def start(self) -> None:
        """Begin sending."""
        self._thread.start()

    def stop(self, pad_to: int = 1) -> None:
        """Stop sending; first top the count up to a multiple of ``pad_to``; wait for every acknowledgement."""
        if self._stopped:
            return
        self._stopped = True
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(60)
        self._send((-self._next) % pad_to)
        left = self._producer.flush(180)
        if left:
            note(f"{left} records to {self.topic} were never acknowledged")

    def ids(self, until: float | None = None) -> list[str]:
        """Output ids of the records acknowledged (by monotonic time ``until``), in order."""
        with self._lock:
            acked = list(self._acked)
        return [i for i, at in acked if until is None or at <= until]

    @property
    def produced(self) -> int:
        """Records handed to the producer so far."""
        return self._next

    def _send(self, count: int) -> None:
        for _ in range(count):
            out_id, key, value, headers = self._make(self._next)
            self._next += 1
            while True:
                try:
                    self._producer.produce(
                        self.topic, value, key, headers=headers, on_delivery=partial(self._delivered, out_id)
                    )
                    break
                except BufferError:
                    self._producer.poll(0.05)
        self._producer.poll(0)

    def _delivered(self, out_id: str, err: confluent_kafka.KafkaError | None, _msg: Any) -> None:
        if err is None:
            with self._lock:
                self._acked.append((out_id, time.monotonic()))
        else:
            self.failed.append(out_id)

    def _run(self) -> None:
        started = time.monotonic()
        while not self._stop.wait(0.02):
            due = int((time.monotonic() - started) * self.rate)
            if due > self._next:
                self._send(due - self._next)
            else:
                self._producer.poll(0)


def _now() -> str:
    return datetime.now(UTC).isoformat()


class Loads:
    """The records of each kind of load, record ``i`` always the same but for its time."""

    def __init__(self) -> None:
        self.rows, targets = tabular_rows()
        self.labels = ["malignant" if t == 0 else "benign" for t in targets]
        self.texts = sample_texts()
        generator = np.random.default_rng(20260101)
        vectors = generator.standard_normal((512, DIMS)).astype(np.float32)
        self.vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    def request(self, i: int) -> tuple[str, bytes, bytes, list[tuple[str, bytes]]]:
        """A tabular inference request for breast-cancer:1, id ``r<i>``."""
        codec = codec_for(InferenceRequest)
        record = codec.validate(
            {
                "request_id": f"r{i}",
                "event_time": _now(),
                "model": TABULAR_NAME,
                "version": TABULAR_VERSION,
                "inputs": self.rows[i % len(self.rows)],
            }
        )
        return record.request_id, record.key(), codec.encode(record), [codec.header]

    def event(self, i: int) -> tuple[str, bytes, bytes, list[tuple[str, bytes]]]:
        """A transaction event ``e<i>``; its output id is that of the request ingest makes of it."""
        codec = codec_for(Event)
        record = codec.validate(
            {
                "id": f"e{i}",
                "type": "transaction",
                "event_time": _now(),
                "source": "chaos",
                "features": self.rows[i % len(self.rows)],
            }
        )
        request_id = request_id_for(record.id, TABULAR_NAME, TABULAR_VERSION)
        return request_id, record.key(), codec.encode(record), [codec.header]

    def text(self, i: int) -> tuple[str, bytes, bytes, list[tuple[str, bytes]]]:
        """An embedding request for minilm:1 of document ``d<i>``."""
        codec = codec_for(EmbeddingRequest)
        record = codec.validate(
            {
                "request_id": f"q{i}",
                "event_time": _now(),
                "model": EMBEDDER_NAME,
                "version": EMBEDDER_VERSION,
                "document_id": f"d{i}",
                "text": self.texts[i % len(self.texts)],
            }
        )
        return record.document_id, record.key(), codec.encode(record), [codec.header]

    def embedding(self, i: int) -> tuple[str, bytes, bytes, list[tuple[str, bytes]]]:
        """An embedding of minilm:1 (a unit vector), document ``v<i>``."""
        codec = codec_for(Embedding)
        record = codec.validate(
            {
                "id": f"v{i}",
                "event_time": _now(),
                "model": EMBEDDER_NAME,
                "version": EMBEDDER_VERSION,
                "vector": self.vectors[i % len(self.vectors)],
                "text": self.texts[i % len(self.texts)],
            }
        )
        return record.id, record.key(), codec.encode(record), [codec.header]

    def prediction_fields(self, i: int) -> dict[str, Any]:
        """A prediction of breast-cancer:1 as the worker writes it, id ``p<i>``."""
        return {
            "request_id": f"p{i}",
            "event_time": _now(),
            "model": TABULAR_NAME,
            "version": TABULAR_VERSION,
            "inputs": self.rows[i % len(self.rows)],
            "outputs": {"label": self.labels[i % len(self.labels)]},
            "latency": {"queue_ms": 0.1, "compute_ms": 0.2, "total_ms": 1.0},
        }

    def prediction(self, i: int) -> tuple[str, bytes, bytes, list[tuple[str, bytes]]]:
        """The prediction ``p<i>`` as a record to produce."""
        codec = codec_for(Prediction)
        record = codec.validate(self.prediction_fields(i))
        return record.request_id, record.key(), codec.encode(record), [codec.header]


# -- the stages -------------------------------------------------------------------------


class Stage:
    """One long-running ``inferstream`` command as a real process: start, kill -9, stop."""

    def __init__(self, name: str, args: Sequence[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.args = list(args)
        self.env = env
        self.log_dir = log_dir
        self.starts = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.log: Path | None = None

    def start(self) -> None:
        """Start (again): a new process, its output to a log file of its own."""
        self.starts += 1
        self.log = self.log_dir / f"{self.name}.{self.starts}.log"
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "inferstream", *self.args],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def kill9(self) -> None:
        """SIGKILL, as a crash or the OOM killer would: no flush, no commit."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def stop(self, timeout: float) -> int | None:
        """SIGTERM and wait: the exit code (None when it had to be killed)."""
        process = self.process
        if process is None:
            return 0
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                return process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(30)
                return None
        return process.returncode

    @property
    def alive(self) -> bool:
        """Whether the current process runs."""
        return self.process is not None and self.process.poll() is None

    def tail(self, lines: int = 15) -> str:
        """The last lines of the current process's log."""
        if self.log is None or not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


# -- the outputs ------------------------------------------------------------------------


@dataclass(frozen=True)
class Tally:
    """What came out of a scenario, against what was sent."""

    lost: int
    dup: int
    detail: str = ""


def tally_counts(ids: Iterable[str], counts: Counter[str]) -> Tally:
    """Lost: ids sent and never out; duplicated: outputs beyond the first of an id."""
    sent = set(ids)
    lost = len(sent - counts.keys())
    dup = sum(n - 1 for n in counts.values() if n > 1)
    return Tally(lost, dup)


class Output(Protocol):
    """Where a scenario's results are looked for."""

    def caught_up(self, ids: Sequence[str]) -> bool:
        """Whether every one of ``ids`` is out."""
        ...

    def tally(self, ids: Sequence[str]) -> Tally:
        """The final count against the ids sent (after the stages stopped)."""
        ...

    def close(self) -> None:
        """Stop watching."""
        ...


class TopicOutput:
    """Keys of a topic as they arrive (read_committed, from the beginning, in a thread of its own)."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.settings = settings
        self.topic = topic
        self.counts: Counter[str] = Counter()
        self._consumer = confluent_kafka.Consumer(
            {
                **settings.kafka.base_config(),
                "group.id": f"chaos-watch-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "enable.partition.eof": False,
            }
        )
        partitions = self._consumer.list_topics(topic, timeout=30).topics[topic].partitions
        self._consumer.assign(
            [confluent_kafka.TopicPartition(topic, p, confluent_kafka.OFFSET_BEGINNING) for p in partitions]
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"watch-{topic}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for message in self._consumer.consume(500, 0.2):
                if message.error() is None:
                    self.counts[(message.key() or b"").decode()] += 1

    def caught_up(self, ids: Sequence[str]) -> bool:
        """Whether every one of ``ids`` has arrived."""
        counts = self.counts
        return all(i in counts for i in ids)

    def final(self) -> Counter[str]:
        """Every key on the topic up to its end, read again from the start."""
        return Counter((m.key() or b"").decode() for m in read_bounded(self.settings, self.topic))

    def tally(self, ids: Sequence[str]) -> Tally:
        """Lost and duplicated ids, from a read of the whole topic."""
        return tally_counts(ids, self.final())

    def close(self) -> None:
        """Stop the watching thread and its consumer."""
        self._stop.set()
        self._thread.join(30)
        self._consumer.close()


class IndexOutput:
    """Documents of an Elasticsearch index, by id."""

    def __init__(self, url: str, index: str) -> None:
        from elasticsearch import Elasticsearch

        self.index = index
        # Every node of a cluster (the url lists them): a request to a node that is down goes to another.
        hosts = [host for host in url.split(",") if host]
        self.client = Elasticsearch(hosts, request_timeout=10, max_retries=len(hosts) - 1)
        self._out: set[str] = set()

    def caught_up(self, ids: Sequence[str]) -> bool:
        """Whether every one of ``ids`` is a document (searchable: the index refreshes every second)."""
        missing = [i for i in ids if i not in self._out]
        try:
            for start in range(0, len(missing), 5000):
                chunk = missing[start : start + 5000]
                found = self.client.search(
                    index=self.index, query={"ids": {"values": chunk}}, size=len(chunk), source=False
                )
                self._out.update(hit["_id"] for hit in found["hits"]["hits"])
        except Exception:  # the server is away or the index not made yet: not caught up
            return False
        return all(i in self._out for i in ids)

    def tally(self, ids: Sequence[str]) -> Tally:
        """Lost documents (a document id exists once by construction: nothing is duplicated)."""
        from elasticsearch.helpers import scan

        self.client.indices.refresh(index=self.index)
        found = Counter(hit["_id"] for hit in scan(self.client, index=self.index, query={"query": {"match_all": {}}}))
        total = self.client.count(index=self.index)["count"]
        return Tally(len(set(ids) - found.keys()), 0, f"{total} documents")

    def close(self) -> None:
        """Delete the scenario's index and close the client."""
        self.client.options(ignore_status=404).indices.delete(index=self.index)
        self.client.close()


class TableOutput:
    """Rows of the inference table, by request id."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def counts(self) -> Counter[str]:
        """How many rows each request id has in the table's complete files."""
        if not self.root.exists():
            return Counter()
        return Counter(read_table(self.root, columns=["request_id"]).column("request_id").to_pylist())

    def caught_up(self, ids: Sequence[str]) -> bool:
        """Whether every one of ``ids`` has a row."""
        counts = self.counts()
        return all(i in counts for i in ids)

    def tally(self, ids: Sequence[str]) -> Tally:
        """Lost and duplicated rows."""
        return tally_counts(ids, self.counts())

    def close(self) -> None:
        """Nothing to close."""


class MonitorOutput:
    """Rows a drift monitor counted in its closed windows (from its status file)."""

    def __init__(self, settings: Settings, monitor: str, window: int) -> None:
        self.state_dir = monitor_state_dir(settings, monitor)
        self.window = window

    def rows(self) -> int:
        """Rows in the windows closed so far (restored across restarts)."""
        status = read_status(self.state_dir) or {}
        return int((status.get("windows") or {}).get("rows", 0))

    def caught_up(self, ids: Sequence[str]) -> bool:
        """Whether the windows the ids fill have closed."""
        return self.rows() >= len(ids) // self.window * self.window

    def tally(self, ids: Sequence[str]) -> Tally:
        """Rows never counted (lost) and rows counted twice (a replay counted again)."""
        rows = self.rows()
        status = read_status(self.state_dir) or {}
        closed = (status.get("windows") or {}).get("closed", 0)
        return Tally(max(len(ids) - rows, 0), max(rows - len(ids), 0), f"{closed} windows closed, {rows} rows")

    def close(self) -> None:
        """Nothing to close."""


class ChainOutput:
    """The broker scenario's chain: requests (ingest) → predictions (worker) → table rows."""

    def __init__(self, settings: Settings) -> None:
        topics = settings.topics.platform_topics()
        self.requests = TopicOutput(settings, settings.topics.request_topic(TABULAR_NAME, TABULAR_VERSION))
        self.predictions = TopicOutput(settings, topics["predictions"])
        self.table = TableOutput(table_dir(settings))

    def caught_up(self, ids: Sequence[str]) -> bool:
        """Whether every one of ``ids`` is answered and in the table (the end of the chain)."""
        return self.predictions.caught_up(ids) and self.table.caught_up(ids)

    def tally(self, ids: Sequence[str]) -> Tally:
        """Lost anywhere along the chain; duplicated: table rows beyond the answers on the topic."""
        requests, predictions, rows = self.requests.final(), self.predictions.final(), self.table.counts()
        sent = set(ids)
        lost = len((sent - predictions.keys()) | (sent - rows.keys()))
        ingest_dup = sum(n - 1 for n in requests.values() if n > 1)
        worker_dup = sum(max(n - requests[i], 0) for i, n in predictions.items())
        table_dup = sum(max(n - predictions[i], 0) for i, n in rows.items())
        detail = (
            f"at-least-once: ingest wrote {ingest_dup} duplicate requests, the worker {worker_dup} answers "
            f"beyond its requests; {len(sent - requests.keys())} events never became requests, "
            f"{len(sent - predictions.keys())} never answered, {len(sent - rows.keys())} not in the table"
        )
        return Tally(lost, table_dup, detail)

    def close(self) -> None:
        """Stop the topic watchers."""
        self.requests.close()
        self.predictions.close()


# -- a scenario -------------------------------------------------------------------------


@dataclass
class Outcome:
    """What one scenario measured."""

    name: str
    what: str
    semantics: str
    sent: int = 0
    lost: float = math.nan
    dup: float = math.nan
    recovery_s: float = math.nan
    dead_letters: int = 0
    exit_codes: list[int | None] = field(default_factory=list)
    detail: str = ""
    skipped: str = ""
    #: A cluster scenario's killed node: back in sync after its restart (None: nothing was killed).
    rejoined: bool | None = None

    def line(self) -> str:
        """One line for the report."""
        if self.skipped:
            return f"{self.name}: {self.what}: skipped ({self.skipped})"
        recovery = "never" if math.isinf(self.recovery_s) else f"{self.recovery_s:.1f} s"
        text = (
            f"{self.name}: {self.what} ({self.semantics}): sent {self.sent}, lost {self.lost:.0f}, "
            f"duplicated {self.dup:.0f}, recovery {recovery}, dead letters {self.dead_letters}"
        )
        bad_exits = ["none (killed)" if code is None else str(code) for code in self.exit_codes if code != 0]
        if bad_exits:
            text += f", exit codes on SIGTERM: {', '.join(bad_exits)}"
        return text + (f"; {self.detail}" if self.detail else "")


def wait_for(check: Callable[[], bool], timeout: float, step: float = 0.25) -> bool:
    """Poll ``check`` until it holds (True) or ``timeout`` passes (False)."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(step)


@dataclass
class Lab:
    """What every scenario shares: the plan, the broker, Elasticsearch, the models, a work directory."""

    plan: Plan
    broker: Broker
    models: Path
    work: Path
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    search: SearchServer | None = None
    session_timeout_ms: int | None = None
    loads: Loads = field(default_factory=Loads)

    def settings(self, scenario: str) -> Settings:
        """Settings of a scenario: topics, consumer groups, state and index of its own."""
        prefix = f"chaos.{self.run_id}.{scenario}."
        state = self.work / scenario
        state.mkdir(parents=True, exist_ok=True)
        overrides: dict[str, Any] = {
            "kafka": {"bootstrap_servers": self.broker.bootstrap_servers},
            "topics": {"prefix": prefix},
            "state_dir": state,
            "models_dir": self.models,
            "ingest": {"group": f"{prefix}ingest"},
        }
        if self.search is not None:
            overrides["elasticsearch"] = ElasticsearchSettings(url=self.search.url, index=f"{prefix}docs")
        return Settings.load(**overrides)

    def stage(self, settings: Settings, name: str, *args: str, **env: str) -> Stage:
        """An ``inferstream`` command with the environment of ``settings`` (and ``env``)."""
        environment = cli_env(settings, self.models)
        environment["INFERSTREAM_STATE_DIR"] = str(settings.state_dir)
        environment["INFERSTREAM_INGEST__GROUP"] = settings.ingest.group
        if settings.elasticsearch.url:
            environment["INFERSTREAM_ELASTICSEARCH__URL"] = settings.elasticsearch.url
            environment["INFERSTREAM_ELASTICSEARCH__INDEX"] = settings.elasticsearch.index
        if self.session_timeout_ms is not None:
            environment["INFERSTREAM_KAFKA__SESSION_TIMEOUT_MS"] = str(self.session_timeout_ms)
        environment.update({f"INFERSTREAM_{key.upper()}": value for key, value in env.items()})
        return Stage(name, args, environment, Path(settings.state_dir))


def dead_letters(settings: Settings) -> int:
    """Records on the scenario's dead-letter topic."""
    return sum(1 for _ in read_bounded(settings, settings.topics.platform_topics()["dead-letters"]))


def exercise(
    lab: Lab,
    outcome: Outcome,
    settings: Settings,
    sender: Sender,
    stages: Sequence[Stage],
    output: Output,
    fault: Callable[[], float],
    *,
    pad_to: int = 1,
) -> Outcome:
    """Load, fault, restart, drain; then count what came out against what was sent.

    ``fault`` breaks something, restores it and returns the (monotonic) time of the
    restart: recovery is measured from then. A pipeline that never puts anything out
    is not broken on purpose: everything it was sent counts as lost.
    """
    plan = lab.plan
    started = time.monotonic()
    notes: list[str] = []
    recovery: float | None = None
    try:
        for stage in stages:
            stage.start()
        sender.start()
        # Up and serving once the first records are out (the drift monitor: its first window closed).
        if wait_for(
            lambda: len(first := sender.ids()[:pad_to]) == pad_to and output.caught_up(first), plan.start_max_s
        ):
            note(
                f"[{outcome.name}] output flows after {time.monotonic() - started:.1f} s; fault in {plan.before_s:g} s"
            )
            time.sleep(plan.before_s)
            restarted = fault()
            before = sender.ids(until=restarted)
            note(f"[{outcome.name}] restarted; {len(before)} records were sent before")

            def recovered() -> bool:
                nonlocal recovery
                if recovery is None and output.caught_up(before):
                    recovery = time.monotonic() - restarted
                return recovery is not None

            wait_for(lambda: recovered() and time.monotonic() - restarted >= plan.after_s, plan.after_s, step=0.5)
            sender.stop(pad_to)
            if not wait_for(lambda: recovered() and output.caught_up(sender.ids()), plan.drain_max_s, step=0.5):
                notes.append(f"the output had not caught up {plan.drain_max_s:.0f} s after the load stopped")
            time.sleep(plan.settle_s)  # anything more now would be a duplicate: give it the chance to show
        else:
            notes.append(f"no output within {plan.start_max_s:.0f} s of the start, so no fault")
            for stage in stages:
                note(f"[{outcome.name}] {stage.name} ({'running' if stage.alive else 'exited'}):\n{stage.tail()}")
    finally:
        sender.stop(pad_to)
        outcome.exit_codes = [stage.stop(plan.stop_s) for stage in stages]
    sent = sender.ids()
    try:
        counted = output.tally(sent)
    finally:
        output.close()
    outcome.sent = len(sent)
    outcome.lost, outcome.dup = counted.lost, counted.dup
    outcome.recovery_s = math.inf if recovery is None else recovery
    outcome.dead_letters = dead_letters(settings)
    if sender.failed:
        notes.append(f"{len(sender.failed)} records never acknowledged by the broker (not counted as sent)")
    for stage, code in zip(stages, outcome.exit_codes, strict=True):
        if code != 0:
            note(f"[{outcome.name}] {stage.name} exited with {code} on SIGTERM:\n{stage.tail()}")
    outcome.detail = "; ".join(part for part in (counted.detail, *notes) if part)
    note(f"[{outcome.name}] done in {time.monotonic() - started:.0f} s")
    return outcome


def kill(lab: Lab, stage: Stage) -> Callable[[], float]:
    """kill -9 the stage, leave it down for a while (the load goes on), start it again."""

    def fault() -> float:
        note(f"kill -9 {stage.name} (pid {stage.process.pid if stage.process else '?'})")
        stage.kill9()
        time.sleep(lab.plan.down_s)
        restarted = time.monotonic()
        stage.start()
        return restarted

    return fault


def _topics(settings: Settings, *requests: tuple[str, str]) -> None:
    with Client(settings) as client:
        client.topics.ensure_platform_topics()
        for model, version in requests:
            client.topics.ensure_request_topic(model, version)


# -- the scenarios ----------------------------------------------------------------------


def worker(lab: Lab, *, exactly_once: bool) -> Outcome:
    """kill -9 of ``serve breast-cancer:1`` (plain or exactly-once) under tabular requests."""
    name = "worker_eos" if exactly_once else "worker"
    flags = ["--exactly-once"] if exactly_once else []
    outcome = Outcome(
        name,
        f"kill -9 of serve {TABULAR_NAME}:{TABULAR_VERSION}{' --exactly-once' if exactly_once else ''}",
        "exactly-once" if exactly_once else "at-least-once",
    )
    settings = lab.settings(name)
    _topics(settings, (TABULAR_NAME, TABULAR_VERSION))
    stage = lab.stage(settings, "serve", "serve", "--model", f"{TABULAR_NAME}:{TABULAR_VERSION}", *flags)
    sender = Sender(
        settings, settings.topics.request_topic(TABULAR_NAME, TABULAR_VERSION), lab.loads.request, lab.plan.rate
    )
    output = TopicOutput(settings, settings.topics.platform_topics()["predictions"])
    return exercise(lab, outcome, settings, sender, [stage], output, kill(lab, stage))


TABLE_SINK = ("table", "sink", "--max-rows", "500", "--max-delay", "0.5")
INGEST_RULES = json.dumps(
    [{"type": "transaction", "model": TABULAR_NAME, "version": TABULAR_VERSION, "input": "features"}]
)


def ingest(lab: Lab) -> Outcome:
    """kill -9 of ``stream ingest`` under transaction events (requests counted on the request topic)."""
    outcome = Outcome("ingest", "kill -9 of stream ingest", "at-least-once")
    settings = lab.settings("ingest")
    _topics(settings, (TABULAR_NAME, TABULAR_VERSION))
    stage = lab.stage(settings, "ingest", "stream", "ingest", ingest__rules=INGEST_RULES)
    sender = Sender(settings, settings.topics.platform_topics()["events"], lab.loads.event, lab.plan.rate)
    output = TopicOutput(settings, settings.topics.request_topic(TABULAR_NAME, TABULAR_VERSION))
    return exercise(lab, outcome, settings, sender, [stage], output, kill(lab, stage))


def embedder(lab: Lab) -> Outcome:
    """kill -9 of ``serve minilm:1`` under embedding requests (embeddings counted by document id)."""
    outcome = Outcome("embedder", f"kill -9 of serve {EMBEDDER_NAME}:{EMBEDDER_VERSION}", "at-least-once")
    settings = lab.settings("embedder")
    _topics(settings, (EMBEDDER_NAME, EMBEDDER_VERSION))
    stage = lab.stage(settings, "serve", "serve", "--model", f"{EMBEDDER_NAME}:{EMBEDDER_VERSION}")
    sender = Sender(
        settings, settings.topics.request_topic(EMBEDDER_NAME, EMBEDDER_VERSION), lab.loads.text, lab.plan.text_rate
    )
    output = TopicOutput(settings, settings.topics.platform_topics()["embeddings"])
    return exercise(lab, outcome, settings, sender, [stage], output, kill(lab, stage))


def index(lab: Lab, *, outage: bool) -> Outcome:
    """kill -9 of ``stream index``, or Elasticsearch stopped for a while, under embeddings."""
    name = "elasticsearch" if outage else "index"
    what = f"Elasticsearch down for {lab.plan.es_outage_s:g} s" if outage else "kill -9 of stream index"
    outcome = Outcome(name, what, "idempotent by document id")
    search = lab.search
    if search is None or (outage and search.server is None):
        outcome.skipped = "needs an Elasticsearch this benchmark started" if outage else "no Elasticsearch"
        return outcome
    settings = lab.settings(name)
    _topics(settings)
    stage = lab.stage(settings, "index", "stream", "index")
    sender = Sender(settings, settings.topics.platform_topics()["embeddings"], lab.loads.embedding, lab.plan.rate)
    output = IndexOutput(search.url, settings.elasticsearch.index)
    fault = outage_of(search, lab.plan.es_outage_s) if outage else kill(lab, stage)
    return exercise(lab, outcome, settings, sender, [stage], output, fault)


def outage_of(search: SearchServer, seconds: float) -> Callable[[], float]:
    """Stop Elasticsearch, wait, start it again on the same data; the restart is when it serves again."""
    server = search.server
    assert server is not None

    def fault() -> float:
        note(f"stopping Elasticsearch for {seconds:g} s")
        server.stop()
        try:
            time.sleep(seconds)
        finally:
            server.start(timeout=180)
        return time.monotonic()

    return fault


def table(lab: Lab) -> Outcome:
    """kill -9 of ``table sink`` under predictions (rows counted by request id)."""
    outcome = Outcome("table", "kill -9 of table sink", "no duplicates")
    settings = lab.settings("table")
    _topics(settings)
    stage = lab.stage(settings, "table", *TABLE_SINK)
    sender = Sender(settings, settings.topics.platform_topics()["predictions"], lab.loads.prediction, lab.plan.rate)
    return exercise(lab, outcome, settings, sender, [stage], TableOutput(table_dir(settings)), kill(lab, stage))


def monitor(lab: Lab) -> Outcome:
    """kill -9 of ``monitor run`` under predictions (rows counted by its closed count windows)."""
    outcome = Outcome("monitor", "kill -9 of monitor run", "no duplicates")
    settings = lab.settings("monitor")
    _topics(settings)
    spec = MonitorSpec(
        name=MONITOR,
        model=TABULAR_NAME,
        version=TABULAR_VERSION,
        columns=[
            ColumnSpec(name="mean_radius"),
            ColumnSpec(name="mean_texture"),
            ColumnSpec(name="label", kind="prediction"),
        ],
        window=WindowSpec(kind="count", size=lab.plan.window),
    )
    reference = [lab.loads.prediction_fields(i) for i in range(len(lab.loads.rows))]
    build_reference(spec, reference, root=references_dir(settings), source="the demo data set")
    monitors = json.dumps([spec.model_dump(mode="json", exclude_none=True)])
    stage = lab.stage(settings, "monitor", "monitor", "run", MONITOR, "--no-reports", monitoring__monitors=monitors)
    sender = Sender(settings, settings.topics.platform_topics()["predictions"], lab.loads.prediction, lab.plan.rate)
    output = MonitorOutput(settings, MONITOR, lab.plan.window)
    return exercise(lab, outcome, settings, sender, [stage], output, kill(lab, stage), pad_to=lab.plan.window)


def restart_broker(lab: Lab) -> Callable[[], float]:
    """Stop the benchmark's broker, leave it down for a while, start it on the same ports and data."""
    server = lab.broker.server
    assert server is not None

    def fault() -> float:
        note("stopping the broker")
        server.stop()
        try:
            time.sleep(lab.plan.down_s)
        finally:
            server.start(timeout=120)
        return time.monotonic()

    return fault


def broker_restart(lab: Lab, *, exactly_once: bool) -> Outcome:
    """The broker stopped and started again (same ports, same data) under load.

    Plain: events through the whole chain (ingest → worker → table sink). Exactly-once:
    requests to ``serve --exactly-once``, its answers read with read_committed.
    """
    name = "broker_eos" if exactly_once else "broker"
    served = f"serve {TABULAR_NAME}:{TABULAR_VERSION}"
    outcome = Outcome(
        name,
        f"broker stopped and started under {served} --exactly-once"
        if exactly_once
        else f"broker stopped and started under stream ingest → {served} → table sink",
        "exactly-once" if exactly_once else "no table duplicates",
    )
    if lab.broker.server is None:
        outcome.skipped = "--bootstrap-servers: not this benchmark's broker to restart"
        return outcome
    settings = lab.settings(name)
    _topics(settings, (TABULAR_NAME, TABULAR_VERSION))
    serve = ["serve", "--model", f"{TABULAR_NAME}:{TABULAR_VERSION}"]
    output: Output
    if exactly_once:
        stages = [lab.stage(settings, "serve", *serve, "--exactly-once")]
        topic = settings.topics.request_topic(TABULAR_NAME, TABULAR_VERSION)
        sender = Sender(settings, topic, lab.loads.request, lab.plan.rate)
        output = TopicOutput(settings, settings.topics.platform_topics()["predictions"])
    else:
        stages = [
            lab.stage(settings, "ingest", "stream", "ingest", ingest__rules=INGEST_RULES),
            lab.stage(settings, "serve", *serve),
            lab.stage(settings, "table", *TABLE_SINK),
        ]
        sender = Sender(settings, settings.topics.platform_topics()["events"], lab.loads.event, lab.plan.rate)
        output = ChainOutput(settings)
    return exercise(lab, outcome, settings, sender, stages, output, restart_broker(lab))


class Crash:
    """kill -9 of one node of a cluster, started again in the background after ``down_s``.

    ``fault`` returns the time of the kill: the cluster serves on without the node, so
    recovery counts from then. ``finish`` waits for the restart and says when the node
    was back in sync (``rejoined``), or that it never was.
    """

    def __init__(
        self,
        lab: Lab,
        pick: Callable[[], tuple[str, LocalServer[Any]]],
        rejoined: Callable[[LocalServer[Any]], bool],
    ) -> None:
        self.lab = lab
        self.pick = pick
        self.rejoined = rejoined
        self.killed: str = ""
        self.rejoin_s: float | None = None
        self.error = ""
        self._thread: threading.Thread | None = None

    def fault(self) -> float:
        """kill -9 the node ``pick`` names; its restart runs in a thread."""
        self.killed, node = self.pick()
        note(f"kill -9 {self.killed} (pid {node.pid})")
        node.kill()
        killed = time.monotonic()
        self._thread = threading.Thread(target=self._restart, args=(node, killed), name="restart", daemon=True)
        self._thread.start()
        return killed

    def _restart(self, node: LocalServer[Any], killed: float) -> None:
        time.sleep(self.lab.plan.down_s)
        try:
            node.start(timeout=240)
        except Exception as exc:  # reported on the scenario's line; the counts stand
            self.error = f"{self.killed} did not start again: {exc}"
            return
        note(f"{self.killed} started again {time.monotonic() - killed:.1f} s after the kill")
        if wait_for(lambda: self.rejoined(node), 180, step=0.5):
            self.rejoin_s = time.monotonic() - killed

    def finish(self, outcome: Outcome) -> Outcome:
        """Wait for the restart; add what became of the node to the outcome."""
        if self._thread is not None:
            self._thread.join(400)
        if not self.killed:
            return outcome
        back = (
            f"back in sync {self.rejoin_s:.1f} s after the kill"
            if self.rejoin_s is not None
            else self.error or "never back in sync"
        )
        outcome.rejoined = self.rejoin_s is not None
        outcome.detail = "; ".join(part for part in (f"killed {self.killed}, {back}", outcome.detail) if part)
        return outcome


def _admin(settings: Settings) -> confluent_kafka.admin.AdminClient:
    return confluent_kafka.admin.AdminClient(settings.kafka.base_config())


def partition_leader(lab: Lab, settings: Settings, topic: str) -> tuple[str, LocalServer[Any]]:
    """The broker leading partition 0 of ``topic``."""
    cluster = lab.broker.cluster
    assert cluster is not None
    leader = _admin(settings).list_topics(topic, timeout=30).topics[topic].partitions[0].leader
    return f"broker {leader} (leader of {topic}[0])", cluster.node(leader)


def in_every_isr(lab: Lab, settings: Settings, topic: str, node: LocalServer[Any]) -> bool:
    """Whether the restarted broker is back in the in-sync replicas of every partition of ``topic``."""
    cluster = lab.broker.cluster
    assert cluster is not None
    broker = next(i for i, each in enumerate(cluster.nodes, start=1) if each is node)
    try:
        partitions = _admin(settings).list_topics(topic, timeout=10).topics[topic].partitions.values()
    except confluent_kafka.KafkaException:
        return False
    return all(broker in partition.isrs for partition in partitions)


def non_master(lab: Lab) -> tuple[str, LocalServer[Any]]:
    """The Elasticsearch node that is not the elected master."""
    cluster = lab.search.cluster if lab.search is not None else None
    assert cluster is not None
    master = cluster.master()
    others = [node for node in cluster.nodes if node is not master]
    if master is None or not others:
        raise RuntimeError("the Elasticsearch cluster has no elected master to keep")
    return f"Elasticsearch node {others[0].endpoint} (not the master)", others[0]


def search_green(lab: Lab, node: LocalServer[Any]) -> bool:
    """Whether every node is back and every shard copy assigned (green)."""
    cluster = lab.search.cluster if lab.search is not None else None
    assert cluster is not None
    return cluster.health(wait_s=1.0, status="green") is not None


def cluster_broker(lab: Lab, *, index_sink: bool) -> Outcome:
    """kill -9 of the broker leading a platform topic's partition 0, restarted, under a worker or the index sink."""
    name = "cluster_broker_index" if index_sink else "cluster_broker"
    stage_name = "stream index" if index_sink else f"serve {TABULAR_NAME}:{TABULAR_VERSION} --exactly-once"
    topic_key = "embeddings" if index_sink else "predictions"
    outcome = Outcome(
        name,
        f"kill -9 of the broker leading {topic_key}[0], restarted, under {stage_name}",
        "idempotent by document id" if index_sink else "exactly-once",
    )
    if lab.broker.cluster is None or (index_sink and lab.search is None):
        outcome.skipped = "needs a Kafka cluster (and Elasticsearch) this benchmark started"
        return outcome
    settings = lab.settings(name)
    topic = settings.topics.platform_topics()[topic_key]
    output: Output
    if index_sink:
        assert lab.search is not None
        _topics(settings)
        stage = lab.stage(settings, "index", "stream", "index")
        sender = Sender(settings, topic, lab.loads.embedding, lab.plan.rate)
        output = IndexOutput(lab.search.url, settings.elasticsearch.index)
    else:
        _topics(settings, (TABULAR_NAME, TABULAR_VERSION))
        stage = lab.stage(settings, "serve", "serve", "--model", f"{TABULAR_NAME}:{TABULAR_VERSION}", "--exactly-once")
        requests = settings.topics.request_topic(TABULAR_NAME, TABULAR_VERSION)
        sender = Sender(settings, requests, lab.loads.request, lab.plan.rate)
        output = TopicOutput(settings, topic)
    crash = Crash(lab, partial(partition_leader, lab, settings, topic), partial(in_every_isr, lab, settings, topic))
    return crash.finish(exercise(lab, outcome, settings, sender, [stage], output, crash.fault))


def cluster_elasticsearch(lab: Lab) -> Outcome:
    """kill -9 of the Elasticsearch node that is not the master, restarted, under the index sink."""
    outcome = Outcome(
        "cluster_elasticsearch",
        "kill -9 of the Elasticsearch node not the master, restarted",
        "idempotent by document id",
    )
    if lab.search is None or lab.search.cluster is None:
        outcome.skipped = "needs an Elasticsearch cluster this benchmark started"
        return outcome
    settings = lab.settings(outcome.name)
    _topics(settings)
    stage = lab.stage(settings, "index", "stream", "index")
    sender = Sender(settings, settings.topics.platform_topics()["embeddings"], lab.loads.embedding, lab.plan.rate)
    output = IndexOutput(lab.search.url, settings.elasticsearch.index)
    crash = Crash(lab, partial(non_master, lab), partial(search_green, lab))
    return crash.finish(exercise(lab, outcome, settings, sender, [stage], output, crash.fault))


RUNNERS: dict[str, Callable[[Lab], Outcome]] = {
    "worker": partial(worker, exactly_once=False),
    "worker_eos": partial(worker, exactly_once=True),
    "ingest": ingest,
    "embedder": embedder,
    "index": partial(index, outage=False),
    "table": table,
    "monitor": monitor,
    "broker": partial(broker_restart, exactly_once=False),
    "broker_eos": partial(broker_restart, exactly_once=True),
    "elasticsearch": partial(index, outage=True),
    "cluster_broker": partial(cluster_broker, index_sink=False),
    "cluster_broker_index": partial(cluster_broker, index_sink=True),
    "cluster_elasticsearch": cluster_elasticsearch,
}


def run_scenarios(lab: Lab, names: Sequence[str]) -> list[Outcome]:
    """Run the named scenarios one after another; print each one's line as it ends."""
    outcomes = []
    for name in names:
        note(f"[{name}] starting")
        outcome = RUNNERS[name](lab)
        print(outcome.line(), flush=True)
        outcomes.append(outcome)
    return outcomes


def metrics(outcomes: Sequence[Outcome], *, cluster: bool = False) -> dict[str, float]:
    """The RESULT line's figures: totals first, then per scenario (in the fixed order), then the slowest recovery.

    With ``cluster``, the totals are ``cluster_lost`` and ``cluster_dup_exactly_once`` over the cluster scenarios.
    """
    ran = [o for o in outcomes if not o.skipped]
    by_name = {o.name: o for o in outcomes}
    prefix = "cluster_" if cluster else ""
    values: dict[str, float] = {
        f"{prefix}lost" if cluster else "lost_total": sum(o.lost for o in ran),
        f"{prefix}dup_exactly_once": sum(o.dup for o in ran if o.name in NO_DUPLICATES),
    }
    for name in CLUSTER_SCENARIOS if cluster else SCENARIOS:
        if name not in by_name:
            continue
        o = by_name[name]
        values[f"{name}_lost"] = o.lost
        values[f"{name}_dup"] = o.dup
        values[f"{name}_recovery_s"] = o.recovery_s
    values["recovery_max_s"] = max((o.recovery_s for o in ran), default=math.nan)
    return values


@contextmanager
def lab_for(args: argparse.Namespace, names: Sequence[str]) -> Iterator[Lab]:
    """Broker, Elasticsearch (when a scenario needs it), the demo models and a work directory."""
    with ExitStack() as stack:
        work = Path(args.work_dir) if args.work_dir else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        work.mkdir(parents=True, exist_ok=True)
        work.chmod(0o755)
        models = work / "models"
        if not (models / TABULAR_NAME).exists():
            build_demo_models(models)
        search = None
        if args.cluster:
            found = stack.enter_context(kafka_cluster())
            if {"cluster_broker_index", "cluster_elasticsearch"} & set(names):
                search = stack.enter_context(elasticsearch_cluster())
        else:
            found = stack.enter_context(kafka_broker(args.bootstrap_servers))
            if {"index", "elasticsearch"} & set(names):
                search = stack.enter_context(elasticsearch(args.elasticsearch))
        plan = QUICK if args.quick else FULL
        lab = Lab(plan, found, models, work, search=search, session_timeout_ms=args.session_timeout_ms)
        try:
            yield lab
        finally:
            _delete_topics(lab)


def _delete_topics(lab: Lab) -> None:
    # A broker of the user's own keeps no topics of this run.
    try:
        settings = Settings.load(kafka={"bootstrap_servers": lab.broker.bootstrap_servers})
        with Client(settings) as client:
            prefix = f"chaos.{lab.run_id}."
            names = [name for name in client.topics.list() if name.startswith(prefix)]
            if names:
                client.topics.delete(*names)
    except Exception as exc:  # cleanup only: the results stand
        note(f"could not delete this run's topics: {exc}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser)
    parser.add_argument(
        "--scenarios",
        help=f"Comma-separated, in this order by default: {','.join(SCENARIOS)} (with --cluster: the cluster's).",
    )
    parser.add_argument("--elasticsearch", metavar="URL", help="Use this Elasticsearch (no outage scenario then).")
    parser.add_argument(
        "--session-timeout-ms",
        type=int,
        metavar="MS",
        help="kafka.session_timeout_ms of every stage (how soon a killed member's partitions move on); "
        "default: the settings' own (10 s).",
    )
    parser.add_argument("--work-dir", metavar="DIR", help="Keep state and stage logs here (default: a temporary one).")
    parser.add_argument(
        "--cluster",
        action="store_true",
        help=f"Kill nodes of a 3-broker Kafka and a 2-node Elasticsearch started here: {','.join(CLUSTER_SCENARIOS)}.",
    )
    args = parser.parse_args()
    # The benchmark's own clients see the broker go away on purpose: their connection errors are noise.
    logging.getLogger("inferstream.kafka").setLevel(logging.CRITICAL)
    known = CLUSTER_SCENARIOS if args.cluster else SCENARIOS
    if args.cluster and args.bootstrap_servers:
        parser.error("--cluster starts its own cluster: it takes no --bootstrap-servers")
    chosen = args.scenarios if args.scenarios is not None else ",".join(known)
    names = [n.strip() for n in chosen.split(",") if n.strip()]
    unknown = sorted(set(names) - set(known))
    if unknown:
        parser.error(f"unknown scenarios {', '.join(unknown)}; choose from {', '.join(known)}")
    started = time.monotonic()
    with lab_for(args, names) as lab:
        outcomes = run_scenarios(lab, names)
    note(f"{len(outcomes)} scenarios in {time.monotonic() - started:.0f} s")
    print(result_line(metrics(outcomes, cluster=args.cluster)))


if __name__ == "__main__":
    main()
