"""Per-window drift statistics from small mergeable sketches, measured against a reference profile.

A window never keeps its rows for the statistics. Each column is folded into a
sketch shaped by the reference, taken once when the monitor starts:

- numerical columns: counts of the window's values against the reference's bin
  edges (its quantiles, or every distinct value of a small reference), both
  ``< edge`` and ``<= edge``, plus the count and sum of the values outside the
  reference's range;
- categorical columns (and numerical ones with few distinct values): counts per
  value;
- embedding columns: the vector sum (the centroid).

Sketches of panes add up, so a sliding window costs no more than a tumbling one.
From a sketch come the statistics evidently 0.7 would choose on the same data
(``choose_method`` follows ``evidently.legacy.calculations.stattests.registry``):

=================  ====================================================  ==========================
method             computed from                                          agrees with evidently
=================  ====================================================  ==========================
``jensenshannon``  counts per value                                       exactly
``chisquare``      counts per value (``scipy.stats.chisquare``)           exactly
``z``              counts per value (two-proportion z-test)               exactly
``ks``             the empirical CDFs at every edge (exact D when the     exact D; p-value from
                   edges are every distinct reference value)              Smirnov's distribution
``wasserstein``    ∫|F_ref − F_cur| between the reference's quantile     exactly, but in spans
                   edges from per-span sums (exact where the CDFs do      where the CDFs cross
                   not cross), normed by the reference's std
``psi``            the reference's deciles (numerical) or values          by definition, not bins
``embedding_distance``  euclidean distance of the centroids, threshold    evidently's ``distance``
                   the 95th percentile of the reference's own (bootstrap) (bootstrap) method
=================  ====================================================  ==========================

Text columns are measured through a descriptor, their length in characters
(evidently's own text drift trains a classifier per window, which no stream can
afford).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import stats as scipy_stats
from scipy.spatial import distance as scipy_distance

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: Quantile bins of a large reference's numerical columns.
QUANTILE_BINS = 200
#: A reference up to this size keeps every distinct value as an edge (evidently's small-sample rules apply).
SMALL_REFERENCE = 1000
#: Numerical columns with at most this many distinct reference values are also counted per value.
FEW_VALUES = 20
#: Distinct unseen values counted one by one in a window; the rest share one bucket.
MAX_UNSEEN = 1000
_OTHER = "__other__"

DEFAULT_THRESHOLDS = {
    "wasserstein": 0.1,
    "ks": 0.05,
    "psi": 0.1,
    "jensenshannon": 0.1,
    "chisquare": 0.05,
    "z": 0.05,
    "embedding_distance": 0.2,
}
#: Methods whose score is a p-value: drift when it is at or under the threshold.
P_VALUE_METHODS = frozenset({"ks", "chisquare", "z"})
_COUNTING = frozenset({"jensenshannon", "chisquare", "z"})


def choose_method(kind: str, values: npt.NDArray[Any]) -> str:
    """The statistic evidently 0.7 picks by default for a column, from its reference values.

    ``kind`` is ``numerical`` or ``categorical`` (text is measured as numerical lengths,
    a prediction as whichever its values are). Chosen once, from the reference alone,
    so every window of a monitor is measured the same way.
    """
    n = len(values)
    unique = len(np.unique(values)) if n else 0
    if kind == "embedding":
        return "embedding_distance"
    if n <= SMALL_REFERENCE:
        if kind == "numerical" and unique > 5:
            return "ks"
        return "chisquare" if unique > 2 else "z"
    if kind == "numerical" and unique > 5:
        return "wasserstein"
    return "jensenshannon"


# -- reference profiles ----------------------------------------------------------------


@dataclass
class ColumnProfile:
    """What a window of one column is measured against, derived once from the reference."""

    name: str
    kind: str  # numerical | categorical | embedding (text and prediction resolved to one of these)
    method: str
    threshold: float
    count: int
    # numerical: bin edges and the reference's CDF at them (share <= edge, share < edge)
    edges: FloatArray | None = None
    ref_le: FloatArray | None = None
    ref_lt: FloatArray | None = None
    ref_area: FloatArray | None = None  # ∫ F_ref over each span between two edges
    std: float = 0.0
    # counted per value (categorical, or numerical with few distinct values)
    categories: list[Any] | None = None
    ref_counts: IntArray | None = None
    # embedding: centroid and the bootstrap null distance at size null_size
    centroid: FloatArray | None = None
    null_distance: float = 0.0
    null_size: int = 0

    @property
    def counted(self) -> bool:
        """True when windows count this column per value (not against bin edges)."""
        return self.categories is not None and (self.kind == "categorical" or self.method in _COUNTING)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready form (``from_json`` reads it back)."""
        out: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind,
            "method": self.method,
            "threshold": self.threshold,
            "count": self.count,
            "std": self.std,
            "null_distance": self.null_distance,
            "null_size": self.null_size,
        }
        for key in ("edges", "ref_le", "ref_lt", "ref_area", "centroid"):
            array = getattr(self, key)
            out[key] = None if array is None else array.tolist()
        out["categories"] = self.categories
        out["ref_counts"] = None if self.ref_counts is None else self.ref_counts.tolist()
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ColumnProfile:
        """Read back what ``to_json`` wrote."""

        def floats(key: str) -> FloatArray | None:
            value = data.get(key)
            return None if value is None else np.asarray(value, dtype=np.float64)

        return cls(
            name=data["name"],
            kind=data["kind"],
            method=data["method"],
            threshold=float(data["threshold"]),
            count=int(data["count"]),
            edges=floats("edges"),
            ref_le=floats("ref_le"),
            ref_lt=floats("ref_lt"),
            ref_area=floats("ref_area"),
            std=float(data.get("std", 0.0)),
            categories=data.get("categories"),
            ref_counts=None if data.get("ref_counts") is None else np.asarray(data["ref_counts"], dtype=np.int64),
            centroid=floats("centroid"),
            null_distance=float(data.get("null_distance", 0.0)),
            null_size=int(data.get("null_size", 0)),
        )

    def with_method(self, method: str, threshold: float | None) -> ColumnProfile:
        """This profile measured with another method or threshold (a monitor's override)."""
        chosen = self.method if method == "auto" else method
        if chosen in _COUNTING and self.categories is None:
            raise ValueError(
                f"column {self.name}: {chosen} needs a column with few distinct values; "
                f"the reference has too many (use wasserstein, ks or psi)"
            )
        if chosen in ("wasserstein", "ks") and self.edges is None:
            raise ValueError(f"column {self.name}: {chosen} needs a numerical column")
        value = threshold if threshold is not None else DEFAULT_THRESHOLDS[chosen]
        copy = ColumnProfile(**{**self.__dict__, "method": chosen, "threshold": float(value)})
        return copy


def profile_column(
    name: str,
    kind: str,
    values: npt.NDArray[Any],
    *,
    method: str = "auto",
    threshold: float | None = None,
    bins: int = QUANTILE_BINS,
) -> ColumnProfile:
    """The profile of one reference column (missing and NaN values already removed).

    ``values`` is 1-D floats for numerical columns, 1-D objects for categorical ones,
    2-D floats (rows × dims) for embeddings.
    """
    if len(values) == 0:
        raise ValueError(f"reference column {name} has no usable values")
    if kind == "embedding":
        return _profile_embedding(name, np.asarray(values, dtype=np.float64), threshold)
    chosen = choose_method(kind, values) if method == "auto" else method
    profile = ColumnProfile(
        name=name,
        kind=kind,
        method=chosen,
        threshold=float(threshold if threshold is not None else DEFAULT_THRESHOLDS[chosen]),
        count=len(values),
    )
    unique, counts = np.unique(values, return_counts=True)
    if kind == "categorical" or len(unique) <= FEW_VALUES:
        profile.categories = [_plain(v) for v in unique.tolist()]
        profile.ref_counts = counts.astype(np.int64)
    if kind == "numerical":
        numbers = np.asarray(values, dtype=np.float64)
        if len(numbers) <= SMALL_REFERENCE:
            edges = unique.astype(np.float64)
        else:
            # Denser in the tails, where a shifted window's CDF most often crosses the reference's.
            tails = np.array([1e-4, 3e-4, 1e-3, 2e-3, 3e-3])
            levels = np.concatenate([np.linspace(0.0, 1.0, bins + 1), tails, 1.0 - tails])
            edges = np.unique(np.quantile(numbers, levels))
        ordered = np.sort(numbers)
        profile.edges = edges
        profile.ref_le = np.searchsorted(ordered, edges, side="right") / len(numbers)
        profile.ref_lt = np.searchsorted(ordered, edges, side="left") / len(numbers)
        reference = Sketch(n=len(numbers))
        reference.by_le, reference.by_lt, reference.bin_sum = _edge_counts(edges, numbers)
        profile.ref_area = _areas(profile, reference)
        profile.std = float(np.std(numbers))
    return profile.with_method(chosen, threshold)


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _profile_embedding(name: str, vectors: FloatArray, threshold: float | None) -> ColumnProfile:
    centroid = vectors.mean(axis=0)
    # evidently's bootstrap: centroid distances between two resamples of the reference.
    size = max(min(len(vectors) // 2, 1000), 1)
    rng = np.random.default_rng(0)
    distances = [
        float(
            np.linalg.norm(
                vectors[rng.integers(0, len(vectors), size)].mean(axis=0)
                - vectors[rng.integers(0, len(vectors), size)].mean(axis=0)
            )
        )
        for _ in range(100)
    ]
    return ColumnProfile(
        name=name,
        kind="embedding",
        method="embedding_distance",
        threshold=float(threshold) if threshold is not None else 0.0,
        count=len(vectors),
        centroid=centroid,
        null_distance=float(np.percentile(distances, 95)),
        null_size=size,
    )


# -- window sketches ---------------------------------------------------------------------


@dataclass
class Sketch:
    """One column of one window (or pane): mergeable counts shaped by the column's profile."""

    n: int = 0
    # numerical against edges: counts by the number of edges < value (by_le: F(edge) is the
    # share of values <= edge) and of edges <= value (by_lt), and the values' sum by the latter
    by_le: IntArray | None = None
    by_lt: IntArray | None = None
    bin_sum: FloatArray | None = None
    # counted per value
    counts: dict[Any, int] = field(default_factory=dict)
    # embeddings
    vector_sum: FloatArray | None = None

    def merge(self, other: Sketch) -> None:
        """Add another sketch of the same column (a pane) into this one."""
        self.n += other.n
        if other.by_le is not None and other.by_lt is not None and other.bin_sum is not None:
            if self.by_le is None or self.by_lt is None or self.bin_sum is None:
                self.by_le, self.by_lt, self.bin_sum = other.by_le.copy(), other.by_lt.copy(), other.bin_sum.copy()
            else:
                self.by_le += other.by_le
                self.by_lt += other.by_lt
                self.bin_sum += other.bin_sum
        for key, count in other.counts.items():
            self._count(key, count)
        if other.vector_sum is not None:
            self.vector_sum = other.vector_sum.copy() if self.vector_sum is None else self.vector_sum + other.vector_sum

    def _count(self, key: Any, count: int) -> None:
        if key in self.counts or len(self.counts) < MAX_UNSEEN:
            self.counts[key] = self.counts.get(key, 0) + count
        else:
            self.counts[_OTHER] = self.counts.get(_OTHER, 0) + count

    def add(self, profile: ColumnProfile, values: npt.NDArray[Any]) -> None:
        """Fold clean values of the column into the sketch (vectorised)."""
        if len(values) == 0:
            return
        self.n += len(values)
        if profile.kind == "embedding":
            total = np.asarray(values, dtype=np.float64).sum(axis=0)
            self.vector_sum = total if self.vector_sum is None else self.vector_sum + total
            return
        if profile.counted:
            unique, counts = np.unique(values, return_counts=True)
            for key, count in zip(unique.tolist(), counts.tolist(), strict=True):
                self._count(key, int(count))
            return
        assert profile.edges is not None
        by_le, by_lt, bin_sum = _edge_counts(profile.edges, np.asarray(values, dtype=np.float64))
        if self.by_le is None or self.by_lt is None or self.bin_sum is None:
            self.by_le, self.by_lt, self.bin_sum = by_le, by_lt, bin_sum
        else:
            self.by_le += by_le
            self.by_lt += by_lt
            self.bin_sum += bin_sum


def _edge_counts(edges: FloatArray, numbers: FloatArray) -> tuple[IntArray, IntArray, FloatArray]:
    index_le = np.searchsorted(edges, numbers, side="left")  # edges < value
    index_lt = np.searchsorted(edges, numbers, side="right")  # edges <= value
    size = len(edges) + 1
    return (
        np.bincount(index_le, minlength=size).astype(np.int64),
        np.bincount(index_lt, minlength=size).astype(np.int64),
        np.asarray(np.bincount(index_lt, weights=numbers, minlength=size), dtype=np.float64),
    )


# -- statistics --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Score:
    """A column's statistic in one window and whether it means drift."""

    method: str
    score: float
    threshold: float
    drifted: bool


def score(profile: ColumnProfile, sketch: Sketch) -> Score | None:
    """The column's drift statistic for a window (None when the window has no usable values)."""
    if sketch.n == 0:
        return None
    method = profile.method
    if method == "embedding_distance":
        value, threshold = _embedding_distance(profile, sketch)
        return Score(method, value, threshold, value > threshold)
    if profile.counted:
        keys, ref, cur = _aligned_counts(profile, sketch)
        value = _counted_statistic(method, keys, ref, cur)
    elif method == "wasserstein":
        value = _wasserstein(profile, sketch)
    elif method == "ks":
        value = _ks(profile, sketch)
    elif method == "psi":
        value = _psi_binned(profile, sketch)
    else:
        raise ValueError(f"column {profile.name}: method {method} needs per-value counts")
    if method == "ks":
        drifted = value <= profile.threshold
    elif method in P_VALUE_METHODS:  # evidently's chi-square and z tests: p < threshold
        drifted = value < profile.threshold
    else:
        drifted = value >= profile.threshold
    return Score(method, float(value), profile.threshold, bool(drifted))


def _aligned_counts(profile: ColumnProfile, sketch: Sketch) -> tuple[list[Any], FloatArray, FloatArray]:
    """The reference's and the window's counts over the union of their values."""
    assert profile.categories is not None
    assert profile.ref_counts is not None
    keys = [_key(v) for v in profile.categories]
    position = {k: i for i, k in enumerate(keys)}
    for key in sketch.counts:
        if _key(key) not in position:
            position[_key(key)] = len(keys)
            keys.append(_key(key))
    ref = np.zeros(len(keys))
    ref[: len(profile.ref_counts)] = profile.ref_counts
    cur = np.zeros(len(keys))
    for key, count in sketch.counts.items():
        cur[position[_key(key)]] += count
    return keys, ref, cur


def _key(value: Any) -> Any:
    # 1 and 1.0 are one category, as in pandas' value_counts.
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


def _counted_statistic(method: str, keys: list[Any], ref: FloatArray, cur: FloatArray) -> float:
    n_ref, n_cur = ref.sum(), cur.sum()
    if method == "jensenshannon":
        return float(scipy_distance.jensenshannon(ref / n_ref, cur / n_cur))
    if method == "chisquare":
        expected = ref * (n_cur / n_ref)
        return float(scipy_stats.chisquare(cur, expected)[1])
    if method == "z":
        return _z_test(keys, ref, cur)
    if method == "psi":
        return _psi(ref / n_ref, cur / n_cur)
    raise ValueError(f"unknown method {method}")


def _z_test(keys: list[Any], ref: FloatArray, cur: FloatArray) -> float:
    """evidently's two-proportion z-test: the smallest value against all the others."""
    if len(keys) <= 1:
        return 1.0
    try:
        first = keys.index(min(keys))
    except TypeError:  # values of mixed types do not sort
        first = 0
    n1, n2 = ref.sum(), cur.sum()
    p1 = 1.0 - ref[first] / n1
    p2 = 1.0 - cur[first] / n2
    pooled = (p1 * n1 + p2 * n2) / (n1 + n2)
    spread = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if spread == 0:
        return 1.0
    z = (p1 - p2) / spread
    return float(2 * (1 - scipy_stats.norm.cdf(abs(z))))


def _psi(ref: FloatArray, cur: FloatArray) -> float:
    # evidently's zero filling, so an empty bin does not make PSI infinite.
    ref, cur = ref.copy(), cur.copy()
    for shares in (ref, cur):
        smallest = shares[shares > 0].min()
        np.place(shares, shares == 0, smallest / 10**6 if smallest <= 0.0001 else 0.0001)
    return float(np.sum((ref - cur) * np.log(ref / cur)))


def _cdfs(profile: ColumnProfile, sketch: Sketch) -> tuple[FloatArray, FloatArray]:
    """The window's CDF at each edge: share <= edge, share < edge."""
    assert sketch.by_le is not None
    assert sketch.by_lt is not None
    n = float(sketch.n)
    cur_le = np.cumsum(sketch.by_le)[:-1] / n
    cur_lt = np.cumsum(sketch.by_lt)[:-1] / n
    return cur_le, cur_lt


def _areas(profile: ColumnProfile, sketch: Sketch) -> FloatArray:
    """∫ F over each span [edge_j, edge_j+1), exact: F(edge_j) × width + Σ (edge_j+1 − v) / n."""
    assert profile.edges is not None
    assert sketch.by_lt is not None
    assert sketch.bin_sum is not None
    edges = profile.edges
    n = float(sketch.n)
    below = np.cumsum(sketch.by_lt)[:-1]  # values < edge_j
    inner_counts = sketch.by_lt[1:-1]  # values in [edge_j, edge_j+1)
    inner_sums = sketch.bin_sum[1:-1]
    return np.asarray((below[:-1] * np.diff(edges) + inner_counts * edges[1:] - inner_sums) / n, dtype=np.float64)


def _wasserstein(profile: ColumnProfile, sketch: Sketch) -> float:
    """∫|F_ref − F_cur| over the line, normed by the reference's standard deviation."""
    assert profile.edges is not None
    assert profile.ref_le is not None
    assert profile.ref_lt is not None
    assert profile.ref_area is not None
    if sketch.by_lt is None or sketch.bin_sum is None:
        return 0.0
    edges = profile.edges
    n = float(sketch.n)
    # Outside the reference's range F_ref is 0 (below) or 1 (above): exact from the sums.
    total = (sketch.by_lt[0] * edges[0] - sketch.bin_sum[0]) / n + (
        sketch.bin_sum[-1] - sketch.by_lt[-1] * edges[-1]
    ) / n
    if len(edges) > 1:
        cur_le, cur_lt = _cdfs(profile, sketch)
        # Where the CDFs do not cross inside a span, |∫F_ref − ∫F_cur| is exact; where they
        # cross, both are taken linear across the span.
        d0 = profile.ref_le[:-1] - cur_le[:-1]
        d1 = profile.ref_lt[1:] - cur_lt[1:]
        exact = np.abs(profile.ref_area - _areas(profile, sketch))
        a0, a1 = np.abs(d0), np.abs(d1)
        with np.errstate(divide="ignore", invalid="ignore"):
            crossing = np.diff(edges) * np.where(a0 + a1 > 0, (d0 * d0 + d1 * d1) / (2 * (a0 + a1)), 0.0)
        total += float(np.sum(np.where(d0 * d1 >= 0, exact, crossing)))
    return float(total) / max(profile.std, 0.001)


def _ks(profile: ColumnProfile, sketch: Sketch) -> float:
    assert profile.ref_le is not None
    assert profile.ref_lt is not None
    cur_le, cur_lt = _cdfs(profile, sketch)
    # Both CDFs are steps; the supremum of their gap is at an edge or just before one.
    gaps = np.concatenate([np.abs(profile.ref_le - cur_le), np.abs(profile.ref_lt - cur_lt)])
    d = float(gaps.max()) if len(gaps) else 0.0
    n, m = sorted((float(profile.count), float(sketch.n)), reverse=True)
    return float(scipy_stats.kstwo.sf(d, round(n * m / (n + m))))


def _psi_binned(profile: ColumnProfile, sketch: Sketch, bins: int = 10) -> float:
    """PSI over the reference's deciles (coarsened from its quantile edges)."""
    assert profile.edges is not None
    assert profile.ref_lt is not None
    _, cur_lt = _cdfs(profile, sketch)
    cuts = np.unique(np.searchsorted(profile.ref_lt, np.linspace(0, 1, bins + 1)[1:-1]))
    ref_cdf = np.concatenate([[0.0], profile.ref_lt[cuts], [1.0]])
    cur_cdf = np.concatenate([[0.0], cur_lt[cuts], [1.0]])
    return _psi(np.diff(ref_cdf), np.diff(cur_cdf))


def _embedding_distance(profile: ColumnProfile, sketch: Sketch) -> tuple[float, float]:
    assert profile.centroid is not None
    assert sketch.vector_sum is not None
    centroid = sketch.vector_sum / sketch.n
    value = float(np.linalg.norm(centroid - profile.centroid))
    if profile.threshold > 0:
        return value, profile.threshold
    # The bootstrap null scales with the standard error of two centroids.
    null_n = profile.null_size
    scale = math.sqrt((1 / sketch.n + 1 / profile.count) / (2 / null_n)) if null_n else 1.0
    return value, profile.null_distance * scale


def sketch_column(profile: ColumnProfile, values: npt.NDArray[Any]) -> Sketch:
    """A sketch of one batch of clean values."""
    sketch = Sketch()
    sketch.add(profile, values)
    return sketch


def merge_all(sketches: Sequence[Sketch]) -> Sketch:
    """The sum of several sketches of one column."""
    total = Sketch()
    for sketch in sketches:
        total.merge(sketch)
    return total
