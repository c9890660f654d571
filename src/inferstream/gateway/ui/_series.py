"""Throughput and latency per model version, per second of prediction time, in bounded memory.

Each prediction counts in the second it was predicted (``predicted_at``), so the
history read from the topic on load and the live stream land on one time line.
A second keeps its count and a rolling sample of at most :data:`SAMPLE` total
latencies: percentiles come from the sample, computed when a snapshot is asked
for (about once a second), never per record. A model version keeps the
:data:`SPAN_S` seconds up to its newest prediction, so an idle model still shows
its last burst; at most :data:`MAX_MODELS` model versions are kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: Seconds of history kept and drawn per model version (up to its newest prediction).
SPAN_S = 300
#: Latencies sampled per second and model version.
SAMPLE = 64
#: Model versions kept (the ones seen first); more are counted in ``overflow``.
MAX_MODELS = 64
#: The seconds "now" is measured over (throughput and latency in the summary row).
RECENT_S = 10

Key = tuple[str, str]


@dataclass
class _Second:
    count: int = 0
    sample: list[float] = field(default_factory=list)

    def add(self, latency_ms: float) -> None:
        if len(self.sample) < SAMPLE:
            self.sample.append(latency_ms)
        else:  # rolling: the newest latencies replace the oldest slots in turn
            self.sample[self.count % SAMPLE] = latency_ms
        self.count += 1


@dataclass
class _Model:
    seconds: dict[int, _Second] = field(default_factory=dict)
    total: int = 0
    newest: int = 0

    def add(self, second: int, latency_ms: float) -> None:
        bucket = self.seconds.get(second)
        if bucket is None:
            if second <= self.newest - SPAN_S:
                self.total += 1
                return  # older than what is drawn: counted, not kept
            bucket = self.seconds[second] = _Second()
            if second > self.newest:
                self.newest = second
                self._prune()
        bucket.add(latency_ms)
        self.total += 1

    def _prune(self) -> None:
        oldest = self.newest - SPAN_S
        if len(self.seconds) > SPAN_S or min(self.seconds) <= oldest:
            for second in [s for s in self.seconds if s <= oldest]:
                del self.seconds[second]


class ModelSeries:
    """Per model version: predictions and latencies by second (see the module doc)."""

    def __init__(self) -> None:
        self._models: dict[Key, _Model] = {}
        #: Predictions of model versions past :data:`MAX_MODELS` (not drawn).
        self.overflow = 0

    def add(self, model: str, version: str, predicted_at: float, latency_ms: float) -> None:
        """Count one prediction (its time as epoch seconds, its total latency)."""
        key = (model, version)
        entry = self._models.get(key)
        if entry is None:
            if len(self._models) >= MAX_MODELS:
                self.overflow += 1
                return
            entry = self._models[key] = _Model()
        entry.add(int(predicted_at), latency_ms)

    def keys(self) -> list[Key]:
        """The model versions seen, sorted."""
        return sorted(self._models)

    def snapshot(self, now: float) -> list[dict[str, Any]]:
        """Per model version: totals, the recent rate and percentiles, and per-second series (JSON-ready).

        ``series`` holds ``t`` (epoch seconds, every second of the span up to the newest
        prediction), ``count`` (predictions that second) and ``p50``/``p99`` (ms; null when
        none). ``rate_per_s``/``p50_ms``/``p99_ms`` are over the :data:`RECENT_S` seconds before ``now``.
        """
        result = []
        current = int(now)
        for (model, version), entry in sorted(self._models.items()):
            if not entry.seconds:
                continue
            first = max(min(entry.seconds), entry.newest - SPAN_S + 1)
            times = list(range(first, entry.newest + 1))
            counts, p50, p99 = [], [], []
            for second in times:
                bucket = entry.seconds.get(second)
                counts.append(bucket.count if bucket else 0)
                low, high = _percentiles(bucket.sample if bucket else [])
                p50.append(low)
                p99.append(high)
            recent = [b for s, b in entry.seconds.items() if current - RECENT_S <= s < current]
            recent_sample = [v for b in recent for v in b.sample]
            low, high = _percentiles(recent_sample)
            result.append(
                {
                    "model": model,
                    "version": version,
                    "total": entry.total,
                    "newest": entry.newest,
                    "rate_per_s": sum(b.count for b in recent) / RECENT_S,
                    "p50_ms": low,
                    "p99_ms": high,
                    "series": {"t": times, "count": counts, "p50": p50, "p99": p99},
                }
            )
        return result


def _percentiles(sample: list[float]) -> tuple[float | None, float | None]:
    # Sorting a few dozen floats in Python beats numpy's per-call overhead, 300 times a snapshot.
    if not sample:
        return None, None
    ordered = sorted(sample)
    return _at(ordered, 0.5), _at(ordered, 0.99)


def _at(ordered: list[float], q: float) -> float:
    """The q-quantile of sorted values, interpolated linearly (numpy's default)."""
    position = q * (len(ordered) - 1)
    below = int(position)
    above = min(below + 1, len(ordered) - 1)
    return round(ordered[below] + (ordered[above] - ordered[below]) * (position - below), 3)
