"""Primary against shadow: how often a shadow version agrees with the version users see.

Reads the predictions of the primary version and the shadow predictions of the
other version (bounded reads up to the end offsets at the start), joins them by
request id, and summarises agreement of the label, the largest difference of the
probabilities, and the compute latency of each. Where labels came for those requests
(on the ``labels`` topic), each side's quality on the same labelled requests:
:mod:`inferstream.serving.labelled_quality`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from inferstream.config import Settings
from inferstream.connectors.kafka.reader import read_bounded
from inferstream.errors import ModelError
from inferstream.schemas.codec import codec_for
from inferstream.schemas.records import Prediction
from inferstream.serving.config import ModelConfig
from inferstream.serving.labelled_quality import LabelledQuality, labelled_quality
from inferstream.serving.repository import ModelRepository


@dataclass(frozen=True)
class Comparison:
    """The joined summary of two versions' predictions of the same requests."""

    model: str
    primary: str
    shadow: str
    primary_count: int
    shadow_count: int
    joined: int
    agreement: float | None  # share of joined requests with the same label
    max_probability_diff: float | None
    primary_compute_ms: tuple[float, float] | None  # p50, p99
    shadow_compute_ms: tuple[float, float] | None
    #: both sides' quality on the labelled requests in both; None when neither version is in the repository
    quality: LabelledQuality | None = None

    def rows(self) -> list[tuple[str, str]]:
        """The summary as (name, value) rows for a table."""

        def pct(v: tuple[float, float] | None) -> str:
            return f"p50 {v[0]:.2f} ms, p99 {v[1]:.2f} ms" if v else "-"

        return [
            ("predictions", f"{self.primary}: {self.primary_count}, {self.shadow} (shadow): {self.shadow_count}"),
            ("requests in both", str(self.joined)),
            ("label agreement", f"{self.agreement:.2%}" if self.agreement is not None else "-"),
            ("max probability difference", f"{self.max_probability_diff:.4f}" if self.max_probability_diff else "-"),
            (f"compute {self.primary}", pct(self.primary_compute_ms)),
            (f"compute {self.shadow}", pct(self.shadow_compute_ms)),
            *self._quality_rows(),
        ]

    def _quality_rows(self) -> list[tuple[str, str]]:
        quality = self.quality
        if quality is None:
            return [("labelled requests in both", "- (neither version is in the model repository)")]
        unusable = f" ({quality.unusable} more with a label that is no class of the model)" if quality.unusable else ""
        metrics = sorted(quality.primary.keys() & quality.shadow.keys())
        return [
            ("labelled requests in both", f"{quality.labelled}{unusable}"),
            *(
                (m, f"v{self.primary}: {quality.primary[m]:.4f}, v{self.shadow}: {quality.shadow[m]:.4f}")
                for m in metrics
            ),
        ]


def _read(settings: Settings, topic: str, model: str, version: str) -> dict[str, Prediction]:
    codec = codec_for(Prediction)
    found: dict[str, Prediction] = {}
    for message in read_bounded(settings, topic, idle_timeout=5.0):
        value = message.value()
        if value is None:
            continue
        prediction = codec.decode(value, headers=message.headers())
        if prediction.model == model and prediction.version == version:
            found[prediction.request_id] = prediction
    return found


def _probabilities(outputs: dict[str, Any]) -> np.ndarray | None:
    values = outputs.get("probabilities")
    if isinstance(values, dict):
        values = [values[k] for k in sorted(values)]
    return np.asarray(values, dtype=np.float64) if isinstance(values, list) else None


def _percentiles(predictions: list[Prediction]) -> tuple[float, float] | None:
    if not predictions:
        return None
    p50, p99 = np.percentile([p.latency.compute_ms for p in predictions], [50, 99])
    return float(p50), float(p99)


def _config(settings: Settings, model: str, versions: tuple[str, ...]) -> ModelConfig | None:
    repository = ModelRepository(settings.models_dir)
    for version in versions:
        try:
            return repository.get(model, version).config
        except ModelError:
            continue
    return None


def compare(settings: Settings, model: str, primary: str, shadow: str) -> Comparison:
    """Join ``model:primary`` predictions with ``model:shadow`` shadow predictions by request id.

    Labels of those requests (the ``labels`` topic) score both sides, as the shadow's
    ``model.toml`` reads them (the primary's when the shadow is not in the repository).
    """
    topics = settings.topics.platform_topics()
    seen = _read(settings, topics["predictions"], model, primary)
    shadowed = _read(settings, topics["predictions-shadow"], model, shadow)
    both = sorted(seen.keys() & shadowed.keys())
    config = _config(settings, model, (shadow, primary))
    agree = sum(1 for r in both if seen[r].outputs.get("label") == shadowed[r].outputs.get("label"))
    diffs = []
    for r in both:
        a, b = _probabilities(seen[r].outputs), _probabilities(shadowed[r].outputs)
        if a is not None and b is not None and a.shape == b.shape:
            diffs.append(float(np.abs(a - b).max()))
    return Comparison(
        model=model,
        primary=primary,
        shadow=shadow,
        primary_count=len(seen),
        shadow_count=len(shadowed),
        joined=len(both),
        agreement=agree / len(both) if both else None,
        max_probability_diff=max(diffs) if diffs else None,
        primary_compute_ms=_percentiles([seen[r] for r in both]),
        shadow_compute_ms=_percentiles([shadowed[r] for r in both]),
        quality=None if config is None else labelled_quality(settings, config, seen, shadowed),
    )
