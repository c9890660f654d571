"""What a quality monitor reads: its model's rows of the inference table with their labels, and its reference."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from inferstream.errors import ConfigError
from inferstream.monitoring.quality import QualityReference, reference_of
from inferstream.monitoring.quality_rows import COLUMNS, Rows, decode
from inferstream.monitoring.spec import MonitorSpec
from inferstream.monitoring.table import read_table


def read_rows(root: Path, spec: MonitorSpec, *, since: datetime | None = None, until: datetime | None = None) -> Rows:
    """The monitor's model's rows (of its version, when it names one) from ``since``, labels joined on read."""
    assert spec.quality is not None
    try:
        table = read_table(root, model=spec.model, version=spec.version, since=since, until=until, columns=COLUMNS)
    except ConfigError:  # no table yet: the table sink has not written its first file
        return Rows.empty(spec.quality)
    return decode(table, spec.quality)


def load_reference(root: Path, spec: MonitorSpec) -> tuple[QualityReference, Rows | None]:
    """The reference window's metrics and calibration, and its rows (none without a reference window).

    ConfigError when the window holds fewer labelled predictions than ``min_labels``.
    """
    quality = spec.quality
    assert quality is not None
    if not quality.has_reference:
        return QualityReference(), None
    rows = read_rows(root, spec, since=quality.reference_since, until=quality.reference_until)
    reference = reference_of(rows, spec)
    if reference.count < quality.min_labels:
        raise ConfigError(
            f"monitor {spec.name}: the reference window {quality.reference_since}..{quality.reference_until} "
            f"holds {reference.count} labelled predictions of {spec.ref} in {root}, fewer than min_labels "
            f"({quality.min_labels}): label it, or choose another window"
        )
    return reference, rows
