"""How a drift monitor is declared: pydantic models read from a monitors TOML file or the settings.

A monitors file holds one ``[[monitors]]`` table per monitor::

    [[monitors]]
    name = "breast-cancer-inputs"
    model = "breast-cancer"
    version = "1"                        # optional: every version of the model when absent
    reference = "references/breast-cancer-inputs/v0001"   # optional: the latest version when absent

    [monitors.window]
    kind = "count"                       # or "time" (event time, closed on the lowest watermark)
    size = 1000                          # rows for count windows
    # duration_s = 60                    # seconds for time windows
    # slide = 500                        # optional: overlapping windows (rows or seconds)

    [[monitors.columns]]
    name = "mean_radius"                 # inputs.mean_radius, numerical
    [[monitors.columns]]
    name = "label"
    kind = "prediction"                  # outputs.label
    [[monitors.columns]]
    name = "mean_texture"
    method = "psi"                       # override evidently's automatic choice
    threshold = 0.2

    [monitors.alerting]
    drift_share = 0.5                    # dataset drift when this share of columns drifted
    alert_after = 2                      # alert when 2 ...
    alert_window = 3                     # ... of the last 3 windows drifted
    resolve_after = 2                    # resolved after 2 clean windows in a row
    cooldown_s = 300                     # no second alert for the same monitor within this time
    webhook = "http://127.0.0.1:8080/hooks/drift"

A quality monitor (``type = "quality"``) judges predictions against their labels instead
(:mod:`inferstream.monitoring.quality`), in windows of prediction time::

    [[monitors]]
    name = "breast-cancer-quality"
    type = "quality"
    model = "breast-cancer"

    [monitors.window]
    kind = "time"
    duration_s = 3600

    [monitors.quality]
    task = "classification"              # or "regression"
    prediction = "label"                 # outputs.label: the predicted class (or value)
    probabilities = "probabilities"      # outputs.probabilities: class -> probability (optional)
    min_labels = 100                     # a window is judged once this many of its predictions are labelled
    reference_since = "2026-01-01T00:00:00Z"   # optional labelled reference window: CBPE calibration, max_drop
    reference_until = "2026-01-02T00:00:00Z"
    thresholds = { accuracy = 0.9 }      # degraded below (above for log_loss, ece, mae, rmse)
    max_drop = { f1_macro = 0.05 }       # degraded this much worse than the reference window
"""

from __future__ import annotations

import re
import tomllib
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from inferstream.errors import ConfigError

ColumnKind = Literal["numerical", "categorical", "text", "embedding", "prediction"]
#: Statistics a column can be measured with (``auto``: evidently's default choice, from the reference).
Method = Literal["auto", "wasserstein", "ks", "psi", "jensenshannon", "chisquare", "z", "embedding_distance"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ColumnSpec(_Frozen):
    """One monitored column: where it is in a prediction, what it holds, how it is measured."""

    name: str = Field(min_length=1, description="Column name in reports and alerts.")
    kind: ColumnKind = "numerical"
    field: str | None = Field(
        default=None,
        description="Dotted path in the prediction (default: inputs.<name>; outputs.<name> for predictions).",
    )
    method: Method = "auto"
    threshold: float | None = Field(default=None, gt=0, description="Default: the method's own (evidently's).")

    @property
    def path(self) -> tuple[str, ...]:
        """The dotted path of the value inside a prediction record."""
        if self.field:
            return tuple(self.field.split("."))
        return ("outputs" if self.kind == "prediction" else "inputs", self.name)


class WindowSpec(_Frozen):
    """Tumbling (or, with ``slide``, sliding) windows by row count or by event time."""

    kind: Literal["count", "time"] = "count"
    size: int = Field(default=1000, ge=10, description="Rows per count window.")
    duration_s: float = Field(default=60.0, gt=0, description="Seconds per event-time window.")
    slide: float | None = Field(
        default=None, gt=0, description="Rows (count) or seconds (time) between window starts; default: tumbling."
    )
    allowed_lateness_s: float = Field(default=0.0, ge=0, description="Event time a window waits past its end.")
    idle_partition_s: float = Field(
        default=5.0, gt=0, description="A partition silent this long stops holding the watermark back."
    )
    report_rows: int = Field(default=5000, ge=100, description="Rows of each window kept for its HTML report.")

    @model_validator(mode="after")
    def _slide_fits(self) -> WindowSpec:
        length = self.size if self.kind == "count" else self.duration_s
        if self.slide is not None:
            if self.slide > length:
                raise ValueError(f"window slide {self.slide} is longer than the window ({length})")
            if (length / self.slide) % 1:
                raise ValueError(f"window length {length} must be a whole multiple of the slide {self.slide}")
        return self

    @property
    def step(self) -> float:
        """Distance between window starts (the window length when tumbling)."""
        if self.slide is not None:
            return self.slide
        return float(self.size) if self.kind == "count" else self.duration_s

    @property
    def panes(self) -> int:
        """How many steps make one window (1 when tumbling)."""
        length = self.size if self.kind == "count" else self.duration_s
        return round(length / self.step)


class AlertingSpec(_Frozen):
    """When a window counts as drifted, when an alert opens and clears, and where it goes."""

    drift_share: float = Field(default=0.5, gt=0, le=1, description="Dataset drift at this share of drifted columns.")
    alert_after: int = Field(default=1, ge=1, description="Alert when this many of the last `alert_window` drifted.")
    alert_window: int = Field(default=1, ge=1)
    resolve_after: int = Field(default=1, ge=1, description="Resolved after this many clean windows in a row.")
    cooldown_s: float = Field(default=0.0, ge=0, description="No new alert within this many seconds of the last.")
    critical_share: float = Field(default=0.75, gt=0, le=1, description="Severity critical at this drift share.")
    webhook: str | None = Field(default=None, description="POST each alert and resolution here as JSON.")
    webhook_timeout_s: float = Field(default=5.0, gt=0)
    webhook_attempts: int = Field(default=5, ge=1)

    @field_validator("webhook", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        # A deployment fills the URL from a variable that may be empty: no webhook then.
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _k_of_n(self) -> AlertingSpec:
        if self.alert_after > self.alert_window:
            raise ValueError(f"alert_after ({self.alert_after}) cannot exceed alert_window ({self.alert_window})")
        return self


#: Quality metrics where lower is better (a threshold is a maximum); for the others it is a minimum.
LOWER_IS_BETTER = frozenset({"log_loss", "ece", "mae", "rmse"})
_METRICS = {
    "classification": frozenset({"accuracy", "f1_macro", "roc_auc", "log_loss", "ece"}),
    "regression": frozenset({"mae", "rmse", "r2"}),
}
_PER_CLASS = re.compile(r"^(precision|recall|f1)\[.+\]$")


class QualitySpec(_Frozen):
    """What a quality monitor compares, how much labelling a verdict needs, and when a window is degraded."""

    task: Literal["classification", "regression"]
    prediction: str = Field(default="label", min_length=1, description="outputs.<prediction>: class or value.")
    probabilities: str | None = Field(
        default=None, description="outputs.<probabilities>: class -> probability (classification; enables CBPE)."
    )
    min_labels: int = Field(default=100, ge=1, description="Labelled predictions a window needs for a verdict.")
    horizon_s: float = Field(
        default=24 * 3600, gt=0, description="A window is re-evaluated on new labels until this long after its end."
    )
    poll_s: float = Field(default=5.0, gt=0, description="How often the tables are read for new rows and labels.")
    reference_since: datetime | None = Field(default=None, description="Labelled reference window: from ...")
    reference_until: datetime | None = Field(default=None, description="... until (prediction time).")
    calibrate: bool = Field(default=True, description="Calibrate CBPE's probabilities on the reference window.")
    thresholds: dict[str, float] = Field(default_factory=dict)
    max_drop: dict[str, float] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _rules(self) -> QualitySpec:
        for metric in (*self.thresholds, *self.max_drop):
            known = metric in _METRICS[self.task] or (self.task == "classification" and _PER_CLASS.match(metric))
            if not known:
                names = ", ".join(sorted(_METRICS[self.task]))
                per_class = " (or precision/recall/f1[CLASS])" if self.task == "classification" else ""
                raise ValueError(f"unknown {self.task} metric {metric!r}: use {names}{per_class}")
        if any(v < 0 for v in self.max_drop.values()):
            raise ValueError("max_drop values are how much worse a metric may get: they cannot be negative")
        if not self.thresholds and not self.max_drop:
            raise ValueError("a quality monitor needs thresholds or max_drop (against the reference window)")
        has_reference = self.reference_since is not None and self.reference_until is not None
        if (self.reference_since is None) != (self.reference_until is None):
            raise ValueError("give both reference_since and reference_until, or neither")
        if self.max_drop and not has_reference:
            raise ValueError("max_drop compares with the reference window: set reference_since and reference_until")
        if has_reference and self.reference_since >= self.reference_until:  # type: ignore[operator]
            raise ValueError("reference_since must be before reference_until")
        return self

    @property
    def has_reference(self) -> bool:
        """Whether a labelled reference window is declared."""
        return self.reference_since is not None and self.reference_until is not None


class MonitorSpec(_Frozen):
    """One monitor: a model's predictions, the columns (drift) or labels (quality) to watch, windows, alerting."""

    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
    type: Literal["drift", "quality"] = "drift"
    model: str = Field(min_length=1)
    version: str | None = None
    reference: Path | None = Field(default=None, description="Reference directory (default: the latest version).")
    columns: list[ColumnSpec] = Field(default_factory=list)
    quality: QualitySpec | None = None
    window: WindowSpec = WindowSpec()
    alerting: AlertingSpec = AlertingSpec()

    @model_validator(mode="after")
    def _unique_columns(self) -> MonitorSpec:
        if self.type == "drift" and not self.columns:
            raise ValueError("a drift monitor needs at least one [[monitors.columns]]")
        if self.type == "quality":
            if self.quality is None:
                raise ValueError('a quality monitor needs a [monitors.quality] table (task = "classification", ...)')
            if self.window.kind != "time":
                raise ValueError('a quality monitor windows by prediction time: set window.kind = "time"')
        names = [c.name for c in self.columns]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"column names must be unique, repeated: {', '.join(duplicates)}")
        return self

    @property
    def ref(self) -> str:
        """``model`` or ``model:version``."""
        return f"{self.model}:{self.version}" if self.version else self.model


class MonitorsFile(_Frozen):
    """The content of a monitors TOML file."""

    monitors: list[MonitorSpec] = Field(default_factory=list)


def load_monitors(path: Path) -> list[MonitorSpec]:
    """The monitors declared in a TOML file (``[[monitors]]`` tables)."""
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"monitors file {path} does not exist; set monitoring.monitors_file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"monitors file {path} is not valid TOML: {exc}") from None
    try:
        return MonitorsFile.model_validate(data).monitors
    except ValidationError as exc:
        raise ConfigError(f"monitors file {path} is invalid: {exc}") from None
