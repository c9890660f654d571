"""The gateway's retrieval and drift-alert routes against the real broker and the embedded vector store."""

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from test_vector_search import pydoc_corpus  # the docs passages, embedded by the real model

from inferstream import Client, Settings
from inferstream.demo import sample_texts
from inferstream.gateway import BackgroundGateway
from inferstream.stack.testing import running_in_thread
from inferstream.streams.index_sink import IndexSink

QUESTION = "what does the assert statement do"  # sample_texts()[0] is about assert statements
CORPUS = 20


def test_retrieve_answers_the_passages_client_retrieve_finds(settings: Settings, models_dir: Path) -> None:
    settings = settings.model_copy(update={"models_dir": models_dir})  # the embedded store (no Elasticsearch)
    with Client(settings) as client:
        client.topics.ensure_platform_topics()
        assert client.produce("embeddings", pydoc_corpus(settings, CORPUS)).produced == CORPUS
    sink = IndexSink(settings)
    with running_in_thread(sink, timeout=120):
        deadline = time.monotonic() + 90
        while not (sink.stats.records == CORPUS and sink.in_flight == 0):
            assert time.monotonic() < deadline, "the corpus was never indexed"
            time.sleep(0.2)
    with BackgroundGateway(settings) as gateway, httpx.Client(base_url=gateway.url, timeout=60) as http:
        answer = http.post("/v1/retrieve", json={"question": QUESTION, "k": 3})
        odd = http.post("/v1/retrieve", json={"question": QUESTION, "k": 4, "filters": {"attributes.part": "odd"}})
        empty = http.post("/v1/retrieve", json={"question": ""})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["question"] == QUESTION
    first = body["passages"][0]
    assert (first["document_id"], first["source"]) == ("doc-0", "pydoc#0")
    assert first["text"] == sample_texts()[0]
    assert first["attributes"] == {"source": "pydoc#0", "part": "even"}
    assert first["score"] > 0
    assert len(body["passages"]) == 3
    with Client(settings) as client:
        direct = client.retrieve(QUESTION, 3)
    assert [p["document_id"] for p in body["passages"]] == [p.document_id for p in direct]
    assert odd.status_code == 200, odd.text
    assert odd.json()["passages"]
    assert all(p["attributes"]["part"] == "odd" for p in odd.json()["passages"])
    assert empty.status_code == 422


def _alert(monitor: str, severity: str, minutes: int, status: str = "drift") -> dict[str, Any]:
    start = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=minutes)
    return {
        "id": f"{monitor}-{minutes}-{status}",
        "event_time": (start + timedelta(minutes=1)).isoformat(),
        "monitor": monitor,
        "model": "breast-cancer",
        "version": "1",
        "window_start": start.isoformat(),
        "window_end": (start + timedelta(minutes=1)).isoformat(),
        "window_count": 500,
        "status": status,
        "dataset_drift": status == "drift",
        "drift_share": 0.6 if severity == "critical" else 0.3,
        "severity": severity,
    }


def test_recent_alerts_and_a_stream_of_new_ones(settings: Settings) -> None:
    with Client(settings) as client:
        client.topics.ensure_platform_topics()
        old = [_alert("m1", "warning", 1), _alert("m1", "critical", 2), _alert("m2", "critical", 3)]
        # A replayed window: the same alert twice.
        assert client.produce("drift-alerts", [*old, _alert("m1", "critical", 2)]).produced == 4
    with BackgroundGateway(settings) as gateway, httpx.Client(base_url=gateway.url, timeout=60) as http:
        everything = http.get("/v1/alerts").json()["alerts"]
        m1 = http.get("/v1/alerts", params={"monitor": "m1"}).json()["alerts"]
        critical = http.get("/v1/alerts", params=[("severity", "critical")]).json()["alerts"]
        last = http.get("/v1/alerts", params={"limit": 1}).json()["alerts"]
        bad = http.get("/v1/alerts", params={"severity": "loud"})

        received: list[dict[str, Any]] = []
        connected = threading.Event()

        def read() -> None:
            params = {"monitor": "m1", "severity": "critical"}
            with httpx.stream("GET", f"{gateway.url}/v1/alerts/stream", params=params, timeout=60) as response:
                assert response.status_code == 200
                connected.set()
                for line in response.iter_lines():
                    if line.startswith("data: "):
                        received.append(json.loads(line.removeprefix("data: ")))
                        if len(received) == 2:
                            return

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        assert connected.wait(30)  # subscribed: the stream has everything produced from now on
        new = [
            _alert("m1", "warning", 10),  # another severity
            _alert("m2", "critical", 11),  # another monitor
            _alert("m1", "critical", 12),
            _alert("m1", "critical", 12),  # its repeat
            _alert("m1", "critical", 13, status="resolved"),
        ]
        with Client(settings) as client:
            assert client.produce("drift-alerts", new).produced == len(new)
        reader.join(60)
        assert not reader.is_alive()
    assert [a["id"] for a in everything] == ["m2-3-drift", "m1-2-drift", "m1-1-drift"]  # newest first, once
    assert [a["id"] for a in m1] == ["m1-2-drift", "m1-1-drift"]
    assert [a["id"] for a in critical] == ["m2-3-drift", "m1-2-drift"]
    assert [a["id"] for a in last] == ["m2-3-drift"]
    assert bad.status_code == 422
    assert [a["id"] for a in received] == ["m1-12-drift", "m1-13-resolved"]
