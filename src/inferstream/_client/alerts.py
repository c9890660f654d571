"""Drift alerts as they arrive, from the ``drift-alerts`` topic (``Client.alerts``)."""

from __future__ import annotations

from collections.abc import Iterator

from inferstream._client.core import Core
from inferstream._client.subscribe import open_subscription
from inferstream.schemas.records import DriftAlert


def alerts(
    core: Core,
    *,
    monitor: str | None = None,
    from_beginning: bool = False,
    group: str | None = None,
    idle_timeout: float | None = None,
    max_records: int | None = None,
) -> Iterator[DriftAlert]:
    """Drift alerts as they arrive (of one monitor when given); a replayed window's repeat is dropped."""
    # Imported on use: the monitoring package pulls in scipy, which the SDK need not pay for.
    from inferstream.monitoring.alerts import unique_alerts

    with open_subscription(
        core, "drift-alerts", group, from_beginning, None, idle_timeout, True, "drift-alert", False
    ) as stream:
        yield from unique_alerts((m.record for m in stream), monitor=monitor, max_records=max_records)


__all__ = ["alerts"]
