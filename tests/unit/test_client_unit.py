"""The SDK facade's plumbing, without a broker: what it forwards, what it opens lazily, and that it stays thin."""

from __future__ import annotations

import inspect
import threading
import time
from pathlib import Path

import pytest

import inferstream
from inferstream import client as client_module
from inferstream._client.core import Lazy
from inferstream._client.forward import forward
from inferstream._client.labels import _with_source
from inferstream.client import Client
from inferstream.config import Settings
from inferstream.schemas.records import Label
from inferstream.search import Searcher

NOWHERE = {"bootstrap_servers": "127.0.0.1:1"}


class _Target:
    def greet(self, name: str, *, punctuation: str = "!") -> str:
        """Say hello."""
        return f"hello {name}{punctuation}"


class _Owner:
    def __init__(self) -> None:
        self.opened = 0

    @property
    def target(self) -> _Target:
        self.opened += 1
        return _Target()

    greet = forward("target", _Target.greet)


def test_a_forwarded_method_has_the_target_method_signature_and_doc() -> None:
    owner = _Owner()
    assert owner.greet("ann", punctuation="?") == "hello ann?"
    assert _Owner.greet(owner, "bob") == "hello bob!"  # read on the class, it is the unbound method
    assert str(inspect.signature(owner.greet)) == "(name: 'str', *, punctuation: 'str' = '!') -> 'str'"
    assert owner.greet.__doc__ == "Say hello."


def test_a_forwarded_method_looks_its_target_up_when_called_not_when_read() -> None:
    owner = _Owner()
    method = owner.greet
    assert owner.opened == 0
    method("ann")
    assert owner.opened == 1


def test_reading_client_search_does_not_open_the_index() -> None:
    with Client(Settings.load(kafka=NOWHERE)) as client:
        search = client.search
        assert callable(search)
        assert client._searcher.opened is None
        assert inspect.signature(Client.search) == inspect.signature(Searcher.search)


def test_lazy_opens_once_whichever_thread_asks_first() -> None:
    opened: list[object] = []

    def opener() -> object:
        time.sleep(0.05)  # long enough for every thread to ask while the first one opens
        opened.append(object())
        return opened[-1]

    lazy = Lazy(opener)
    got: list[object] = []
    threads = [threading.Thread(target=lambda: got.append(lazy.get())) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(opened) == 1
    assert all(value is opened[0] for value in got)


def test_lazy_closes_what_it_opened_and_opens_afresh_after() -> None:
    class Resource:
        closed = False

        def close(self) -> None:
            self.closed = True

    lazy = Lazy(Resource)
    lazy.close()  # nothing opened: nothing to close
    first = lazy.get()
    assert lazy.opened is first
    lazy.close()
    assert first.closed
    assert lazy.opened is None
    assert lazy.get() is not first


def test_a_client_that_only_names_topics_opens_nothing() -> None:
    with Client(Settings.load(kafka=NOWHERE)) as client:
        assert client.topic("events") == client.settings.topics.platform_topics()["events"]
        assert client.contract_for("events") is not None
        assert client._producer.opened is None
        assert client._routes.opened is None


@pytest.mark.parametrize(
    "name", ["Client", "OnError", "ProduceReport", "Progress", "Received", "Rejected", "ReplayReport", "Subscription"]
)
def test_the_sdk_names_are_importable_from_the_facade(name: str) -> None:
    assert name in client_module.__all__
    assert getattr(client_module, name) is not None


def test_the_package_root_exports_the_facade_names() -> None:
    for name in ("Client", "ProduceReport", "Received", "Subscription"):
        assert getattr(inferstream, name) is getattr(client_module, name)


def test_the_facade_stays_thin() -> None:
    # STYLE.md 12: a new concern is a module under inferstream/_client, not more lines here.
    lines = Path(client_module.__file__).read_text(encoding="utf-8").count("\n")
    assert lines <= 300, f"client.py has {lines} lines: move the new concern into a module of inferstream/_client"


def test_a_with_block_closes_the_client_even_when_it_raises() -> None:
    client = Client(Settings.load(kafka=NOWHERE))
    producer = client.producer
    with pytest.raises(RuntimeError), client:
        raise RuntimeError("in the block")
    assert client._producer.opened is None  # closed: the next use opens a new one
    assert client.producer is not producer
    client.close()


def test_labels_go_to_the_labels_topic_under_the_label_contract() -> None:
    with Client(Settings.load(kafka=NOWHERE)) as client:
        assert client.contract_for("labels") is Label
        assert inspect.signature(Client.produce_labels).parameters["source"].default is None
    given = [{"id": "r1", "label": 1}, {"id": "r2", "label": 0, "source": "own"}, Label(id="r3", label="x")]
    filled = list(_with_source(given, "review"))
    assert [getattr(r, "source", None) if isinstance(r, Label) else r["source"] for r in filled] == [
        "review",
        "own",
        None,
    ]
