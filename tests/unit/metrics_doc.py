"""docs/metrics.md read as data: every metric's type, labels and exporting processes.

Shared by the tests that hold code (``test_metrics_catalog.py``) and the compose stack's
Prometheus rules and Grafana dashboard (``test_grafana_prometheus.py``) to that list.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import NamedTuple

DOC = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"
ROW = re.compile(r"^\| `(inferstream_\w+)` \| (\w+) \|([^|]*)\| [^|]+ \| ([^|]+) \|$", re.M)
#: The processes the "exported by" column names (`every process` is all of them).
PROCESSES = frozenset({"serve", "supervisor", "ingest", "index", "table", "monitor", "gateway"})


class Documented(NamedTuple):
    """One row of docs/metrics.md."""

    kind: str
    labels: tuple[str, ...]
    processes: set[str]


def documented_metrics() -> dict[str, Documented]:
    """Every metric docs/metrics.md lists, by its exported name."""
    text = DOC.read_text()
    found = ROW.findall(text)
    # A row the pattern does not read would drop out of every check unseen.
    assert len(found) == text.count("\n| `inferstream_"), f"a metric row of {DOC.name} is not in the table's shape"
    rows: dict[str, Documented] = {}
    for name, kind, labels, where in found:
        assert name not in rows, f"{name} is listed twice in {DOC.name}"
        processes = set(PROCESSES) if where.strip() == "every process" else {p.strip() for p in where.split(",")}
        assert processes <= PROCESSES, f"{name}: unknown processes {processes - PROCESSES}"
        rows[name] = Documented(kind, tuple(re.findall(r"`(\w+)`", labels)), processes)
    return rows
