"""The slowly changing views of the platform, read through the SDK every few seconds (blocking).

Consumer groups with their lag per partition (and which model versions have
workers: the groups that read request topics), the latest dead letters with their
reasons, the routes with their weights, and the monitors' status files. Each is
JSON-ready and bounded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from inferstream.client import Client
from inferstream.config import Settings
from inferstream.connectors.kafka.admin import TopicAdmin
from inferstream.connectors.kafka.dlq import from_message
from inferstream.connectors.kafka.groups import GroupInfo
from inferstream.gateway.ui._history import newest_records
from inferstream.monitoring.reports import read_status

#: Groups shown (the platform's, under the topic prefix).
MAX_GROUPS = 100
#: Dead letters shown, newest first (read from the end of each partition).
DEAD_LETTERS = 20
#: How much of a dead letter's error message is shown.
MESSAGE_CHARS = 500


def groups(client: Client) -> list[GroupInfo]:
    """The platform's consumer groups, described (lag per partition)."""
    return client.groups.describe_many(client.groups.list()[:MAX_GROUPS])


def lag_view(infos: list[GroupInfo]) -> list[dict[str, Any]]:
    """Per group: state, members, total lag and per partition topic, partition, committed, log end, lag."""
    return [
        {
            "group": info.group,
            "state": info.state,
            "members": info.members,
            "lag": info.lag,
            "partitions": [
                {"topic": p.topic, "partition": p.partition, "lag": p.lag, "committed": p.committed, "end": p.log_end}
                for p in info.partitions
            ],
        }
        for info in infos
    ]


def served(settings: Settings, infos: list[GroupInfo]) -> list[dict[str, Any]]:
    """The model versions with a workers' group, named by the request topics it reads: members, lag, committed.

    Shadow versions read their primary's request topic in groups of their own: they
    show in the lag table, not here.
    """
    prefix = settings.topics.prefix + "requests."
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for info in infos:
        if not info.group.startswith(settings.topics.group("serve-")):
            continue
        for partition in info.partitions:
            model, dot, version = partition.topic.removeprefix(prefix).rpartition(".")
            if not partition.topic.startswith(prefix) or not dot:
                continue
            entry = found.setdefault(
                (model, version),
                {
                    "model": model,
                    "version": version,
                    "workers": 0,
                    "lag": 0,
                    "committed": 0,
                    "group": info.group,
                },
            )
            entry["workers"] = max(entry["workers"], info.members)
            entry["lag"] += partition.lag or 0
            entry["committed"] += partition.committed or 0
    return [found[key] for key in sorted(found)]


def dead_letters(settings: Settings) -> dict[str, Any]:
    """How many dead letters the topic holds, and the newest :data:`DEAD_LETTERS` with their reasons."""
    topic = settings.topics.platform_topics()["dead-letters"]
    total = TopicAdmin(settings).describe(topic, with_config=False).messages
    letters = [from_message(message) for message in newest_records(settings, topic, DEAD_LETTERS * 4, None)]
    letters.sort(key=lambda letter: letter.event_time, reverse=True)
    return {
        "total": total,
        "latest": [
            {
                "time": letter.event_time.isoformat(),
                "stage": letter.stage,
                "source_topic": letter.source_topic,
                "error_class": letter.error_class,
                "message": letter.error_message[:MESSAGE_CHARS],
            }
            for letter in letters[:DEAD_LETTERS]
        ],
    }


def routes(client: Client) -> list[dict[str, Any]]:
    """Every model's route: versions with weights (and shares), shadows."""
    result = []
    for model, route in sorted(client.routes.all().items()):
        weights = sum(v.weight for v in route.versions)
        result.append(
            {
                "model": model,
                "versions": [
                    {"version": v.version, "weight": v.weight, "share": v.weight / weights if weights else 0.0}
                    for v in route.versions
                ],
                "shadow": list(route.shadow),
                "since": route.event_time.isoformat(),
            }
        )
    return result


def monitor_statuses(state_dir: Path) -> list[dict[str, Any]]:
    """The status files of the monitors that write under this state directory."""
    root = state_dir / "monitors"
    if not root.is_dir():
        return []
    statuses = []
    for directory in sorted(root.iterdir())[:64]:
        try:
            status = read_status(directory)
        except (OSError, ValueError):  # being replaced, or half-written by an older monitor
            continue
        if status is not None:
            statuses.append(status)
    return statuses
