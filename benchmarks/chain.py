"""A model chain (minilm → text-topic) through Kafka against its first step, the embedder, alone.

The same texts (the demo's topic template sentences) are put on the request topics
first; then, same broker, same run:

- embedder alone: ``InferenceWorker`` for minilm:1 (embedding requests → embeddings);
- chain: ``ChainRunner`` for topic-of-text:1, both steps in this process (requests →
  step 1 embeds and writes the next step's requests → step 2 classifies → predictions).

Each is timed from its first model batch until the last output is acknowledged
(every request served). The embedder does nearly all the compute of the chain, so
the ratio shows what the second hop costs: one more topic, one more decode of a
384-d vector per request, and the classifier.

    .venv/bin/python benchmarks/chain.py --quick
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.table import Table

from _harness import add_common_args, bench_client, broker, note, result_line
from inferstream.client import Client
from inferstream.serving.chain import ChainRunner
from inferstream.serving.chain_link import ensure_chain_topics
from inferstream.serving.demo_models import CHAIN_NAME, EMBEDDER_NAME, build_demo_models, topic_sentences
from inferstream.serving.repository import ModelRepository
from inferstream.serving.worker import InferenceWorker


def _timed(
    run: Callable[[], object],
    stop: Callable[[], None],
    started: Callable[[], bool],
    done: Callable[[], bool],
    what: str,
) -> float:
    """Seconds from ``started()`` to ``done()`` while ``run`` serves in a thread; then ``stop()`` and wait for it."""
    failures: list[BaseException] = []

    def serve() -> None:
        try:
            run()
        except BaseException as exc:  # reported below
            failures.append(exc)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    begin: float | None = None
    deadline = time.monotonic() + 600
    while not done():
        if failures or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not finish: {failures[0] if failures else 'timed out'}")
        if begin is None and started():
            begin = time.perf_counter()
        time.sleep(0.002)
    assert begin is not None
    seconds = time.perf_counter() - begin
    stop()
    thread.join(120)
    return seconds


def embedder_alone(client: Client, models: Path, texts: list[str]) -> tuple[float, float]:
    """Texts/s of the embedder by itself, and its mean batch size."""
    settings = client.settings.model_copy(update={"models_dir": models})
    version = ModelRepository(models).get(EMBEDDER_NAME, "1")
    requests = [
        {"request_id": f"e{i}", "model": EMBEDDER_NAME, "version": "1", "document_id": f"d{i}", "text": text}
        for i, text in enumerate(texts)
    ]
    client.topics.ensure_request_topic(EMBEDDER_NAME, "1")
    client.produce(settings.topics.request_topic(EMBEDDER_NAME, "1"), requests, schema="embedding-request")
    worker = InferenceWorker(settings, version)
    seconds = _timed(
        worker.run,
        worker.stop,
        lambda: worker.stats.batches > 0,
        lambda: worker.stats.requests >= len(texts),
        "the embedder",
    )
    return len(texts) / seconds, worker.stats.mean_batch_size


def chain(client: Client, models: Path, texts: list[str]) -> tuple[float, float]:
    """Texts/s through the whole chain (its predictions acknowledged), and its embedder step's mean batch size."""
    settings = client.settings.model_copy(update={"models_dir": models})
    version = ModelRepository(models).get_chain(CHAIN_NAME, "1")
    ensure_chain_topics(settings, version)
    requests = [
        {"request_id": f"c{i}", "model": CHAIN_NAME, "version": "1", "inputs": {"text": text}}
        for i, text in enumerate(texts)
    ]
    client.produce(settings.topics.request_topic(CHAIN_NAME, "1"), requests)
    runner = ChainRunner(settings, version)
    first, last = runner.workers[0], runner.workers[-1]
    seconds = _timed(
        runner.run,
        runner.stop,
        lambda: first.stats.batches > 0,
        lambda: last.stats.requests >= len(texts) and not last.failure,
        "the chain",
    )
    return len(texts) / seconds, first.stats.mean_batch_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser)
    args = parser.parse_args()
    per_topic = 200 if args.quick else 1500
    texts = [text for text, _ in topic_sentences(per_topic, seed=11)]
    with tempfile.TemporaryDirectory(prefix="inferstream-models-") as root, broker(args.bootstrap_servers) as servers:
        models = Path(root)
        note("building the demo models ...")
        build_demo_models(models)
        with bench_client(servers) as client:
            client.topics.ensure_platform_topics()
            note(f"embedder alone on {len(texts)} texts ...")
            alone_rps, alone_batch = embedder_alone(client, models, texts)
            note(f"chain {CHAIN_NAME}:1 on the same {len(texts)} texts ...")
            chain_rps, chain_batch = chain(client, models, texts)
    ratio = chain_rps / alone_rps
    table = Table(title=f"chain {CHAIN_NAME}:1 against {EMBEDDER_NAME}:1 alone ({'quick' if args.quick else 'full'})")
    for column in ("path", "texts", "texts/s", "mean batch", "ratio"):
        table.add_column(column, justify="right")
    table.add_row(f"{EMBEDDER_NAME}:1 alone", str(len(texts)), f"{alone_rps:,.0f}", f"{alone_batch:.1f}", "")
    table.add_row(
        f"{CHAIN_NAME}:1 (2 steps)", str(len(texts)), f"{chain_rps:,.0f}", f"{chain_batch:.1f}", f"{ratio:.2f}"
    )
    Console().print(table)
    print(result_line({"chain_rps": chain_rps, "embedder_rps": alone_rps, "ratio_chain": ratio}))


if __name__ == "__main__":
    main()
