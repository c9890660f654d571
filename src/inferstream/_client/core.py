"""What the client's concern modules share, and the resources it opens on first use."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from inferstream._client.topics import TopicNames
from inferstream.config import Settings
from inferstream.connectors.kafka.producer import Producer
from inferstream.metrics import Metrics


class _Closeable(Protocol):
    def close(self) -> None: ...


T = TypeVar("T")
C = TypeVar("C", bound=_Closeable)


class Lazy(Generic[T]):
    """One resource opened on first use (once, whichever thread asks first) and closed with the client."""

    def __init__(self, opener: Callable[[], T]) -> None:
        self._opener = opener
        self._value: T | None = None
        self._lock = threading.Lock()

    def get(self) -> T:
        """The resource, opened now if it was not yet."""
        value = self._value
        if value is None:
            with self._lock:
                if self._value is None:
                    self._value = self._opener()
                value = self._value
        return value

    @property
    def opened(self) -> T | None:
        """The resource when it was opened, else None (nothing is opened to answer)."""
        return self._value

    def close(self: Lazy[C]) -> None:
        """Close the resource if it was opened; the next ``get()`` opens a new one."""
        with self._lock:
            value, self._value = self._value, None
        if value is not None:
            value.close()


@dataclass(frozen=True)
class Core:
    """The parts of a client every concern needs: settings, metrics, topic names and the shared producer."""

    settings: Settings
    metrics: Metrics | None
    names: TopicNames
    #: The client's producer, opened on first call.
    producer: Callable[[], Producer]
