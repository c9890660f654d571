"""SDK produce and subscribe throughput against raw confluent-kafka on the same broker, same run.

Produce: ``Client.produce(topic, records)`` with Event dicts (validated in batches, encoded,
keyed by id, schema header) against a raw ``confluent_kafka.Producer`` with the SDK's own
producer config sending the same records' bytes, encoded before timing (same keys and
header, a delivery callback that counts errors, ``BufferError`` served by ``poll``). Each
run is timed from the first call to the final ``flush`` (every record acknowledged).

Subscribe: the ``inferstream subscribe`` path (``Client.subscribe(...).raw()``, each value
and a newline written to a sink, committing as it goes) against a raw ``Consumer`` in a
fresh group that writes the same bytes to the same sink and commits once at the end.
Timed from the first batch to the final commit and close; joining the group is shown apart,
since both pay it once.

    .venv/bin/python benchmarks/produce.py --quick
    .venv/bin/python benchmarks/produce.py --bootstrap-servers 127.0.0.1:9092
    .venv/bin/python benchmarks/produce.py --quick --profile /tmp/produce.pstats
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import statistics
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

import confluent_kafka
from rich.console import Console
from rich.table import Table

from _harness import add_common_args, bench_client, broker, fresh_topic, note, result_line
from _records import events
from inferstream.client import Client
from inferstream.schemas import Event, codec_for

GOALS = {"200b": 0.5, "2kb": 0.8}  # SDK/raw produce throughput the issue asks for
SIZES = {"200b": 200, "2kb": 2048}
CONSUME_BATCH = 500
WARMUP_RECORDS = 1_000
IDLE_LIMIT_S = 30.0

Headers = list[tuple[str, str | bytes]]


@dataclass(frozen=True, slots=True)
class Timing:
    """One run: wall time, and CPU time of this thread (the Python side, not librdkafka's threads)."""

    wall_s: float
    cpu_s: float


class Stopwatch:
    def __init__(self) -> None:
        self._wall = time.perf_counter()
        self._cpu = time.thread_time()

    def stop(self) -> Timing:
        return Timing(time.perf_counter() - self._wall, time.thread_time() - self._cpu)


@dataclass
class Runs:
    """The runs of one variant; the best is the figure (noise only ever slows a run down)."""

    records: int
    value_bytes: int
    timings: list[Timing] = field(default_factory=list)
    joins: list[float] = field(default_factory=list)  # consumers: subscribe to first batch

    @property
    def best_s(self) -> float:
        return min(t.wall_s for t in self.timings)

    @property
    def rps(self) -> float:
        return self.records / self.best_s

    @property
    def mb_per_s(self) -> float:
        return self.value_bytes / self.best_s / 1e6

    @property
    def cpu_us(self) -> float:
        return min(t.cpu_s for t in self.timings) / self.records * 1e6

    def spread(self) -> str:
        if len(self.timings) < 2:
            return "-"
        return f"{(statistics.median(t.wall_s for t in self.timings) / self.best_s - 1) * 100:.0f}%"

    def cells(self) -> tuple[str, ...]:
        return (
            f"{self.records:,}",
            f"{self.best_s:.3f}",
            self.spread(),
            f"{self.rps:,.0f}",
            f"{self.mb_per_s:.1f}",
            f"{self.cpu_us:.2f}",
        )


def alternate(
    rounds: int, what: str, sdk: Runs, run_sdk: Callable[[], None], raw: Runs, run_raw: Callable[[], None]
) -> None:
    """Run both variants ``rounds`` times, swapping which goes first each round."""
    for round_ in range(rounds):
        for step in (run_sdk, run_raw) if round_ % 2 == 0 else (run_raw, run_sdk):
            step()
        sdk_s, raw_s = sdk.timings[-1].wall_s, raw.timings[-1].wall_s
        note(f"{what} round {round_ + 1} of {rounds}: SDK {sdk_s:.3f}s, raw {raw_s:.3f}s")


# -- produce -----------------------------------------------------------------------------


class RawProducer:
    """A plain confluent-kafka producer, written the way its docs recommend for throughput."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.producer = confluent_kafka.Producer(config)
        self.delivered = 0
        self.errors = 0

    def _on_delivery(self, err: confluent_kafka.KafkaError | None, _msg: confluent_kafka.Message) -> None:
        if err is None:
            self.delivered += 1
        else:
            self.errors += 1

    def send(self, topic: str, values: Sequence[bytes], keys: Sequence[bytes], headers: Headers) -> None:
        produce, poll, on_delivery = self.producer.produce, self.producer.poll, self._on_delivery
        for count, (value, key) in enumerate(zip(values, keys, strict=True), start=1):
            while True:
                try:
                    produce(topic, value, key, headers=headers, on_delivery=on_delivery)
                    break
                except BufferError:
                    poll(0.05)  # local queue full: serve delivery reports until there is room
            if count % 1000 == 0:
                poll(0)
        self.producer.flush()


def time_sdk(client: Client, topic: str, records: list[dict[str, Any]]) -> Timing:
    watch = Stopwatch()
    report = client.produce(topic, records, schema="event")
    client.flush()
    timing = watch.stop()
    if report.produced != len(records) or report.rejected:
        raise RuntimeError(f"SDK produced {report.produced} of {len(records)}: {report.rejected[:3]}")
    return timing


def time_raw(raw: RawProducer, topic: str, values: list[bytes], keys: list[bytes], headers: Headers) -> Timing:
    before = raw.delivered
    watch = Stopwatch()
    raw.send(topic, values, keys, headers)
    timing = watch.stop()
    if raw.errors or raw.delivered - before != len(values):
        raise RuntimeError(f"raw producer: {raw.delivered - before} delivered, {raw.errors} errors")
    return timing


def encoded(records: list[dict[str, Any]]) -> tuple[list[bytes], list[bytes]]:
    """The exact values and keys the SDK sends for these records."""
    codec = codec_for(Event)
    batch = codec.validate_batch(records)
    return [codec.encode(r) for r in batch.records], [r.key() for r in batch.records]


def bench_produce(
    client: Client, raw: RawProducer, label: str, records: list[dict[str, Any]], rounds: int
) -> tuple[Runs, Runs]:
    values, keys = encoded(records)
    headers: Headers = [codec_for(Event).header]
    topic = fresh_topic(client, f"produce-{label}")
    size = sum(map(len, values))
    sdk, rawr = Runs(len(records), size), Runs(len(records), size)
    # Warm both: connections, metadata, the idempotent producer id, the SDK's topic check.
    time_sdk(client, topic, records[:WARMUP_RECORDS])
    time_raw(raw, topic, values[:WARMUP_RECORDS], keys[:WARMUP_RECORDS], headers)
    alternate(
        rounds,
        f"produce {label}",
        sdk,
        lambda: sdk.timings.append(time_sdk(client, topic, records)),
        rawr,
        lambda: rawr.timings.append(time_raw(raw, topic, values, keys, headers)),
    )
    return sdk, rawr


# -- subscribe ---------------------------------------------------------------------------


def time_raw_consume(client: Client, topic: str, count: int, sink: IO[bytes], runs: Runs) -> None:
    config = {
        **client.settings.kafka.consumer_config(f"bench-raw-{uuid.uuid4().hex[:12]}"),
        "auto.offset.reset": "earliest",
    }
    write, flush = sink.write, sink.flush
    started = time.perf_counter()
    consumer = confluent_kafka.Consumer(config)
    consumer.subscribe([topic])
    watch: Stopwatch | None = None
    seen = 0
    try:
        while seen < count:
            batch = consumer.consume(CONSUME_BATCH, 1.0)
            if not batch:
                if time.perf_counter() - started > IDLE_LIMIT_S:
                    raise RuntimeError(f"raw consumer read {seen} of {count} records")
                continue
            if watch is None:
                runs.joins.append(time.perf_counter() - started)
                watch = Stopwatch()
            for message in batch:
                if message.error() is not None:
                    raise RuntimeError(f"raw consumer: {message.error()}")
                write(message.value() or b"null")
                write(b"\n")
            seen += len(batch)
            flush()
        consumer.commit(offsets=consumer.position(consumer.assignment()), asynchronous=False)
    finally:
        consumer.close()
    assert watch is not None
    runs.timings.append(watch.stop())


def time_subscribe(client: Client, topic: str, count: int, sink: IO[bytes], runs: Runs | None) -> None:
    # The loop of `inferstream subscribe` (cli/subscribe.py), with the sink for stdout.
    write, flush = sink.write, sink.flush
    started = time.perf_counter()
    subscription = client.subscribe(
        topic, from_beginning=True, max_records=count, idle_timeout=IDLE_LIMIT_S, decode=False
    )
    watch: Stopwatch | None = None
    join_s = 0.0
    seen = 0
    with subscription:
        for batch in subscription.raw():
            if watch is None:
                join_s = time.perf_counter() - started
                watch = Stopwatch()
            for message in batch:
                value = message.value() or b"null"
                write(value if isinstance(value, bytes) else value.encode())
                write(b"\n")
            seen += len(batch)
            flush()
    timing = watch.stop() if watch is not None else None
    if seen != count or timing is None:
        raise RuntimeError(f"subscribe read {seen} of {count} records")
    if runs is not None:
        runs.joins.append(join_s)
        runs.timings.append(timing)


def bench_subscribe(client: Client, raw: RawProducer, records: list[dict[str, Any]], rounds: int) -> tuple[Runs, Runs]:
    values, keys = encoded(records)
    topic = fresh_topic(client, "subscribe")
    time_raw(raw, topic, values, keys, [codec_for(Event).header])
    size = sum(map(len, values))
    sdk, rawr = Runs(len(values), size), Runs(len(values), size)
    with open(os.devnull, "wb") as sink:  # buffered, like sys.stdout.buffer
        # Warm the group coordinator (the first group of a fresh broker creates __consumer_offsets).
        time_subscribe(client, topic, WARMUP_RECORDS, sink, None)
        alternate(
            rounds,
            "subscribe",
            sdk,
            lambda: time_subscribe(client, topic, len(values), sink, sdk),
            rawr,
            lambda: time_raw_consume(client, topic, len(values), sink, rawr),
        )
    return sdk, rawr


# -- profile -----------------------------------------------------------------------------


def profile_sdk(client: Client, records: list[dict[str, Any]], path: str) -> None:
    topic = fresh_topic(client, "profile")
    time_sdk(client, topic, records[:WARMUP_RECORDS])
    profiler = cProfile.Profile()
    profiler.enable()
    time_sdk(client, topic, records)
    profiler.disable()
    profiler.dump_stats(path)
    print(f"cProfile of Client.produce, {len(records):,} records of 200 B (saved to {path})")
    stats = pstats.Stats(profiler)
    stats.sort_stats("tottime").print_stats(15)
    stats.sort_stats("cumulative").print_stats(20)


# -- main --------------------------------------------------------------------------------


@dataclass
class Results:
    produce: dict[str, tuple[Runs, Runs]]
    subscribe: tuple[Runs, Runs]


def measure(bootstrap: str, data: dict[str, list[dict[str, Any]]], rounds: int, profile: str | None) -> Results:
    # Every client is closed when this returns, before the broker stops.
    with bench_client(bootstrap) as client:
        raw = RawProducer(client.settings.kafka.producer_config())
        try:
            produce = {label: bench_produce(client, raw, label, data[label], rounds) for label in SIZES}
            subscribe = bench_subscribe(client, raw, data["200b"], rounds)
            if profile:
                profile_sdk(client, data["200b"], profile)
        finally:
            raw.producer.flush()
    return Results(produce=produce, subscribe=subscribe)


def report(results: Results, *, quick: bool, rounds: int) -> dict[str, float]:
    console = Console()
    if not console.is_terminal:
        console.width = 140
    load = os.getloadavg()[0]
    mode = "quick" if quick else "full"
    title = f"SDK vs raw confluent-kafka ({mode}, best of {rounds}; load {load:.1f} on {os.cpu_count()} CPUs)"
    table = Table(title=title)
    columns = ("case", "path", "records", "best s", "median +", "records/s", "MB/s", "CPU µs/rec", "SDK/raw", "goal")
    for column in columns:
        table.add_column(column, justify="left" if column in ("case", "path", "goal") else "right")
    metrics: dict[str, float] = {}
    for label, (sdk, rawr) in results.produce.items():
        ratio = sdk.rps / rawr.rps
        goal = f"≥ {GOALS[label]}: " + ("[green]met[/]" if ratio >= GOALS[label] else "[red]NOT met[/]")
        table.add_row(f"produce {label}", "Client.produce", *sdk.cells(), f"{ratio:.3f}", goal)
        table.add_row(f"produce {label}", "raw Producer", *rawr.cells(), "", "")
        metrics |= {f"sdk_{label}_rps": sdk.rps, f"raw_{label}_rps": rawr.rps, f"ratio_{label}": ratio}
    sub, raw_sub = results.subscribe
    ratio_sub = sub.rps / raw_sub.rps
    sub_path = f"subscribe (CLI loop), join {statistics.median(sub.joins):.2f}s"
    table.add_row("subscribe 200b", sub_path, *sub.cells(), f"{ratio_sub:.3f}", "")
    raw_path = f"raw Consumer, join {statistics.median(raw_sub.joins):.2f}s"
    table.add_row("subscribe 200b", raw_path, *raw_sub.cells(), "", "")
    metrics |= {"subscribe_rps": sub.rps, "raw_consume_rps": raw_sub.rps, "ratio_subscribe": ratio_sub}
    console.print(table)
    console.print(
        "Best round; 'median +': how much slower the median round was; MB/s of value bytes (10^6); CPU µs/rec: "
        "the calling thread's CPU time per record (Python side; librdkafka threads and the broker not counted). "
        "Subscribe: from the first batch to the final commit and close (the group join is shown apart)."
    )
    return metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser)
    parser.add_argument("--rounds", type=int, default=3, help="Rounds per comparison, order alternating (default 3).")
    parser.add_argument("--profile", metavar="PATH", help="Also cProfile one SDK produce run at 200 B into PATH.")
    args = parser.parse_args()
    quick: bool = args.quick
    rounds: int = args.rounds
    counts = {"200b": 50_000, "2kb": 10_000} if quick else {"200b": 300_000, "2kb": 50_000}
    data = {label: events(counts[label], size) for label, size in SIZES.items()}
    with broker(args.bootstrap_servers) as bootstrap:
        results = measure(bootstrap, data, rounds, args.profile)
    metrics = report(results, quick=quick, rounds=rounds)
    print(result_line(metrics), flush=True)


if __name__ == "__main__":
    main()
