"""Windows over a prediction stream: panes of sketches, closed by row count or by event-time watermark.

A window is ``panes`` consecutive panes (one when tumbling); a pane is ``slide``
rows or seconds. Each pane keeps one sketch per column (see :mod:`.stats`), the
data-quality counts, a bounded sample of rows for the HTML report, and, per
partition, the lowest offset it holds: committing those offsets at window close
means a restart replays exactly the panes still open.

Event-time windows close when the watermark, the lowest of the partitions'
highest event times (partitions silent for ``idle_partition_s`` do not hold it
back), passes their end plus the allowed lateness. A record for a window that
already closed is counted as late.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from inferstream.monitoring.spec import AlertingSpec, WindowSpec
from inferstream.monitoring.stats import ColumnProfile, Score, Sketch, score

TopicPartition = tuple[str, int]


@dataclass
class ColumnBatch:
    """One column of a decoded batch: the clean values and the rows they came from."""

    rows: npt.NDArray[np.int64]
    values: npt.NDArray[Any]
    missing: npt.NDArray[np.int64]  # rows without the field
    invalid: npt.NDArray[np.int64]  # rows with a value of the wrong type
    nan: npt.NDArray[np.int64]  # rows with null, NaN or infinite values


@dataclass
class Batch:
    """Decoded predictions in columns (the hot path never loops over rows twice)."""

    times: npt.NDArray[np.float64]  # event time, seconds since the epoch
    partitions: list[TopicPartition]
    offsets: npt.NDArray[np.int64]
    part_index: npt.NDArray[np.int64]  # index into ``partitions`` per row
    columns: dict[str, ColumnBatch]
    raw: list[dict[str, Any]]  # the decoded records (for report samples)
    bad_records: int = 0  # undecodable: no event time, not JSON, not a prediction

    def __len__(self) -> int:
        return len(self.times)


def _quality() -> dict[str, int]:
    return {"missing": 0, "invalid": 0, "nan": 0}


@dataclass
class Pane:
    """Everything a window needs from one slide of the stream."""

    index: int
    count: int = 0
    sketches: dict[str, Sketch] = field(default_factory=dict)
    quality: dict[str, dict[str, int]] = field(default_factory=dict)
    bad_records: int = 0
    first_time: float = math.inf
    last_time: float = -math.inf
    offsets: dict[TopicPartition, int] = field(default_factory=dict)
    sample: list[dict[str, Any]] = field(default_factory=list)
    sample_keys: list[float] = field(default_factory=list)


@dataclass
class WindowResult:
    """A closed window measured against the reference."""

    index: int
    start: datetime
    end: datetime
    count: int
    scores: dict[str, Score | None]
    quality: dict[str, dict[str, int]]
    bad_records: int
    late_records: int
    drift_share: float
    dataset_drift: bool
    sample: list[dict[str, Any]]

    @property
    def drifted_columns(self) -> list[str]:
        """Names of the columns that drifted."""
        return [name for name, s in self.scores.items() if s is not None and s.drifted]

    def summary(self) -> dict[str, Any]:
        """A JSON-ready summary (the status file, logs)."""
        return {
            "index": self.index,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "count": self.count,
            "dataset_drift": self.dataset_drift,
            "drift_share": round(self.drift_share, 6),
            "columns": {
                name: None
                if s is None
                else {"method": s.method, "score": s.score, "threshold": s.threshold, "drifted": s.drifted}
                for name, s in self.scores.items()
            },
            "quality": self.quality,
            "bad_records": self.bad_records,
            "late_records": self.late_records,
        }


class Windows:
    """Assigns decoded batches to panes and closes windows; state survives restarts via ``state()``."""

    def __init__(
        self,
        spec: WindowSpec,
        profiles: Mapping[str, ColumnProfile],
        alerting: AlertingSpec,
        *,
        state: Mapping[str, Any] | None = None,
        seed: int = 0,
    ) -> None:
        self.spec = spec
        self.profiles = dict(profiles)
        self.alerting = alerting
        self.step = spec.step
        self.panes_per_window = spec.panes
        self.panes: dict[int, Pane] = {}
        state = state or {}
        #: count windows: rows seen (panes before ``next_window`` were dropped); time: unused
        self.rows = int(state.get("rows", 0))
        #: the first pane of the next window to close
        self.next_window: int | None = state.get("next_window")
        self.closed = int(state.get("closed", 0))
        self.late = 0
        self._pending_bad = 0
        self._watermarks: dict[TopicPartition, float] = {}
        self._seen: dict[TopicPartition, float] = {}
        self._consumed: dict[TopicPartition, int] = {}
        self._rng = np.random.default_rng(seed)
        self._sample_size = max(spec.report_rows // self.panes_per_window, 1)

    # -- state ----------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """What a restarted monitor needs to continue (the open panes are replayed from Kafka)."""
        base = min(self.panes) if self.panes else None
        if self.spec.kind == "count":
            first = base if base is not None else math.ceil(self.rows / self.step)
            rows = int(first * self.step)
        else:
            rows = 0
        return {"rows": rows, "next_window": self.next_window, "closed": self.closed}

    def commit_offsets(self) -> dict[TopicPartition, int]:
        """Per partition, the offset to resume from: the oldest record still in an open pane."""
        oldest: dict[TopicPartition, int] = {}
        for pane in self.panes.values():
            for tp, offset in pane.offsets.items():
                oldest[tp] = min(offset, oldest.get(tp, offset))
        return {tp: oldest.get(tp, last + 1) for tp, last in self._consumed.items()}

    def assigned(self, partitions: Sequence[TopicPartition], now: float) -> None:
        """Partitions just assigned: they hold the watermark back until they speak or go idle."""
        for tp in partitions:
            self._seen.setdefault(tp, now)

    def revoked(self, partitions: Sequence[TopicPartition]) -> None:
        """Partitions taken away: they no longer hold the watermark."""
        for tp in partitions:
            self._seen.pop(tp, None)
            self._watermarks.pop(tp, None)
            self._consumed.pop(tp, None)

    def saw(self, tp: TopicPartition, offset: int) -> None:
        """A record was read (of this model or not): the partition may resume after it."""
        if offset > self._consumed.get(tp, -1):
            self._consumed[tp] = offset

    # -- adding -----------------------------------------------------------------------------

    def add(self, batch: Batch, now: float) -> list[WindowResult]:
        """Fold a batch into its panes; the windows that closed because of it, oldest first."""
        closed: list[WindowResult] = []
        for i, tp in enumerate(batch.partitions):
            rows = batch.part_index == i
            if rows.any():
                self._consumed[tp] = max(int(batch.offsets[rows].max()), self._consumed.get(tp, -1))
                self._watermarks[tp] = max(float(batch.times[rows].max()), self._watermarks.get(tp, -math.inf))
                self._seen[tp] = now
        if self.spec.kind == "count":
            closed.extend(self._add_by_count(batch))
        else:
            self._add_by_time(batch)
            closed.extend(self.close_due(now))
        return closed

    def _add_by_count(self, batch: Batch) -> list[WindowResult]:
        closed: list[WindowResult] = []
        step = int(self.step)
        if self.next_window is None:
            self.next_window = self.rows // step
        pane_ids = (self.rows + np.arange(len(batch))) // step
        self.rows += len(batch)
        # Undecodable records count in the pane that was open when they arrived.
        self._fold(batch, pane_ids, bad_pane=int(pane_ids[0]) if len(batch) else (self.rows - 1) // step)
        # A window closes once its last pane is full.
        while self.rows >= (self.next_window + self.panes_per_window) * step:
            closed.append(self._close(self.next_window))
        return closed

    def _add_by_time(self, batch: Batch) -> None:
        pane_ids = np.floor(batch.times / self.step).astype(np.int64)
        if self.next_window is None and len(batch):
            self.next_window = int(pane_ids.min()) - self.panes_per_window + 1
        if self.next_window is not None:
            late = pane_ids < self.next_window
            if late.any():
                self.late += int(late.sum())
        self._fold(batch, pane_ids, bad_pane=None)

    def _fold(self, batch: Batch, pane_ids: npt.NDArray[np.int64], *, bad_pane: int | None) -> None:
        """Fold the rows into their panes, and undecodable records into ``bad_pane``.

        With no ``bad_pane`` (time windows) they go to the oldest open pane once this batch's
        rows are in, and wait for the first pane when none is open yet.
        """
        order = np.argsort(pane_ids, kind="stable")
        ids, starts = np.unique(pane_ids[order], return_index=True)
        bounds = [*starts.tolist(), len(order)]
        for k, pane_id in enumerate(ids.tolist()):
            if self.next_window is not None and pane_id < self.next_window:
                continue  # late: its windows are closed
            rows = order[bounds[k] : bounds[k + 1]]
            self._fold_pane(self._pane(pane_id), batch, rows)
        self._pending_bad += batch.bad_records
        if bad_pane is None and self.panes:
            bad_pane = min(self.panes)
        if self._pending_bad and bad_pane is not None and bad_pane >= (self.next_window or 0):
            self._pane(bad_pane).bad_records += self._pending_bad
            self._pending_bad = 0

    def _pane(self, pane_id: int) -> Pane:
        pane = self.panes.get(pane_id)
        if pane is None:
            pane = self.panes[pane_id] = Pane(pane_id)
        return pane

    def _fold_pane(self, pane: Pane, batch: Batch, rows: npt.NDArray[np.int64]) -> None:
        pane.count += len(rows)
        times = batch.times[rows]
        pane.first_time = min(pane.first_time, float(times.min()))
        pane.last_time = max(pane.last_time, float(times.max()))
        for i, tp in enumerate(batch.partitions):
            mine = batch.part_index[rows] == i
            if mine.any():
                low = int(batch.offsets[rows][mine].min())
                pane.offsets[tp] = min(low, pane.offsets.get(tp, low))
        in_pane = np.zeros(len(batch), dtype=bool)
        in_pane[rows] = True
        for name, column in batch.columns.items():
            profile = self.profiles[name]
            quality = pane.quality.setdefault(name, _quality())
            quality["missing"] += int(in_pane[column.missing].sum())
            quality["invalid"] += int(in_pane[column.invalid].sum())
            quality["nan"] += int(in_pane[column.nan].sum())
            keep = in_pane[column.rows]
            sketch = pane.sketches.get(name)
            if sketch is None:
                sketch = pane.sketches[name] = Sketch()
            sketch.add(profile, column.values[keep])
        self._sample(pane, batch, rows)

    def _sample(self, pane: Pane, batch: Batch, rows: npt.NDArray[np.int64]) -> None:
        # A uniform sample of the pane: keep the rows with the largest random keys.
        keys = self._rng.random(len(rows))
        room = self._sample_size - len(pane.sample)
        if room > 0:
            take = rows[:room]
            pane.sample.extend(batch.raw[int(i)] for i in take)
            pane.sample_keys.extend(keys[:room].tolist())
            rows, keys = rows[room:], keys[room:]
        if not len(rows):
            return
        current = np.asarray(pane.sample_keys)
        threshold = current.min()
        better = np.nonzero(keys > threshold)[0]
        for j in better.tolist():
            slot = int(np.argmin(current))
            if keys[j] <= current[slot]:
                continue
            current[slot] = keys[j]
            pane.sample[slot] = batch.raw[int(rows[j])]
        pane.sample_keys = current.tolist()

    # -- closing ------------------------------------------------------------------------------

    def watermark(self, now: float) -> float | None:
        """The lowest event time across active partitions (None while one has said nothing yet)."""
        idle = self.spec.idle_partition_s
        active = [tp for tp, seen in self._seen.items() if now - seen < idle]
        if not active:
            return max(self._watermarks.values()) if self._watermarks else None
        if any(tp not in self._watermarks for tp in active):
            return None
        return min(self._watermarks[tp] for tp in active)

    def close_due(self, now: float) -> list[WindowResult]:
        """Event-time windows whose end the watermark passed (call on idle polls too)."""
        if self.spec.kind != "time" or self.next_window is None:
            return []
        mark = self.watermark(now)
        if mark is None:
            return []
        closed = []
        limit = mark - self.spec.allowed_lateness_s
        while (self.next_window + self.panes_per_window) * self.step <= limit:
            if not self.panes:
                # Nothing buffered: jump to the window the watermark is in.
                self.next_window = max(self.next_window, math.floor(limit / self.step) - self.panes_per_window + 1)
                break
            first = min(self.panes)
            if first >= self.next_window + self.panes_per_window:
                # Empty windows in a gap of the stream: skip them.
                self.next_window = first - self.panes_per_window + 1
                continue
            closed.append(self._close(self.next_window))
        return closed

    def _close(self, first_pane: int) -> WindowResult:
        panes = [self.panes[i] for i in range(first_pane, first_pane + self.panes_per_window) if i in self.panes]
        result = self._measure(first_pane, panes)
        self.next_window = first_pane + 1
        self.closed += 1
        self.late = 0
        self.panes.pop(first_pane, None)  # the only pane no later window needs
        return result

    def _measure(self, first_pane: int, panes: list[Pane]) -> WindowResult:
        count = sum(p.count for p in panes)
        scores: dict[str, Score | None] = {}
        quality: dict[str, dict[str, int]] = {}
        for name, profile in self.profiles.items():
            total = Sketch()
            merged = _quality()
            for pane in panes:
                if name in pane.sketches:
                    total.merge(pane.sketches[name])
                for key, value in pane.quality.get(name, {}).items():
                    merged[key] += value
            scores[name] = score(profile, total)
            quality[name] = merged
        measured = [s for s in scores.values() if s is not None]
        share = sum(s.drifted for s in measured) / len(measured) if measured else 0.0
        if self.spec.kind == "time":
            start = datetime.fromtimestamp(first_pane * self.step, UTC)
            end = datetime.fromtimestamp((first_pane + self.panes_per_window) * self.step, UTC)
        else:
            times = [t for p in panes for t in (p.first_time, p.last_time) if math.isfinite(t)]
            start = datetime.fromtimestamp(min(times) if times else 0.0, UTC)
            end = datetime.fromtimestamp(max(times) if times else 0.0, UTC)
        sample = [row for pane in panes for row in pane.sample]
        return WindowResult(
            index=self.closed,
            start=start,
            end=end,
            count=count,
            scores=scores,
            quality=quality,
            bad_records=sum(p.bad_records for p in panes),
            late_records=self.late,
            drift_share=share,
            dataset_drift=bool(measured) and share >= self.alerting.drift_share,
            sample=sample,
        )


@dataclass
class Hysteresis:
    """Alert after ``alert_after`` of the last ``alert_window`` windows drifted; resolve after
    ``resolve_after`` clean windows in a row; no new alert within ``cooldown_s`` of the last."""

    spec: AlertingSpec
    history: list[bool] = field(default_factory=list)
    active: bool = False
    clean_streak: int = 0
    last_alert_at: float | None = None

    def update(self, drifted: bool, at: float) -> Literal["drift", "resolved"] | None:
        """Feed one window's verdict (``at``: its end, seconds); ``drift``, ``resolved`` or None."""
        self.history = [*self.history, drifted][-self.spec.alert_window :]
        self.clean_streak = 0 if drifted else self.clean_streak + 1
        if self.active:
            if self.clean_streak >= self.spec.resolve_after:
                self.active = False
                return "resolved"
            return None
        cooling = self.last_alert_at is not None and at - self.last_alert_at < self.spec.cooldown_s
        if sum(self.history) >= self.spec.alert_after and not cooling:
            self.active = True
            self.last_alert_at = at
            return "drift"
        return None

    def state(self) -> dict[str, Any]:
        """JSON-ready state, for the status file."""
        return {
            "history": self.history,
            "active": self.active,
            "clean_streak": self.clean_streak,
            "last_alert_at": self.last_alert_at,
        }

    @classmethod
    def restore(cls, spec: AlertingSpec, state: Mapping[str, Any] | None) -> Hysteresis:
        """Back from ``state()`` (fresh when None)."""
        if not state:
            return cls(spec)
        return cls(
            spec,
            history=[bool(v) for v in state.get("history", [])],
            active=bool(state.get("active", False)),
            clean_streak=int(state.get("clean_streak", 0)),
            last_alert_at=state.get("last_alert_at"),
        )
