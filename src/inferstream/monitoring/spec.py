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
"""

from __future__ import annotations

import tomllib
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


class MonitorSpec(_Frozen):
    """One drift monitor: a model's predictions, the columns to watch, windows and alerting."""

    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
    model: str = Field(min_length=1)
    version: str | None = None
    reference: Path | None = Field(default=None, description="Reference directory (default: the latest version).")
    columns: list[ColumnSpec] = Field(min_length=1)
    window: WindowSpec = WindowSpec()
    alerting: AlertingSpec = AlertingSpec()

    @model_validator(mode="after")
    def _unique_columns(self) -> MonitorSpec:
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
