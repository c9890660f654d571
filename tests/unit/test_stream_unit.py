"""The gateway's streams without a broker: the fan-out's two kinds of subscriber, and the events' framing."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, datetime
from typing import Any

import pytest

from inferstream.config import Settings
from inferstream.connectors.kafka.fanout import Fanout, FanoutSubscriber, RawSubscriber
from inferstream.gateway.stream import frame
from inferstream.schemas.codec import codec_for
from inferstream.schemas.records import Prediction

CODEC = codec_for(Prediction)
HEADERS = [CODEC.header]


def parse_sse(stream: bytes) -> list[dict[str, str]]:
    """The events of a text/event-stream as a browser's EventSource reads them (the WHATWG rules)."""
    events: list[dict[str, str]] = []
    event: dict[str, Any] = {}
    for line in re.split(r"\r\n|\r|\n", stream.decode()):
        if not line:  # a blank line dispatches the event
            if "data" in event:
                events.append({**event, "data": "\n".join(event["data"])})
            event = {}
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            event.setdefault("data", []).append(value)
        elif name in ("event", "id"):
            event[name] = value
    return events


def prediction(request_id: str, model: str = "iris", version: str = "1") -> dict[str, Any]:
    return {
        "request_id": request_id,
        "event_time": datetime.now(UTC).isoformat(),
        "model": model,
        "version": version,
        "inputs": {"x": 1},
        "outputs": {"label": "setosa", "note": "two\nlines"},
        "latency": {"queue_ms": 0.1, "compute_ms": 0.2, "total_ms": 0.5},
    }


def encoded(request_id: str, model: str = "iris", version: str = "1") -> bytes:
    return CODEC.encode(CODEC.validate(prediction(request_id, model, version)))


def test_events_sent_as_one_chunk_parse_as_separate_events() -> None:
    records = [encoded(f"r{i}") for i in range(5)]
    chunk = frame(b"prediction", [f"r{i}" for i in range(5)], records)
    events = parse_sse(chunk)
    assert [e["event"] for e in events] == ["prediction"] * 5
    assert [e["id"] for e in events] == [f"r{i}" for i in range(5)]
    assert [e["data"].encode() for e in events] == records  # the bytes as they came, on one line each


def test_line_breaks_in_a_record_or_a_key_do_not_break_the_events() -> None:
    pretty = json.dumps(prediction("r1"), indent=2).encode()  # valid JSON over many lines (CRLF too)
    records = [encoded("r0"), pretty.replace(b"\n", b"\r\n"), encoded("two\nlines")]
    events = parse_sse(frame(b"prediction", ["r0", "r1", "two\nlines"], records))
    assert len(events) == 3
    assert [json.loads(e["data"]) for e in events] == [json.loads(r) for r in records]
    assert "\n" not in events[1]["data"]
    assert [e.get("id") for e in events] == ["r0", "r1", None]  # an id must be one line: left out


class _Message:
    def __init__(self, value: bytes | None, headers: Any = None) -> None:
        self._value, self._headers = value, HEADERS if headers is None else headers

    def value(self) -> bytes | None:
        return self._value

    def headers(self) -> Any:
        return self._headers

    def error(self) -> None:
        return None


class _Consumer:
    """What the fan-out calls of a consumer: one poll, then a batch of what is fetched already."""

    def __init__(self, messages: list[_Message]) -> None:
        self.messages = messages

    def poll(self, timeout: float) -> _Message | None:
        return self.messages.pop(0) if self.messages else None

    def consume(self, num_messages: int, timeout: float) -> list[_Message]:
        taken, self.messages = self.messages[:num_messages], self.messages[num_messages:]
        return taken


def _fanout(monkeypatch: pytest.MonkeyPatch) -> Fanout[Prediction]:
    fanout = Fanout(
        Settings.load(),
        "predictions",
        CODEC,
        queue_size=100,
        id_field="request_id",
        filter_fields=("model", "version"),
    )

    async def started() -> None:  # no broker here: the test hands the fetched batches over
        return None

    monkeypatch.setattr(fanout, "_start", started)
    return fanout


def _taken(subscriber: RawSubscriber | FanoutSubscriber[Prediction]) -> list[Any]:
    return [item for batch in subscriber._batches for item in batch]


def test_raw_subscribers_get_ids_and_bytes_of_valid_records_that_pass_their_filter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def scenario() -> None:
        fanout = _fanout(monkeypatch)
        every = await fanout.subscribe_raw()
        iris = await fanout.subscribe_raw({"model": "iris"})
        iris2 = await fanout.subscribe_raw({"model": "iris", "version": "2"})
        good = [encoded("a", "iris", "1"), encoded("b", "wine", "1"), encoded("c", "iris", "2")]
        messages = [
            _Message(good[0]),
            _Message(b"not json"),
            _Message(good[1]),
            _Message(encoded("x"), headers=[("inferstream-schema", b"event/1")]),  # another contract's
            _Message(None),
            _Message(good[2]),
        ]
        batch = fanout._fetch(_Consumer(messages))  # type: ignore[arg-type]
        assert batch is not None
        assert batch.items is None  # only raw subscribers: checked, not built
        await fanout._offer(batch)
        assert _taken(every) == [("a", good[0]), ("b", good[1]), ("c", good[2])]
        assert _taken(iris) == [("a", good[0]), ("c", good[2])]
        assert _taken(iris2) == [("c", good[2])]
        assert fanout.undecodable == 2  # skipped; the stream goes on

    asyncio.run(scenario())


def test_a_subscriber_of_records_gets_records_beside_raw_subscribers(monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> None:
        fanout = _fanout(monkeypatch)
        raw = await fanout.subscribe_raw({"version": "2"})
        first = [encoded("a", "iris", "2"), encoded("b", "iris", "1")]
        # A subscriber of records comes after the fetch, before the batch is handed out: it gets it too.
        batch = fanout._fetch(_Consumer([_Message(value) for value in first]))  # type: ignore[arg-type]
        records = await fanout.subscribe(lambda p: p.request_id != "b")
        assert batch is not None
        await fanout._offer(batch)
        # Once a subscriber of records is there, fetched records are built, and raw subscribers get theirs from them.
        second = [encoded("c", "iris", "2")]
        batch = fanout._fetch(_Consumer([_Message(second[0])]))  # type: ignore[arg-type]
        assert batch is not None
        assert batch.items is not None
        await fanout._offer(batch)
        assert _taken(raw) == [("a", first[0]), ("c", second[0])]
        assert [(p.request_id, p.version, raw) for p, raw in _taken(records)] == [
            ("a", "2", first[0]),
            ("c", "2", second[0]),
        ]
        assert all(isinstance(p, Prediction) for p, _ in _taken(records))

    asyncio.run(scenario())


def test_raw_subscribers_filter_only_on_the_fanouts_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> None:
        fanout = _fanout(monkeypatch)
        with pytest.raises(ValueError, match="filters on model, version, not on shadow"):
            await fanout.subscribe_raw({"shadow": True})
        plain = Fanout(Settings.load(), "predictions", CODEC, queue_size=10)
        with pytest.raises(ValueError, match="no id field"):
            await plain.subscribe_raw()

    asyncio.run(scenario())
