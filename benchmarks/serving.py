"""The inference worker end to end through Kafka against a raw consume→produce passthrough.

Tabular model (the demo's breast-cancer classifier): N requests already on the
request topic; the pipeline is ``InferenceWorker`` (decode, validate, batch, ONNX,
predictions produced and acknowledged, offsets stored); the baseline is a raw
confluent-kafka loop that consumes the same records and produces their bytes
unchanged to another topic (acknowledged), same broker, same run. Between them, a
lean Python loop (orjson parse, ONNX Runtime, orjson encode, produce; no validation)
shows the least any Python reader of these JSON records costs on this machine. All
are timed from the start of consuming until the last output is acknowledged.

Then the latency at 50% of the measured capacity: requests produced at that rate
(event time = send time), p50/p99 of the end-to-end latency and of the part the
platform adds (total − compute), and the mean batch size under load.

Columnar requests: 256-row Arrow records (one ``inference-batch-request`` each, the
columns the model's features) through the worker, which answers each with one
``prediction-batch`` record, against a raw consume→produce passthrough of the same
records in the same run; both counted in rows (``ratio_columnar``).

Observability: the worker on requests that each carry a ``traceparent``, with metrics
and tracing off, then with its metrics exported on a port (scraped every second:
``ratio_metrics_on``), then with tracing on (a span per batch, sampling 1.0:
``ratio_tracing_on``), each against the off run of the same run: three interleaved
rounds, each starting with the next mode, the best run of each.

Embedder (minilm:1): raw ONNX Runtime in this process (tokenise, run, pool) at its
best batch size, texts in arrival order and sorted by length, against the same
texts through Kafka (embedding requests produced → the worker → embeddings
acknowledged). The goal's ratio is against raw at its best batch size in arrival
order; the ratio against raw on the whole input sorted by length and cut as the
model's batching says (``max_batch_size``, ``max_batch_tokens``: which no stream can
do, it sees a window, not the whole input) is printed too.

    .venv/bin/python benchmarks/serving.py --quick
    .venv/bin/python benchmarks/serving.py --gpu    # on a CUDA machine with the gpu extra

``--gpu`` pins the models to the CUDA provider with CPU fallback off, so the run
fails at once (naming the provider) where there is no GPU instead of measuring
the CPU by mistake.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import confluent_kafka
import numpy as np
import orjson
from rich.console import Console
from rich.table import Table

from _harness import add_common_args, bench_client, broker, fresh_topic, note, result_line
from _records import fitting_texts
from inferstream.client import Client
from inferstream.runtime import settle
from inferstream.schemas import Prediction
from inferstream.schemas.codec import codec_for
from inferstream.schemas.columnar import headers_for, write_arrow
from inferstream.schemas.records import InferenceBatchRequest, InferenceRequest
from inferstream.serving.demo_models import TABULAR_NAME, build_demo_models, tabular_rows
from inferstream.serving.onnx import OnnxModel
from inferstream.serving.repository import ModelRepository
from inferstream.serving.worker import InferenceWorker, WorkerOptions


def _requests(count: int, start: int = 0) -> list[dict[str, Any]]:
    rows, _ = tabular_rows()
    return [
        {"request_id": f"r{i}", "model": TABULAR_NAME, "version": "1", "inputs": rows[i % len(rows)]}
        for i in range(start, start + count)
    ]


def raw_passthrough(client: Client, source: str, target: str, count: int) -> float:
    """Seconds for a raw consumer→producer loop to copy ``count`` records (acknowledged)."""
    settings = client.settings
    consumer = confluent_kafka.Consumer(
        {
            **settings.kafka.consumer_config(f"raw-{source}"),
            "auto.offset.reset": "earliest",
            "enable.auto.offset.store": True,  # a raw loop: commit what was read, at the end
        }
    )
    producer = confluent_kafka.Producer(settings.kafka.producer_config())
    consumer.subscribe([source])
    copied = 0
    started = 0.0
    while copied < count:
        first = consumer.poll(1.0)
        if first is None:
            continue
        if not started:
            started = time.perf_counter()
        for message in [first, *consumer.consume(499, 0)]:
            if message.error() is not None:
                continue
            while True:
                try:
                    producer.produce(target, message.value(), message.key(), headers=message.headers())
                    break
                except BufferError:
                    producer.poll(0.05)
            copied += 1
        producer.poll(0)
    producer.flush()
    consumer.commit(asynchronous=False)
    elapsed = time.perf_counter() - started
    consumer.close()
    return elapsed


def lean_loop(client: Client, source: str, target: str, count: int, version: Any) -> float:
    """Seconds for the leanest Python consumer that reads the records: parse, run, encode, produce.

    orjson parse, one feature matrix per fetch, ONNX Runtime, orjson encode of a
    prediction-shaped record, produce; no validation, no dead letters, no ordering
    of acknowledgements. What any Python worker of JSON records costs at least here.
    """
    model = OnnxModel(version).load()
    features = version.config.preprocessing.features
    labels = version.config.outputs.labels
    consumer = confluent_kafka.Consumer(
        {**client.settings.kafka.consumer_config(f"lean-{source}"), "auto.offset.reset": "earliest"}
    )
    producer = confluent_kafka.Producer({**client.settings.kafka.producer_config(), "linger.ms": 1})
    consumer.subscribe([source])
    done, started = 0, 0.0
    while done < count:
        messages = consumer.consume(500, 1.0)
        if not messages:
            continue
        started = started or time.perf_counter()
        records = [orjson.loads(message.value() or b"{}") for message in messages]
        matrix = np.asarray([[r["inputs"][name] for name in features] for r in records], dtype=np.float32)
        outputs = model.run({version.config.inputs[0].name: matrix})
        probabilities = np.asarray(outputs["probabilities"], dtype=np.float64).round(6).tolist()
        now = datetime.now(UTC).isoformat()
        for record, label, row in zip(records, outputs["label"].tolist(), probabilities, strict=True):
            value = orjson.dumps(
                {
                    "request_id": record["request_id"],
                    "event_time": record["event_time"],
                    "inputs": record["inputs"],
                    "outputs": {"label": labels[label], "probabilities": dict(zip(labels, row, strict=True))},
                    "predicted_at": now,
                }
            )
            while True:
                try:
                    producer.produce(target, value, record["request_id"].encode())
                    break
                except BufferError:
                    producer.poll(0.05)
        done += len(messages)
        producer.poll(0)
    producer.flush()
    elapsed = time.perf_counter() - started
    consumer.close()
    return elapsed


def pipeline(client: Client, worker: InferenceWorker, count: int) -> float:
    """Seconds from the worker's first request to ``count`` served (outputs acknowledged)."""
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    worker.ready.wait(60)
    started = None
    deadline = time.monotonic() + 300
    while worker.stats.requests < count:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError(f"the worker served {worker.stats.requests} of {count} requests: {worker.failure}")
        if started is None and worker.stats.batches:
            started = time.perf_counter()
        time.sleep(0.002)
    assert started is not None
    return time.perf_counter() - started


def exactly_once(client: Client, settings: Any, version: Any, count: int) -> tuple[float, float]:
    """Records/s of the worker without and with ``--exactly-once``, each on its own copy of the requests."""
    rates = []
    for eos in (False, True):
        topics = settings.topics.model_copy(update={"prefix": f"{settings.topics.prefix}eos{int(eos)}."})
        own = settings.model_copy(update={"topics": topics})
        with Client(own) as eos_client:
            eos_client.topics.ensure_platform_topics()
            eos_client.topics.ensure_request_topic(TABULAR_NAME, "1")
            eos_client.produce(own.topics.request_topic(TABULAR_NAME, "1"), _requests(count))
        worker = InferenceWorker(own, version, options=WorkerOptions(exactly_once=eos))
        rates.append(count / pipeline(client, worker, count))
        worker.stop()
    return rates[0], rates[1]


def observed(client: Client, settings: Any, version: Any, count: int, rounds: int) -> tuple[float, float, float]:
    """Records/s of the worker with metrics and tracing off, with metrics exported, and with tracing on.

    ``rounds`` rounds of the three, interleaved; the best run of each.
    Each on its own copy of the same requests, each request carrying a ``traceparent`` of its
    own trace (as the SDK and the gateway send them). Metrics on: the worker's registry served on
    a port, scraped every second meanwhile. Tracing on: spans for every batch (sampling 1.0)
    through OpenTelemetry's batching processor to an exporter that drops them (no collector: the
    export's network cost is the collector's, not the worker's).
    """
    import urllib.request

    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    from inferstream import tracing
    from inferstream.config import TracingSettings
    from inferstream.metrics import Metrics

    class Dropped(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    codec = codec_for(InferenceRequest)
    requests = [codec.encode(codec.validate(fields)) for fields in _requests(count)]
    rates: dict[str, list[float]] = {"off": [], "metrics": [], "tracing": []}
    # Interleaved rounds, the best of each mode: a machine's passing load touches one run, not a
    # mode. Each round starts with the next mode, so none always runs first (on a fresh broker).
    modes = [*rates]
    for mode in [modes[(r + i) % len(modes)] for r in range(rounds) for i in range(len(modes))]:
        copy = f"obs-{mode}{len(rates[mode])}."
        topics = settings.topics.model_copy(update={"prefix": f"{settings.topics.prefix}{copy}"})
        own = settings.model_copy(update={"topics": topics})
        with Client(own) as own_client:
            own_client.topics.ensure_platform_topics()
            topic = own_client.topics.ensure_request_topic(TABULAR_NAME, "1")
            producer = own_client.producer
            for index, value in enumerate(requests):
                headers = [codec.header, (tracing.TRACEPARENT, tracing.new_trace().header)]
                producer.produce(topic, value, f"r{index}".encode(), headers)
            producer.flush()
        metrics, stop = None, threading.Event()
        if mode == "metrics":
            metrics = Metrics(namespace=own.metrics.namespace)
            url = f"http://127.0.0.1:{metrics.serve(0)}/metrics"

            def scrape(url: str = url, stop: threading.Event = stop) -> None:
                while not stop.wait(1.0):
                    with urllib.request.urlopen(url) as response:
                        response.read()

            threading.Thread(target=scrape, daemon=True).start()
        provider = None
        if mode == "tracing":
            traced = TracingSettings(enabled=True, sample_ratio=1.0)
            provider = tracing.new_provider(traced, "benchmark", Dropped())  # as a process makes it, but the exporter
            tracing.install(provider)
            own = own.model_copy(update={"tracing": traced})
        worker = InferenceWorker(own, version, metrics=metrics)
        try:
            rates[mode].append(count / pipeline(client, worker, count))
        finally:
            worker.stop()
            stop.set()
            if metrics is not None:
                metrics.close()
            if provider is not None:
                tracing.install(None)
                provider.shutdown()
    return max(rates["off"]), max(rates["metrics"]), max(rates["tracing"])


def latency_at(client: Client, worker: InferenceWorker, rate: float, seconds: float, offset: int) -> list[Prediction]:
    """Send requests at ``rate`` per second for ``seconds``; the predictions that came back."""
    total = int(rate * seconds)
    requests = _requests(total, start=offset)
    topic = worker.request_topic
    stream = client.subscribe("predictions", max_records=total, idle_timeout=15)
    collected: list[Prediction] = []

    def collect() -> None:
        collected.extend(
            message.record
            for message in stream
            if isinstance(message.record, Prediction) and int(message.record.request_id[1:]) >= offset
        )

    reader = threading.Thread(target=collect, daemon=True)
    reader.start()
    time.sleep(3)  # the subscription joins before the first request is sent
    interval = 1.0 / rate
    started = time.perf_counter()
    producer = client.producer
    codec_topic = client.topic(topic)
    for i, request in enumerate(requests):
        target = started + i * interval
        delay = target - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        client.produce(codec_topic, [request])
    producer.flush()
    reader.join(60)
    return collected


def columnar(client: Client, settings: Any, version: Any, records: int, rows: int) -> tuple[float, float, float]:
    """Rows/s of ``records`` columnar requests of ``rows`` rows each: raw passthrough, worker; worker's mean batch."""
    import pyarrow as pa

    topics = settings.topics.model_copy(update={"prefix": f"{settings.topics.prefix}col."})
    own = settings.model_copy(update={"topics": topics})
    table_rows, _ = tabular_rows()
    headers = headers_for(InferenceBatchRequest, "arrow")
    request_topic = own.topics.request_topic(TABULAR_NAME, "1")
    source = fresh_topic(client, "columnar-source")
    with Client(own) as own_client:
        own_client.topics.ensure_platform_topics()
        own_client.topics.ensure_request_topic(TABULAR_NAME, "1")
        producer = own_client.producer
        for index in range(records):
            picked = [table_rows[(index * rows + i) % len(table_rows)] for i in range(rows)]
            batch = pa.RecordBatch.from_pylist(picked)
            head = {"request_id": f"c{index}", "model": TABULAR_NAME, "version": "1"}
            value = write_arrow(batch, {**head, "event_time": datetime.now(UTC)})
            for topic in (source, request_topic):
                producer.produce(topic, value, head["request_id"].encode(), headers)
        producer.flush()
    raw_s = raw_passthrough(client, source, fresh_topic(client, "columnar-target"), records)
    worker = InferenceWorker(own, version)
    pipe_s = pipeline(client, worker, records)
    worker.stop()
    if worker.stats.columnar_rows != records * rows:
        raise RuntimeError(f"the worker scored {worker.stats.columnar_rows} rows of {records * rows}")
    return records * rows / raw_s, records * rows / pipe_s, worker.stats.mean_batch_size


def raw_embedder(version: Any, texts: list[str], batch_sizes: tuple[int, ...]) -> tuple[float, int, float]:
    """Best raw texts/s (arrival order) with its batch size, and texts/s sorted by length."""
    from inferstream.schemas import EmbeddingRequest
    from inferstream.serving.onnx import OnnxModel
    from inferstream.serving.text import TextPreprocessor, bucket_by_length, pool

    model = OnnxModel(version).load()
    pre = TextPreprocessor(version.config, version.directory).load()
    spec = version.config.outputs
    requests = [
        EmbeddingRequest(request_id=str(i), model="m", version="1", document_id=str(i), text=t)
        for i, t in enumerate(texts)
    ]

    def run(batches: list[list[EmbeddingRequest]]) -> float:
        started = time.perf_counter()  # tokenisation included, as in the worker
        for batch in batches:
            prepared = pre.prepare(batch)
            hidden = model.run(prepared.feeds)[spec.embedding or ""]
            pool(hidden, prepared.attention_mask, spec.pooling, spec.normalize)
        return len(requests) / (time.perf_counter() - started)

    best, best_size = 0.0, batch_sizes[0]
    for size in batch_sizes:
        rate = run([requests[start : start + size] for start in range(0, len(requests), size)])
        note(f"raw embedder, batch {size}: {rate:.0f} texts/s")
        if rate > best:
            best, best_size = rate, size
    # Sorted: the whole input at once, cut as the model's batching says (max_batch_size and
    # max_batch_tokens, as the worker cuts what it takes), run back to back without Kafka.
    batching = version.config.batching
    lengths = [len(e) for e in pre.encode([r.text for r in requests])]
    buckets = bucket_by_length(lengths, batching.max_batch_size, batching.max_batch_tokens)
    return best, best_size, run([[requests[i] for i in bucket] for bucket in buckets])


def embedder_pipeline(client: Client, settings: Any, version: Any, texts: list[str]) -> tuple[float, float]:
    """Texts/s through Kafka and the worker, and its mean batch size."""
    requests = [
        {"request_id": f"q{i}", "model": version.config.name, "version": "1", "document_id": f"d{i}", "text": t}
        for i, t in enumerate(texts)
    ]
    client.topics.ensure_request_topic(version.config.name, "1")
    client.produce(settings.topics.request_topic(version.config.name, "1"), requests, schema="embedding-request")
    worker = InferenceWorker(settings, version)
    seconds = pipeline(client, worker, len(texts))
    worker.stop()
    return len(texts) / seconds, worker.stats.mean_batch_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser)
    parser.add_argument("--gpu", action="store_true", help="Run the models on CUDA only (no CPU fallback).")
    parser.add_argument(
        "--gc-default", action="store_true", help="Keep Python's default garbage collection (no runtime.settle())."
    )
    args = parser.parse_args()
    count = 20_000 if args.quick else 100_000
    seconds = 4.0 if args.quick else 15.0
    with tempfile.TemporaryDirectory(prefix="inferstream-models-") as models, broker(args.bootstrap_servers) as servers:
        build_demo_models(Path(models))
        if args.gpu:
            for toml in Path(models).glob("*/*/model.toml"):
                text = toml.read_text().replace("allow_cpu_fallback = true", "allow_cpu_fallback = false")
                toml.write_text(
                    text.replace('"CUDAExecutionProvider", "CPUExecutionProvider"', '"CUDAExecutionProvider"')
                )
        version = ModelRepository(Path(models)).resolve(TABULAR_NAME)
        with bench_client(servers) as client:
            settings = client.settings.model_copy(update={"models_dir": Path(models)})
            client.topics.ensure_platform_topics()
            client.topics.ensure_request_topic(TABULAR_NAME, "1")
            source, target = fresh_topic(client, "raw-source"), fresh_topic(client, "raw-target")
            requests = _requests(count)
            note(f"producing {count} requests twice (raw source and request topic) ...")
            client.produce(source, requests, schema="inference-request")
            client.produce(settings.topics.request_topic(TABULAR_NAME, "1"), requests)
            if not args.gc_default:
                settle()  # as `inferstream serve` does before its loop (every path below runs so)
            note("raw consume→produce passthrough ...")
            raw_s = raw_passthrough(client, source, target, count)
            note("lean Python loop (parse, run, encode; no validation) ...")
            lean_s = lean_loop(client, source, fresh_topic(client, "lean-target"), count, version)
            note("inference worker ...")
            worker = InferenceWorker(settings, version)
            pipe_s = pipeline(client, worker, count)
            mean_batch = worker.stats.mean_batch_size
            capacity = count / pipe_s
            rate = min(capacity * 0.5, 2000.0)
            note(f"latency at {rate:.0f} requests/s (50% of capacity, capped at 2000/s for the paced sender) ...")
            predictions = latency_at(client, worker, rate, seconds, offset=count)
            worker.stop()
            note("the same worker with metrics and tracing off, metrics on, tracing on ...")
            off_rps, metrics_rps, tracing_rps = observed(client, settings, version, count, 3)
            note("the same worker without and with --exactly-once ...")
            plain_rps, eos_rps = exactly_once(client, settings, version, count // 2)
            records = 500 if args.quick else 2000
            note(f"columnar: {records} Arrow records of 256 rows, raw passthrough and the worker ...")
            raw_col_rps, col_rps, col_batch = columnar(client, settings, version, records, 256)
            from inferstream.demo import sample_texts
            from inferstream.serving.demo_models import EMBEDDER_NAME

            embedder = ModelRepository(Path(models)).resolve(EMBEDDER_NAME)
            # Texts the embedder takes whole: a longer one is dead-lettered, embedded by neither side.
            texts = fitting_texts(sample_texts() * 10, embedder.directory, 160 if args.quick else 3000)
            note(f"raw ONNX Runtime embedder on {len(texts)} texts ...")
            raw_text_rps, best_size, sorted_rps = raw_embedder(
                embedder, texts, (16, 32) if args.quick else (16, 32, 64)
            )
            note("embedder through Kafka ...")
            text_rps, text_batch = embedder_pipeline(client, settings, embedder, texts)
    total = np.array([p.latency.total_ms for p in predictions])
    added = np.array([p.latency.total_ms - p.latency.compute_ms for p in predictions])
    raw_rps, pipe_rps = count / raw_s, count / pipe_s
    table = Table(title=f"serving {TABULAR_NAME}:1 ({'quick' if args.quick else 'full'})")
    for column in ("path", "records", "seconds", "records/s", "ratio"):
        table.add_column(column, justify="right")
    table.add_row("raw consume→produce", str(count), f"{raw_s:.2f}", f"{raw_rps:,.0f}", "")
    lean_rps = count / lean_s
    table.add_row("lean Python loop", str(count), f"{lean_s:.2f}", f"{lean_rps:,.0f}", f"{lean_rps / raw_rps:.2f}")
    table.add_row("inference worker", str(count), f"{pipe_s:.2f}", f"{pipe_rps:,.0f}", f"{pipe_rps / raw_rps:.2f}")
    Console().print(table)
    p50, p99 = np.percentile(total, [50, 99]) if total.size else (float("nan"),) * 2
    a50, a99 = np.percentile(added, [50, 99]) if added.size else (float("nan"),) * 2
    print(
        f"latency at {rate:.0f}/s over {len(predictions)} requests: total p50 {p50:.1f} ms, p99 {p99:.1f} ms; "
        f"added by the platform p50 {a50:.1f} ms, p99 {a99:.1f} ms "
        f"(goal p99 ≤ 10 ms: {'met' if a99 <= 10 else 'NOT met'})"
    )
    print(
        f"inference worker against the lean Python loop: {pipe_rps / lean_rps:.2f} (what validation, dead letters, "
        "ordered acknowledgements and metrics cost over the least any Python reader of these records does; "
        f"goal ≥ 0.8: {'met' if pipe_rps / lean_rps >= 0.8 else 'NOT met'})"
    )
    print(f"mean batch size under load: {mean_batch:.1f}")
    print(
        f"exactly-once: {eos_rps:,.0f} records/s against {plain_rps:,.0f} without, same run "
        f"(ratio {eos_rps / plain_rps:.2f})"
    )
    ratio_metrics, ratio_tracing = metrics_rps / off_rps, tracing_rps / off_rps
    print(
        f"observability (requests with a traceparent each): {off_rps:,.0f} records/s with metrics and tracing off, "
        f"{metrics_rps:,.0f} with metrics exported (ratio {ratio_metrics:.2f}, goal ≥ 0.95: "
        f"{'met' if ratio_metrics >= 0.95 else 'NOT met'}), {tracing_rps:,.0f} with tracing on "
        f"(ratio {ratio_tracing:.2f}, goal ≥ 0.9: {'met' if ratio_tracing >= 0.9 else 'NOT met'})"
    )
    ratio_columnar = col_rps / raw_col_rps
    print(
        f"columnar (256-row Arrow records): worker {col_rps:,.0f} rows/s, raw passthrough {raw_col_rps:,.0f} rows/s "
        f"(ratio {ratio_columnar:.2f}, goal ≥ 0.5: {'met' if ratio_columnar >= 0.5 else 'NOT met'}); "
        f"mean rows per model run {col_batch:.0f}"
    )
    ratio_text, ratio_sorted = text_rps / raw_text_rps, text_rps / sorted_rps
    print(
        f"embedder: raw ONNX Runtime {raw_text_rps:.0f} texts/s at batch {best_size}, {sorted_rps:.0f}/s with the "
        f"whole input sorted by length; through Kafka {text_rps:.0f} texts/s, mean batch {text_batch:.1f}; "
        f"ratio {ratio_text:.2f} (goal ≥ 0.90: {'met' if ratio_text >= 0.9 else 'NOT met'}), "
        f"{ratio_sorted:.2f} against raw sorted"
    )
    print(
        result_line(
            {
                "tabular_rps": pipe_rps,
                "raw_passthrough_rps": raw_rps,
                "ratio_tabular": pipe_rps / raw_rps,
                "lean_python_rps": lean_rps,
                "ratio_lean_to_raw": lean_rps / raw_rps,
                "ratio_tabular_to_lean": pipe_rps / lean_rps,
                "latency_rate": rate,
                "p50_total_ms": float(p50),
                "p99_total_ms": float(p99),
                "p99_added_ms": float(a99),
                "mean_batch": mean_batch,
                "exactly_once_rps": eos_rps,
                "ratio_exactly_once": eos_rps / plain_rps,
                "embedder_rps": text_rps,
                "raw_embedder_rps": raw_text_rps,
                "raw_sorted_embedder_rps": sorted_rps,
                "ratio_embedder": ratio_text,
                "ratio_embedder_sorted": ratio_sorted,
                "columnar_rows_per_s": col_rps,
                "raw_columnar_rows_per_s": raw_col_rps,
                "ratio_columnar": ratio_columnar,
                "observed_off_rps": off_rps,
                "metrics_on_rps": metrics_rps,
                "tracing_on_rps": tracing_rps,
                "ratio_metrics_on": ratio_metrics,
                "ratio_tracing_on": ratio_tracing,
            }
        )
    )


if __name__ == "__main__":
    main()
