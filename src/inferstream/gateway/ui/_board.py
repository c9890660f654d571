"""The dashboard's live state: history read once, kept current from the gateway's fan-outs, summarised for the page.

Started by the first request for it (a gateway nobody looks at spends nothing on
it), it runs three tasks on the gateway's event loop:

- predictions: the newest records of the topic (:mod:`inferstream.gateway.ui._history`, about :data:`HISTORY`),
  then every batch of the prediction fan-out folded into :class:`ModelSeries` (a
  dictionary lookup and a few additions a record) and a few of each batch kept
  as the sampled tail;
- alerts: the newest alerts, then the alert fan-out, into :class:`DriftTimeline`;
- views: every :data:`REFRESH_S` seconds, in a thread, the consumer groups and lag,
  the served model versions, the latest dead letters, the routes and the
  monitors' status files (:mod:`inferstream.gateway.ui._platform`).

The history read ends where the fan-out starts, so a record produced in between
may be missed (never counted twice): a dashboard's view, not an account.
The page asks for :meth:`Board.snapshot` about once a second; it is computed at
most every :data:`SNAPSHOT_S` seconds, whoever asks, and sent as compact JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import orjson

from inferstream.connectors.kafka.fanout import Fanout
from inferstream.errors import InferstreamError
from inferstream.gateway._state import Gateway
from inferstream.gateway.ui import _platform
from inferstream.gateway.ui._drift import DriftTimeline
from inferstream.gateway.ui._history import Seen, parse_prediction, recent_alerts, recent_predictions
from inferstream.gateway.ui._series import SPAN_S, ModelSeries
from inferstream.monitoring.reports import reports_dir
from inferstream.schemas.records import Contract, DriftAlert, Prediction

log = logging.getLogger("inferstream.gateway")

C = TypeVar("C", bound=Contract)
H = TypeVar("H")

#: Seconds between reads of the slow views (groups, dead letters, routes, status files).
REFRESH_S = 3.0
#: Seconds a snapshot is reused for.
SNAPSHOT_S = 0.5
#: Seconds before a source that failed (a topic missing, the broker away) is tried again.
RETRY_S = 2.0
#: Predictions read on load (the newest, shared by the partitions; none older than the span drawn).
HISTORY = 60_000
#: Predictions in the tail; of each batch only the last few are kept (the tail is sampled).
TAIL = 20
TAIL_PER_BATCH = 4
#: Consumption rates kept per worker group (one a refresh).
CONSUMED_POINTS = 100
#: Characters of a tail prediction's outputs shown.
OUTPUTS_CHARS = 300
#: History records folded between two yields to the event loop.
_CHUNK = 2000


class Board:
    """The live state behind ``/ui`` (see the module doc)."""

    def __init__(self, state: Gateway) -> None:
        self.state = state
        self.series = ModelSeries()
        self.tail: deque[bytes] = deque(maxlen=TAIL)
        self.drift = DriftTimeline(reports_dir(state.settings))
        self.views: dict[str, Any] = {"lag": [], "served": [], "dead_letters": None, "routes": []}
        #: What could not be read just now, by section (shown on the page).
        self.problems: dict[str, str] = {}
        #: Whether each source's history has been read.
        self.loaded = {"predictions": False, "alerts": False, "views": False}
        #: Per worker group: when its committed offsets were read and their sum; its consumption rates since.
        self._committed: dict[str, tuple[float, int]] = {}
        self._consumed: dict[str, deque[tuple[float, float]]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._snapshot: tuple[float, bytes] | None = None

    def start(self) -> None:
        """Start the tasks (on the running loop), once."""
        if self._tasks:
            return
        self._tasks = [
            asyncio.create_task(self._predictions(), name="ui-predictions"),
            asyncio.create_task(self._alerts(), name="ui-alerts"),
            asyncio.create_task(self._views(), name="ui-views"),
        ]

    async def close(self) -> None:
        """Stop the tasks."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []

    # -- sources ------------------------------------------------------------------------

    async def _predictions(self) -> None:
        settings = self.state.settings

        def load() -> tuple[list[Seen], list[bytes]]:
            since = datetime.now(UTC) - timedelta(seconds=SPAN_S)
            return recent_predictions(settings, total=HISTORY, since=since, tail=TAIL)

        async def fold_history(history: tuple[list[Seen], list[bytes]]) -> None:
            seen, last = history
            add = self.series.add
            for start in range(0, len(seen), _CHUNK):
                for one in seen[start : start + _CHUNK]:
                    add(one.model, one.version, one.predicted_at, one.total_ms)
                await asyncio.sleep(0)  # the loop serves requests between chunks
            self.tail.extend(last)

        def fold(batch: Sequence[tuple[Prediction, bytes]]) -> None:
            add = self.series.add
            for p, _raw in batch:
                add(p.model, p.version, p.predicted_at.timestamp(), p.latency.total_ms)
            self.tail.extend(raw for _prediction, raw in batch[-TAIL_PER_BATCH:])

        await self._follow("predictions", load, fold_history, self.state.predictions, fold)

    async def _alerts(self) -> None:
        settings = self.state.settings

        def load() -> list[DriftAlert]:
            return recent_alerts(settings, total=1000)

        async def fold_history(history: list[DriftAlert]) -> None:
            for alert in history:
                self.drift.add_alert(alert)

        def fold(batch: Sequence[tuple[DriftAlert, bytes]]) -> None:
            for alert, _raw in batch:
                self.drift.add_alert(alert)

        await self._follow("alerts", load, fold_history, self.state.alerts, fold)

    async def _follow(
        self,
        name: str,
        load: Callable[[], H],
        fold_history: Callable[[H], Awaitable[None]],
        fanout: Fanout[C],
        fold: Callable[[Sequence[tuple[C, bytes]]], None],
    ) -> None:
        while True:
            try:
                if not self.loaded[name]:
                    await fold_history(await asyncio.to_thread(load))
                    self.loaded[name] = True
                subscriber = await fanout.subscribe()
            except InferstreamError as exc:  # the topic is missing, the broker away: show it, try again
                self.problems[name] = str(exc)
                await asyncio.sleep(RETRY_S)
                continue
            except Exception as exc:  # anything else must not end the dashboard's view of this topic either
                log.exception("the dashboard could not read %s", name)
                self.problems[name] = f"{type(exc).__name__}: {exc}"
                await asyncio.sleep(RETRY_S)
                continue
            self.problems.pop(name, None)
            try:
                async for batch in subscriber.batches():
                    fold(batch)
            finally:
                fanout.unsubscribe(subscriber)
            # Dropped (it fell behind, or the fan-out stopped): go on from the newest record.
            self.problems[name] = f"the live stream was interrupted ({subscriber.dropped}); reconnecting"
            await asyncio.sleep(RETRY_S)

    async def _views(self) -> None:
        while True:
            views, statuses, problems = await asyncio.to_thread(self._read_views)
            self._rates(views.get("served", []), time.time())
            self.views.update(views)
            for status in statuses:
                self.drift.add_status(status)
            for section in ("lag", "dead_letters", "routes", "monitors"):
                if section in problems:
                    self.problems[section] = problems[section]
                else:
                    self.problems.pop(section, None)
            self.loaded["views"] = True
            await asyncio.sleep(REFRESH_S)

    def _rates(self, served: list[dict[str, Any]], now: float) -> None:
        # Requests consumed per second by each model version's workers, from their committed
        # offsets: the throughput of those whose outputs are not predictions (embedders).
        for entry in served:
            group, committed = entry["group"], entry["committed"]
            before = self._committed.get(group)
            self._committed[group] = (now, committed)
            rates = self._consumed.setdefault(group, deque(maxlen=CONSUMED_POINTS))
            if before is not None and now > before[0]:
                rates.append((now, max(committed - before[1], 0) / (now - before[0])))
            entry["consumed"] = {"t": [round(t, 3) for t, _ in rates], "rate": [round(r, 3) for _, r in rates]}
            entry["consumed_per_s"] = rates[-1][1] if rates else None

    def _read_views(self) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, str]]:
        state = self.state
        views: dict[str, Any] = {}
        problems: dict[str, str] = {}
        statuses: list[dict[str, Any]] = []

        def attempt(section: str, read: Callable[[], None]) -> None:
            # One view that cannot be read (the broker away, a topic missing) leaves the others
            # current: the page shows why, and the next refresh tries again.
            try:
                read()
            except Exception as exc:
                problems[section] = f"{type(exc).__name__}: {exc}"

        def lag() -> None:
            infos = _platform.groups(state.client)
            views["lag"] = _platform.lag_view(infos)
            views["served"] = _platform.served(state.settings, infos)

        def dead_letters() -> None:
            views["dead_letters"] = _platform.dead_letters(state.settings)

        def routes() -> None:
            views["routes"] = _platform.routes(state.client)

        def monitors() -> None:
            statuses.extend(_platform.monitor_statuses(state.settings.state_dir))

        attempt("lag", lag)
        attempt("dead_letters", dead_letters)
        attempt("routes", routes)
        attempt("monitors", monitors)
        return views, statuses, problems

    # -- the page's view ----------------------------------------------------------------

    def snapshot(self) -> bytes:
        """The page's JSON (see :meth:`view`), computed at most every :data:`SNAPSHOT_S` seconds."""
        now = time.monotonic()
        if self._snapshot is None or now - self._snapshot[0] >= SNAPSHOT_S:
            self._snapshot = (now, orjson.dumps(self.view(time.time())))
        return self._snapshot[1]

    def view(self, now: float) -> dict[str, Any]:
        """Everything the page shows: models (with series), the tail, monitors, lag, dead letters, routes."""
        models = {(m["model"], m["version"]): m for m in self.series.snapshot(now)}
        for entry in self.views["served"]:
            key = (entry["model"], entry["version"])
            models[key] = {
                **(models.get(key) or _idle(*key)),
                "workers": entry["workers"],
                "lag": entry["lag"],
                "consumed_per_s": entry.get("consumed_per_s"),
                "consumed": entry.get("consumed"),
            }
        return {
            "now": now,
            "loaded": self.loaded,
            "problems": self.problems,
            "models": [models[key] for key in sorted(models)],
            "tail": [row for row in map(_tail_row, reversed(self.tail)) if row is not None],
            "monitors": self.drift.snapshot(),
            "lag": self.views["lag"],
            "dead_letters": self.views["dead_letters"],
            "routes": self.views["routes"],
        }


def _idle(model: str, version: str) -> dict[str, Any]:
    return {
        "model": model,
        "version": version,
        "total": 0,
        "newest": None,
        "rate_per_s": 0.0,
        "p50_ms": None,
        "p99_ms": None,
        "series": None,
    }


def _tail_row(raw: bytes) -> dict[str, Any] | None:
    seen = parse_prediction(raw)
    if seen is None:
        return None
    record = orjson.loads(raw)
    outputs = orjson.dumps(record.get("outputs")).decode()
    return {
        "request_id": str(record.get("request_id", "")),
        "model": seen.model,
        "version": seen.version,
        "predicted_at": seen.predicted_at,
        "total_ms": seen.total_ms,
        "outputs": outputs if len(outputs) <= OUTPUTS_CHARS else outputs[: OUTPUTS_CHARS - 1] + "…",
    }
