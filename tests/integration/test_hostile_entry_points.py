"""Hostile input at the entry points (CLI, SDK, gateway): a clear error at once, under one JSON policy.

Regressions of the hardening issue: a deeply nested line stopped `inferstream produce` with
a RecursionError; a lone surrogate gave an internal serialization error (and 500 from the
gateway); NaN and Infinity were quietly written as null.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from inferstream import Client, Settings
from inferstream.errors import RecordValidationError
from inferstream.gateway import BackgroundGateway
from inferstream.stack.testing import cli_env

GOOD = '{"id": "%s", "type": "review", "text": "fine"}'
HOSTILE_LINES = {
    "deep": '{"id": "deep", "type": "review", "text": "x", "attributes": ' + "[" * 3000 + "]" * 3000 + "}",
    "surrogate": '{"id": "surrogate", "type": "review", "text": "bad \\ud800 text"}',
    "nan": '{"id": "nan", "type": "review", "features": {"amount": NaN}}',
    "infinity": '{"id": "infinity", "type": "review", "features": {"amount": -Infinity}}',
    "big": '{"id": "big", "type": "review", "features": {"amount": 1180591620717411303424}}',
}


def _produce(settings: Settings, path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "inferstream", "produce", "events", str(path), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=cli_env(settings),
        check=False,
    )


@pytest.fixture
def platform(settings: Settings) -> Settings:
    with Client(settings) as client:
        client.topics.ensure_platform_topics()
    return settings


@pytest.mark.parametrize(("name", "reason"), [("deep", "nested deeper"), ("surrogate", "surrogate"), ("nan", "NaN")])
def test_produce_stops_at_a_hostile_line_naming_the_line_and_why(
    platform: Settings, tmp_path: Path, name: str, reason: str
) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join([GOOD % "first", HOSTILE_LINES[name], GOOD % "after"]) + "\n")
    result = _produce(platform, path)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "line 2" in output, output
    assert reason in output, output
    assert "Traceback" not in output, output
    with Client(platform) as client:
        ids = [m.key for m in client.subscribe("events", from_beginning=True, idle_timeout=5)]
    assert ids == [b"first"]  # the record before it was produced, none after


def test_produce_dead_letters_every_hostile_line_and_goes_on(platform: Settings, tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    lines = [GOOD % "first", *HOSTILE_LINES.values(), "\x00\xff", GOOD % "after"]
    path.write_bytes("\n".join(lines).encode("utf-8", "surrogatepass") + b"\n\xff\xfe\n")
    result = _produce(platform, path, "--on-error=dlq")
    assert result.returncode == 0, result.stdout + result.stderr
    with Client(platform) as client:
        ids = sorted(m.key or b"" for m in client.subscribe("events", from_beginning=True, idle_timeout=5))
        letters = list(client.dead_letters())
    assert ids == [b"after", b"first"]
    assert len(letters) == len(HOSTILE_LINES) + 2
    by_key = {letter.original_key: letter for letter in letters}
    assert "64-bit" in by_key[b"big"].error_message
    assert "features.amount" in by_key[b"nan"].error_message
    assert all(letter.stage == "produce" for letter in letters)


def test_the_sdk_refuses_what_json_cannot_carry_with_the_field(platform: Settings) -> None:
    with Client(platform) as client:
        for bad, field in [
            ({"id": "a", "type": "t", "text": "\udc00"}, "text"),
            ({"id": "b", "type": "t", "features": {"x": float("inf")}}, "features.x"),
            ({"id": "c", "type": "t", "text": "x", "attributes": {"\ud800": "v"}}, "attributes"),
        ]:
            with pytest.raises(RecordValidationError) as refused:
                client.produce("events", [bad])
            assert field in str(refused.value)
        report = client.produce("events", [{"id": "d", "type": "t", "features": {"x": 2**70}}], on_error="skip")
        assert (report.produced, len(report.rejected)) == (0, 1)
        assert "64-bit" in report.rejected[0].reason


def test_the_gateway_refuses_hostile_events_with_422_and_the_field(platform: Settings) -> None:
    with BackgroundGateway(platform) as gateway, httpx.Client(base_url=gateway.url, timeout=30) as http:
        for name, body in HOSTILE_LINES.items():
            answer = http.post("/v1/events", content=body, headers={"Content-Type": "application/json"})
            assert answer.status_code == 422, (name, answer.text)
        nan = http.post("/v1/events", content=HOSTILE_LINES["nan"], headers={"Content-Type": "application/json"})
        assert nan.json()["field"] == "features.amount"
        ok = http.post("/v1/events", content=GOOD % "ok", headers={"Content-Type": "application/json"})
        assert ok.status_code == 200, ok.text


def test_hostile_records_on_the_dead_letter_topic_never_stop_listing_or_replay(platform: Settings) -> None:
    from hostile import Case, produce_raw

    junk = [
        Case("no-headers", b"\xff\x00 not json"),
        Case("bad-numbers", b"x", [("dlq.source.offset", b"abc"), ("dlq.attempt", b"-"), ("dlq.time", b"yesterday")]),
        Case("bad-digest", b"y", [("dlq.original.sha256", b"zz"), ("dlq.id", b"   "), ("dlq.source.topic", b"\xff")]),
        Case("tombstone", None, [("dlq.original.size", b"99999999999999999999999")]),
    ]
    produce_raw(platform, platform.topics.name("dead-letters"), junk)
    with Client(platform) as client:
        letters = list(client.dead_letters())
        assert sorted(letter.original_key or b"" for letter in letters) == sorted(case.key for case in junk)
        report = client.replay_dead_letters(max_records=len(junk), group=f"{platform.topics.prefix}replay")
    assert report.read == len(junk)
    listed = subprocess.run(
        [sys.executable, "-m", "inferstream", "dlq", "list", "--payload"],
        capture_output=True,
        text=True,
        timeout=120,
        env=cli_env(platform),
        check=False,
    )
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert f"{len(junk)} dead letters" in listed.stdout + listed.stderr
