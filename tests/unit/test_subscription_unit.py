"""A subscription's idle timeout does not count the group join."""

from __future__ import annotations

import time

import pytest

from inferstream._client import subscribe as subscribe_module
from inferstream.client import Client
from inferstream.config import Settings


def test_idle_time_counts_from_the_assignment_not_from_the_join(monkeypatch: pytest.MonkeyPatch) -> None:
    # No broker answers on port 1: the group never assigns anything, so the whole wait is join.
    monkeypatch.setattr(subscribe_module, "JOIN_ALLOWANCE_S", 1.5)
    settings = Settings.load(kafka={"bootstrap_servers": "127.0.0.1:1"})
    with Client(settings) as client:
        subscription = client.subscribe("events", from_beginning=True, idle_timeout=0.3, decode=False)
        started = time.monotonic()
        assert list(subscription) == []
        # The join allowance passed before the 0.3 s of idle time began.
        assert time.monotonic() - started >= 1.5 + 0.3
