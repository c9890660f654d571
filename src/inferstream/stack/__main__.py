"""``python -m inferstream.stack fetch``: resolve the local stack's jars ahead of time.

CI runs this before the tests so a slow or failing download shows as its own step.
It depends on nothing but the stack package and the settings.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from inferstream.config import Settings
from inferstream.errors import InferstreamError
from inferstream.stack.kafka import KafkaServer


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the command; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m inferstream.stack")
    commands = parser.add_subparsers(dest="command", required=True)
    fetch = commands.add_parser("fetch", help="fetch the Kafka jars into the jar cache")
    fetch.add_argument("--state-dir", type=Path, help="state directory (default: settings.state_dir)")
    fetch.add_argument("--version", help="Kafka version (default: settings.stack.kafka_version)")
    fetch.add_argument(
        "--lib-dir",
        type=Path,
        help="where the jars go (default: $INFERSTREAM_KAFKA_LIB or the cache)",
    )
    fetch.add_argument(
        "--elasticsearch",
        action="store_true",
        help="also fetch and unpack the Elasticsearch distribution (elasticsearch.local.version)",
    )
    args = parser.parse_args(argv)

    try:
        overrides: dict[str, Any] = {}
        if args.state_dir is not None:
            overrides["state_dir"] = args.state_dir
        if args.version is not None:
            overrides["stack"] = {"kafka_version": args.version}
        server = KafkaServer.from_settings(Settings.load(**overrides), lib_dir=args.lib_dir)
        started = time.monotonic()
        already = server.fetched
        lib_dir = server.fetch()
    except InferstreamError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    jars = sum(1 for _ in lib_dir.glob("*.jar"))
    how = "already there" if already else f"fetched in {time.monotonic() - started:.1f}s"
    print(f"Kafka {server.version}: {jars} jars in {lib_dir} ({how})")
    if args.elasticsearch:
        from inferstream.stack.elasticsearch import ElasticsearchServer

        try:
            search = ElasticsearchServer.from_settings(Settings.load(**overrides))
            started = time.monotonic()
            already = search.fetched
            dist = search.fetch()
        except InferstreamError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        how = "already there" if already else f"fetched in {time.monotonic() - started:.1f}s"
        print(f"Elasticsearch {search.version}: {dist} ({how})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
