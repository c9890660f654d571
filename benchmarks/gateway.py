"""The HTTP gateway against calling the SDK directly, same broker, same worker, same run.

Predict: the demo classifier served by ``inferstream serve`` (a process of its own).
The baseline is ``Client.predict()`` from this process with C threads; the gateway
path is ``POST /v1/models/breast-cancer:1/predict`` from C threads (httpx, kept-alive
connections) to ``inferstream gateway`` (a process of its own, so the HTTP client
and the server do not share an interpreter). p50/p99 latency and throughput of each,
and the ratio gateway/direct. The direct, HTTP and OIP calls take turns in rounds, so
that load from elsewhere on the machine weighs on each alike.

Stream: one client reads ``GET /v1/predictions/stream`` while predictions are
produced to the predictions topic as fast as the SDK goes; the delivery rate (from
the first produced to the last received) against the produce rate (from the first
produced to the last acknowledged).

OpenAI embeddings: ``POST /v1/embeddings`` with B texts a request (base64, as the
``openai`` client asks) to the demo embedder served by ``inferstream serve``, in
texts/s, against ``Client.embed()`` of one text a call from C threads (C texts in
flight either way). OIP infer: ``tritonclient.http`` (the protocol's own client, one
a thread, its defaults: tensors as bytes after the JSON) calling
``/v2/models/breast-cancer/versions/1/infer`` with one row a request from C threads,
against ``Client.predict()`` above (``ratio_oip``); and with R rows a request, in
rows/s (``ratio_oip_rows``: what batching a request buys).

    .venv/bin/python benchmarks/gateway.py --quick
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import tritonclient.http as triton
from rich.console import Console
from rich.table import Table

from _harness import add_common_args, bench_client, broker, note, result_line
from _records import fitting_texts
from inferstream.client import Client
from inferstream.config import Settings
from inferstream.demo import sample_texts
from inferstream.serving.demo_models import EMBEDDER_NAME, TABULAR_NAME, build_demo_models, tabular_rows


def _env(settings: Settings, models: Path) -> dict[str, str]:
    return {
        **os.environ,
        "INFERSTREAM_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "INFERSTREAM_TOPICS__PREFIX": settings.topics.prefix,
        "INFERSTREAM_MODELS_DIR": str(models),
    }


@contextmanager
def process(args: list[str], env: dict[str, str], ready: Callable[[], bool]) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``inferstream ARGS`` until the block ends; waits until ``ready()``."""
    child = subprocess.Popen([sys.executable, "-m", "inferstream", *args], env=env)
    try:
        deadline = time.monotonic() + 120
        while not ready():
            if child.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"`inferstream {' '.join(args)}` did not start")
            time.sleep(0.2)
        yield child
    finally:
        child.terminate()
        child.wait(60)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def timed(call: Callable[[int], None], count: int, threads: int) -> tuple[float, np.ndarray]:
    """Seconds for ``count`` calls over ``threads`` threads, and each call's latency in ms."""
    latencies = np.zeros(count)

    def one(i: int) -> None:
        started = time.perf_counter()
        call(i)
        latencies[i] = (time.perf_counter() - started) * 1000

    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, range(count)))
    return time.perf_counter() - started, latencies


#: Direct and gateway calls take turns in this many rounds: a burst of load from elsewhere
#: on a shared machine then weighs on both sides of a ratio alike.
ROUNDS = 3


def _in_turns(calls: list[Callable[[int], None]], count: int, threads: int) -> list[Any]:
    """For each call in turn, ``count`` calls split over :data:`ROUNDS` rounds: seconds and latencies, flat."""
    seconds = [0.0] * len(calls)
    latencies: list[list[np.ndarray]] = [[] for _ in calls]
    share = count // ROUNDS
    for round_ in range(ROUNDS):
        size = count - share * (ROUNDS - 1) if round_ == ROUNDS - 1 else share
        for n, call in enumerate(calls):
            took, ms = timed(call, size, threads)
            seconds[n] += took
            latencies[n].append(ms)
    return [x for n in range(len(calls)) for x in (seconds[n], np.concatenate(latencies[n]))]


#: The stream client, a process of its own (as curl or a browser would be): counts events
#: in the raw bytes and prints the monotonic time (system-wide on Linux) of the last one.
_STREAM_READER = """
import sys, time, httpx
url, count = sys.argv[1], int(sys.argv[2])
marker, seen, tail = b"event: prediction", 0, b""
with httpx.stream("GET", url, timeout=120) as response:
    print("connected", flush=True)
    for chunk in response.iter_raw():
        data = tail + chunk
        seen += data.count(marker)
        tail = data[-(len(marker) - 1):]
        if seen >= count:
            break
print(seen, time.monotonic(), flush=True)
"""


def stream_rate(client: Client, url: str, count: int) -> tuple[float, float]:
    """(predictions/s delivered to one stream client, predictions/s produced).

    The client's producer is warmed first (connected, its idempotent producer id granted,
    the topic's metadata read) with a record sent before the stream client connects: that
    set-up is paid once per producer, and timed it fell on the delivery side's first record.
    """
    now = datetime.now(UTC).isoformat()
    records = [
        {
            "request_id": f"s{i}",
            "event_time": now,
            "model": TABULAR_NAME,
            "version": "1",
            "inputs": {"x": i},
            "outputs": {"label": "benign", "probabilities": {"benign": 0.9, "malignant": 0.1}},
            "latency": {"queue_ms": 0.1, "compute_ms": 0.2, "total_ms": 0.5},
        }
        for i in range(count)
    ]
    client.produce("predictions", [{**records[0], "request_id": "warm-up"}])
    client.flush()
    reader = subprocess.Popen(
        [sys.executable, "-c", _STREAM_READER, f"{url}/v1/predictions/stream", str(count)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert reader.stdout is not None
    if reader.stdout.readline().strip() != "connected":  # headers come after the fan-out took the subscriber
        raise RuntimeError("the stream client did not connect")
    started = time.monotonic()
    client.produce("predictions", records)
    produced_s = time.monotonic() - started
    try:
        out, _ = reader.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        reader.kill()
        raise RuntimeError(f"the stream client did not get {count} predictions in 300 s") from None
    seen, last = out.split()
    if int(seen) < count:
        raise RuntimeError(f"the stream client got {seen} of {count} predictions")
    # Both from the first record produced: to the last one received, and to the last one acknowledged.
    return count / (float(last) - started), count / produced_s


class _TritonClients:
    """One ``tritonclient.http`` client a thread (it is not thread-safe), with its default binary tensors."""

    def __init__(self, url: str) -> None:
        self.url = url.removeprefix("http://")
        self.local = threading.local()

    def infer(self, features: np.ndarray) -> None:
        client = getattr(self.local, "client", None)
        if client is None:
            client = self.local.client = triton.InferenceServerClient(url=self.url, network_timeout=60)
        tensor = triton.InferInput("input", list(features.shape), "FP32")
        tensor.set_data_from_numpy(features)
        result = client.infer(TABULAR_NAME, [tensor], model_version="1")
        assert result.as_numpy("label").shape == (len(features),)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser)
    args = parser.parse_args()
    count = 300 if args.quick else 3000
    threads = 8 if args.quick else 16
    stream_count = 20_000 if args.quick else 100_000
    texts_count, texts_per_request = (64, 8) if args.quick else (640, 16)
    rows_per_request = 16
    rows, _ = tabular_rows()
    embedder = f"{EMBEDDER_NAME}:1"
    with tempfile.TemporaryDirectory(prefix="inferstream-models-") as models, broker(args.bootstrap_servers) as servers:
        build_demo_models(Path(models))
        texts = fitting_texts(sample_texts(), Path(models) / EMBEDDER_NAME / "1", texts_count)
        with bench_client(servers) as client:
            settings = client.settings
            client.topics.ensure_platform_topics()
            client.topics.ensure_request_topic(TABULAR_NAME, "1")
            env = _env(settings, Path(models))
            port = _free_port()
            url = f"http://127.0.0.1:{port}"

            def answers() -> bool:
                try:
                    client.predict(f"{TABULAR_NAME}:1", rows[0], timeout=2)
                    return True
                except Exception:
                    return False

            def embeds() -> bool:
                try:
                    client.embed(embedder, "ready?", timeout=5)
                    return True
                except Exception:
                    return False

            def healthy() -> bool:
                try:
                    return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
                except httpx.HTTPError:
                    return False

            note("starting a worker and the gateway ...")
            with (
                process(["serve", "--model", f"{TABULAR_NAME}:1"], env, answers),
                process(["serve", "--model", embedder], env, embeds),
                process(["gateway", "--port", str(port)], env, healthy),
                httpx.Client(base_url=url, timeout=30, limits=httpx.Limits(max_connections=threads)) as http,
            ):
                path = f"/v1/models/{TABULAR_NAME}:1/predict"

                def direct(i: int) -> None:
                    client.predict(f"{TABULAR_NAME}:1", rows[i % len(rows)], timeout=30)

                def over_http(i: int) -> None:
                    response = http.post(path, json={"inputs": rows[i % len(rows)]})
                    response.raise_for_status()

                oip = _TritonClients(url)
                features = np.asarray([list(row.values()) for row in rows], dtype=np.float32)

                def infer(i: int) -> None:
                    at = (i * rows_per_request) % (len(features) - rows_per_request)
                    oip.infer(features[at : at + rows_per_request])

                def infer_one(i: int) -> None:
                    at = i % len(features)
                    oip.infer(features[at : at + 1])

                note(
                    f"warming up, then {count} predictions each way with {threads} threads "
                    f"(direct, HTTP and OIP infer taking turns, {ROUNDS} rounds) ..."
                )
                for call in (direct, over_http, infer_one):
                    timed(call, threads * 4, threads)
                direct_s, direct_ms, http_s, http_ms, infer_one_s, infer_one_ms = _in_turns(
                    [direct, over_http, infer_one], count, threads
                )
                note(f"OIP infer: {count} rows in requests of {rows_per_request} ...")
                timed(infer, threads, threads)
                infer_s, _ = timed(infer, count // rows_per_request, threads)
                oip_rows = (count // rows_per_request) * rows_per_request

                note(f"embeddings: {texts_count} texts each way, {texts_per_request} a request over HTTP ...")

                def embed_direct(i: int) -> None:
                    client.embed(embedder, texts[i % len(texts)], timeout=120)

                def embed_openai(i: int) -> None:
                    batch = texts[i * texts_per_request : (i + 1) * texts_per_request]
                    body = {"model": embedder, "input": batch, "encoding_format": "base64"}
                    http.post("/v1/embeddings", json=body, timeout=120).raise_for_status()

                timed(embed_direct, threads, threads)
                timed(embed_openai, 2, 2)
                embed_s, _ = timed(embed_direct, texts_count, threads)
                requests = texts_count // texts_per_request
                # As many texts in flight as the direct calls have.
                openai_s, _ = timed(embed_openai, requests, max(1, threads // texts_per_request))
                note(f"stream: {stream_count} predictions produced, read by one SSE client ...")
                delivered, produced = stream_rate(client, url, stream_count)
    d50, d99 = np.percentile(direct_ms, [50, 99])
    h50, h99 = np.percentile(http_ms, [50, 99])
    direct_rps, http_rps = count / direct_s, count / http_s
    table = Table(title=f"gateway predict, {threads} threads ({'quick' if args.quick else 'full'})")
    for column in ("path", "requests", "p50 ms", "p99 ms", "requests/s", "ratio"):
        table.add_column(column, justify="right")
    table.add_row("Client.predict()", str(count), f"{d50:.1f}", f"{d99:.1f}", f"{direct_rps:,.0f}", "")
    table.add_row(
        "HTTP gateway", str(count), f"{h50:.1f}", f"{h99:.1f}", f"{http_rps:,.0f}", f"{http_rps / direct_rps:.2f}"
    )
    o50, o99 = np.percentile(infer_one_ms, [50, 99])
    oip_rps = count / infer_one_s
    table.add_row(
        "OIP infer, one row a request",
        str(count),
        f"{o50:.1f}",
        f"{o99:.1f}",
        f"{oip_rps:,.0f}",
        f"{oip_rps / direct_rps:.2f}",
    )
    table.add_row(
        f"OIP infer, {rows_per_request} rows a request",
        f"{oip_rows} rows",
        "",
        "",
        f"{oip_rows / infer_s:,.0f}",
        f"{oip_rows / infer_s / direct_rps:.2f}",
    )
    Console().print(table)
    direct_embed, openai_embed = texts_count / embed_s, requests * texts_per_request / openai_s
    print(
        f"embeddings: Client.embed() {direct_embed:,.1f} texts/s, OpenAI /v1/embeddings ({texts_per_request} a "
        f"request) {openai_embed:,.1f} texts/s (ratio {openai_embed / direct_embed:.2f})"
    )
    print(
        f"stream: {delivered:,.0f} predictions/s delivered to one SSE client, produced at {produced:,.0f}/s "
        f"(ratio {delivered / produced:.2f})"
    )
    print(
        result_line(
            {
                "http_rps": http_rps,
                "direct_rps": direct_rps,
                "ratio_rps": http_rps / direct_rps,
                "http_p50_ms": float(h50),
                "http_p99_ms": float(h99),
                "direct_p50_ms": float(d50),
                "direct_p99_ms": float(d99),
                "sse_delivered_per_s": delivered,
                "sse_produced_per_s": produced,
                "ratio_sse": delivered / produced,
                "oip_infer_rps": oip_rps,
                "ratio_oip": oip_rps / direct_rps,
                "oip_p99_ms": float(o99),
                "oip_rows_per_s": oip_rows / infer_s,
                "ratio_oip_rows": oip_rows / infer_s / direct_rps,
                "openai_embed_texts_per_s": openai_embed,
                "direct_embed_texts_per_s": direct_embed,
                "ratio_openai_embed": openai_embed / direct_embed,
            }
        )
    )


if __name__ == "__main__":
    main()
