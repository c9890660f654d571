"""What every router shares: the settings, the SDK client, the stream fan-out, metrics, and request/reply plumbing.

The SDK's request/reply calls (``Client.predict``, ``Client.embed``) block a thread
until the answer comes. They run on the gateway's own pool of :data:`REPLY_THREADS`
threads, not on the event loop's default pool: a request of many rows or texts waits
on many answers at once without starving the other routes' threads. Each call runs in a
copy of the caller's context, so the request's trace (:func:`inferstream.tracing.use`)
reaches the records it sends, as ``asyncio.to_thread`` would carry it (a bare
``run_in_executor`` does not).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import ParamSpec, TypeVar

import confluent_kafka

from inferstream.client import Client
from inferstream.config import Settings
from inferstream.connectors.kafka.fanout import Fanout
from inferstream.errors import KafkaError, ModelError
from inferstream.gateway._auth import Authorize, KeyRing
from inferstream.gateway._errors import ApiError
from inferstream.gateway._metrics import GatewayMetrics
from inferstream.metrics import Metrics
from inferstream.schemas.records import DriftAlert, Prediction
from inferstream.serving.repository import ModelRepository, ModelVersion
from inferstream.serving.routes import resolve_model

P = ParamSpec("P")
T = TypeVar("T")
I = TypeVar("I")  # noqa: E741

#: Request/reply calls waiting at once, over every HTTP request.
REPLY_THREADS = 64
#: Open connections get this long to finish when the gateway stops.
GRACE_S = 10


@dataclass
class Gateway:
    """What the endpoints share: the settings, the SDK client, the stream fan-outs, metrics, the token check."""

    settings: Settings
    client: Client
    metrics: Metrics
    gateway_metrics: GatewayMetrics
    predictions: Fanout[Prediction]
    alerts: Fanout[DriftAlert]
    authorize: Authorize
    keys: KeyRing
    repository: ModelRepository
    loop: asyncio.AbstractEventLoop | None = None
    #: Run (awaited, in order) when the gateway stops, before the streams end: the dashboard's tasks.
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    _known_topics: set[str] = field(default_factory=set)
    _pool: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(REPLY_THREADS, thread_name_prefix="gateway-reply")
    )

    async def call(self, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``function(*args, **kwargs)`` on the reply pool, awaited, in a copy of the caller's context."""
        loop = asyncio.get_running_loop()
        context = contextvars.copy_context()
        return await loop.run_in_executor(self._pool, functools.partial(context.run, function, *args, **kwargs))

    async def each(self, function: Callable[[I], T], items: Iterable[I]) -> list[T]:
        """``function(item)`` for every item at once on the reply pool; the results in order.

        The first failure is raised once every call has ended (none is left running unseen).
        """
        return await every(self.call(function, item) for item in items)

    async def model(self, ref: str, request_id: str) -> ModelVersion:
        """The model version ``ref`` names, from the repository (``models_dir``); 404 ``unknown_model`` if none.

        ``name:version`` as given; a bare name as its route sends ``request_id``, else
        the highest version (:func:`inferstream.serving.routes.resolve_model`).
        """

        def find() -> ModelVersion:
            name, version = resolve_model(ref, request_id, routes=self.client.routes, repository=self.repository)
            return self.repository.get(name, version)

        name, _, version = ref.partition(":")
        if version:  # the common case, a version read before: no hop to the pool
            loaded = self.repository.loaded(name, version)
            if loaded is not None:
                return loaded
        try:
            return await self.call(find)
        except ModelError as exc:
            raise ApiError(404, "unknown_model", str(exc), param="model", model=ref) from None
        except (KafkaError, confluent_kafka.KafkaException) as exc:  # reading the routes
            raise ApiError(503, "kafka_unavailable", str(exc)) from None

    async def require_model(self, model: str, version: str) -> None:
        """404 ``unknown_model`` at once when nobody could serve ``model:version`` (no request topic).

        A request to a version nobody serves would wait for its whole timeout (or for
        the producer's metadata timeout).
        """
        topic = self.settings.topics.request_topic(model, version)
        if topic in self._known_topics:
            return
        try:
            exists = await self.call(self.client.topics.exists, topic)
        except KafkaError as exc:
            raise ApiError(503, "kafka_unavailable", str(exc)) from None
        if not exists:
            raise ApiError(
                404,
                "unknown_model",
                f"no model {model}:{version}: its request topic {topic} does not exist "
                f"(serve it with `inferstream serve --model {model}:{version}`)",
                model=model,
                version=version,
            )
        self._known_topics.add(topic)

    async def end_streams(self) -> None:
        """End every server-sent event stream (each client gets a last ``dropped`` event) and stop reading."""
        closers, self.closers = self.closers, []
        for close in closers:
            await close()
        await self.predictions.close()
        await self.alerts.close()

    def close(self) -> None:
        """Let the waiting calls end, and close the SDK client (its reply topic is deleted)."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.client.close()


async def every(calls: Iterable[Awaitable[T]]) -> list[T]:
    """Every call's result, in order; the first failure is raised once every call has ended."""
    calls = list(calls)
    if len(calls) == 1:  # one row, one request: no task to schedule
        return [await calls[0]]
    results = await asyncio.gather(*calls, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results  # type: ignore[return-value]
