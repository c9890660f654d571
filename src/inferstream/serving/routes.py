"""Routes: which versions of a model serve its requests, on the compacted ``control`` topic.

A route maps a model alias to versions with weights (and shadow versions). Whoever
produces a request (the SDK, the ingest processor, the gateway) resolves the alias
with :class:`RouteTable`, which reads the control topic once and then follows it in
the background, so a new route takes effect without restarting anything. The
version is picked by a hash of the request id against the weights: a given request
id always lands on the same version, and the split honours the weights.

``set_route`` / ``promote`` / ``rollback`` write a new route; each keeps the one it
replaces as ``previous`` so a rollback restores it.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Self

import confluent_kafka
from confluent_kafka import TopicPartition

from inferstream.config import Settings
from inferstream.connectors.kafka._util import watermarks
from inferstream.connectors.kafka.admin import TopicAdmin
from inferstream.connectors.kafka.producer import Producer
from inferstream.connectors.kafka.reader import read_bounded
from inferstream.errors import ConfigError, KafkaError, ModelError
from inferstream.schemas.codec import codec_for
from inferstream.schemas.records import Route, RouteVersion

if TYPE_CHECKING:
    from inferstream.serving.repository import ModelRepository

log = logging.getLogger("inferstream.routes")

_LOAD_TIMEOUT_S = 15.0


def pick_version(route: Route, request_id: str) -> str:
    """The version a request id is routed to: stable per id, shares as the weights say."""
    digest = hashlib.blake2b(request_id.encode(), digest_size=8).digest()
    point = int.from_bytes(digest, "big") / 2**64 * sum(v.weight for v in route.versions)
    cumulative = 0.0
    for choice in route.versions:
        cumulative += choice.weight
        if point < cumulative and choice.weight > 0:
            return choice.version
    return next(v.version for v in reversed(route.versions) if v.weight > 0)


def parse_weights(text: str) -> dict[str, float]:
    """``v1=90,v2=10`` (or ``1=90,2=10``) → {"1": 90.0, "2": 10.0}; a bare ``2`` means all of it."""
    weights: dict[str, float] = {}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        name, sep, share = (piece.strip() for piece in part.partition("="))
        version = name[1:] if name[:1] == "v" and name[1:].isdigit() else name
        try:
            weights[version] = float(share) if sep else 100.0
        except ValueError:
            raise ConfigError(f"weight of {name!r} is not a number: {share!r} (expected e.g. v1=90,v2=10)") from None
        if weights[version] < 0:
            raise ConfigError(f"weight of {name!r} is negative")
    if not weights or sum(weights.values()) <= 0:
        raise ConfigError(f"no positive weights in {text!r} (expected e.g. v1=90,v2=10)")
    return weights


class RouteTable:
    """The latest route of every model, kept current from the control topic.

    >>> with RouteTable(settings) as routes:            # doctest: +SKIP
    ...     routes.resolve("breast-cancer", request_id)  # '1' or '2', as the weights say
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topic = settings.topics.platform_topics()["control"]
        self._routes: dict[str, Route] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._codec = codec_for(Route)
        self._changed = threading.Condition(self._lock)
        self.updates = 0

    def start(self) -> Self:
        """Read every route up to now (blocking), then follow new ones in the background."""
        if self._thread is not None:
            return self
        TopicAdmin(self.settings).ensure_platform_topics()
        conf: dict[str, Any] = {
            **self.settings.kafka.base_config(),
            "group.id": "inferstream-routes",  # never joins: partitions are assigned, nothing is committed
            "enable.auto.commit": False,
            "enable.partition.eof": False,
            **self.settings.kafka.consumer_overrides,
        }
        consumer = confluent_kafka.Consumer(conf)
        metadata = consumer.list_topics(self.topic, timeout=_LOAD_TIMEOUT_S).topics[self.topic]
        partitions = sorted(metadata.partitions)
        try:
            ends = {p: watermarks(consumer, self.topic, p, _LOAD_TIMEOUT_S)[1] for p in partitions}
        except confluent_kafka.KafkaException:
            consumer.close()
            raise
        consumer.assign([TopicPartition(self.topic, p, confluent_kafka.OFFSET_BEGINNING) for p in partitions])
        deadline = time.monotonic() + _LOAD_TIMEOUT_S
        positions = dict.fromkeys(partitions, 0)
        while any(positions[p] < ends[p] for p in partitions):
            if time.monotonic() > deadline:
                consumer.close()
                raise KafkaError(f"reading the routes from {self.topic} stalled: is the broker up?")
            for message in consumer.consume(500, 0.2):
                self._apply(message)
                positions[message.partition() or 0] = (message.offset() or 0) + 1
            for tp in consumer.position([TopicPartition(self.topic, p) for p in partitions]):
                positions[tp.partition] = max(positions[tp.partition], tp.offset)
        self._thread = threading.Thread(target=self._follow, args=(consumer,), name="routes", daemon=True)
        self._thread.start()
        return self

    def _follow(self, consumer: confluent_kafka.Consumer) -> None:
        try:
            while not self._stop.is_set():
                for message in consumer.consume(100, 0.2):
                    self._apply(message)
        finally:
            consumer.close()

    def _apply(self, message: confluent_kafka.Message) -> None:
        if message.error() is not None:
            return
        key = (message.key() or b"").decode()
        value = message.value()
        with self._changed:
            if value is None:
                self._routes.pop(key, None)  # a tombstone: the route was removed
            else:
                try:
                    route = self._codec.decode(value, headers=message.headers())
                except Exception as exc:  # a bad record on the control topic must not stop routing
                    log.warning("ignoring an unreadable route at %s offset %s: %s", self.topic, message.offset(), exc)
                    return
                self._routes[route.model] = route
            self.updates += 1
            self._changed.notify_all()

    def put(self, route: Route) -> None:
        """Use ``route`` until the control topic says otherwise (tests; a route known another way)."""
        with self._changed:
            self._routes[route.model] = route
            self._changed.notify_all()

    def get(self, model: str) -> Route | None:
        """The current route of a model, or None when it has none."""
        with self._lock:
            return self._routes.get(model)

    def all(self) -> dict[str, Route]:
        """Every model's current route."""
        with self._lock:
            return dict(self._routes)

    def resolve(self, model: str, request_id: str) -> str:
        """The version ``request_id`` goes to; raises ConfigError when the model has no route."""
        route = self.get(model)
        if route is None:
            raise ConfigError(
                f"model {model!r} has no route: set one with `inferstream models route {model} --weights v1=100` "
                f"or ask a version ('{model}:1')"
            )
        return pick_version(route, request_id)

    def wait_for(self, model: str, predicate: Any, timeout: float = 10.0) -> Route | None:
        """Wait until the route of ``model`` satisfies ``predicate(route)``; the route then (or None)."""
        with self._changed:
            self._changed.wait_for(lambda: predicate(self._routes.get(model)), timeout)
            return self._routes.get(model)

    def close(self) -> None:
        """Stop following the control topic."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def resolve_model(ref: str, request_id: str, *, routes: RouteTable, repository: ModelRepository) -> tuple[str, str]:
    """``(name, version)`` for ``name:version``, or for a bare name: its route's pick, else the highest version.

    A bare name with a route on the control topic goes where the route sends
    ``request_id`` (as :meth:`RouteTable.resolve`); without a route, to the highest
    version in ``repository`` (numeric versions in number order). ModelError when the
    name has neither.
    """
    name, _, version = ref.partition(":")
    if version:
        return name, version
    route = routes.get(name)
    if route is not None:
        return name, pick_version(route, request_id)
    versions = repository.versions(name)
    if not versions:
        known = ", ".join(repository.names()) or "none"
        raise ModelError(
            f"no model {name!r}: it has no route on the control topic and no version in {repository.root} "
            f"(models there: {known})"
        )
    return name, versions[-1]


def read_routes(settings: Settings) -> dict[str, Route]:
    """Every model's current route, read once from the control topic."""
    TopicAdmin(settings).ensure_platform_topics()
    codec = codec_for(Route)
    routes: dict[str, Route] = {}
    for message in read_bounded(settings, settings.topics.platform_topics()["control"], idle_timeout=5.0):
        value = message.value()
        if value is None:
            routes.pop((message.key() or b"").decode(), None)
            continue
        route = codec.decode(value, headers=message.headers())
        routes[route.model] = route
    return routes


def set_route(
    settings: Settings,
    model: str,
    weights: Mapping[str, float],
    *,
    shadow: Sequence[str] = (),
    known_versions: Sequence[str] | None = None,
) -> Route:
    """Write a new route for ``model`` (the current one is kept as ``previous``)."""
    if known_versions is not None:
        unknown = sorted({v for v in [*weights, *shadow] if v not in known_versions})
        if unknown:
            raise ConfigError(
                f"{model} has no version {', '.join(unknown)} in the model repository "
                f"(it has {', '.join(known_versions) or 'none'})"
            )
    current = read_routes(settings).get(model)
    route = Route(
        model=model,
        versions=[RouteVersion(version=v, weight=w) for v, w in weights.items()],
        shadow=list(shadow),
        previous=current.versions if current is not None else None,
    )
    _write(settings, route)
    return route


def add_shadow(settings: Settings, model: str, version: str, *, primary: str) -> Route:
    """Make ``version`` a shadow in ``model``'s route (weights unchanged).

    A model with no route gets one that sends all traffic to ``primary`` (where a bare
    name went before ``version`` was the highest), with ``version`` as its shadow.
    """
    current = read_routes(settings).get(model)
    if current is None:
        return set_route(settings, model, {primary: 100.0}, shadow=[version])
    weights = {v.version: v.weight for v in current.versions}
    return set_route(settings, model, weights, shadow=[*(s for s in current.shadow if s != version), version])


def pin(settings: Settings, model: str, primary: str) -> Route | None:
    """Send all of ``model``'s traffic to ``primary`` when it has no route yet (the new route, else None)."""
    if read_routes(settings).get(model) is not None:
        return None
    return set_route(settings, model, {primary: 100.0})


def promote(settings: Settings, model: str, version: str) -> Route:
    """Send all of ``model``'s traffic to ``version`` (shadows are kept, minus that version)."""
    current = read_routes(settings).get(model)
    shadow = [v for v in (current.shadow if current else []) if v != version]
    return set_route(settings, model, {version: 100.0}, shadow=shadow)


def rollback(settings: Settings, model: str) -> Route:
    """Restore the route before the current one."""
    current = read_routes(settings).get(model)
    if current is None or not current.previous:
        raise ConfigError(f"{model} has no earlier route to roll back to")
    route = Route(model=model, versions=current.previous, shadow=current.shadow, previous=current.versions)
    _write(settings, route)
    return route


def _write(settings: Settings, route: Route) -> None:
    codec = codec_for(Route)
    producer = Producer(settings, stage="control")
    producer.produce(settings.topics.platform_topics()["control"], codec.encode(route), route.key(), [codec.header])
    producer.flush()
