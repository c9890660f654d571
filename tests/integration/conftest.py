"""The integration harness: a real Kafka broker per test session, and no skips.

The broker is a single-node KRaft cluster started by :class:`inferstream.stack.KafkaServer`
on free ports, with its data in a temporary directory and its jars from the repository's
cache (``.inferstream/cache``, or ``$INFERSTREAM_KAFKA_LIB``). Set
``INFERSTREAM_TEST_BOOTSTRAP=host:port`` to run the tests against a broker of your own.

An integration test that is skipped fails instead: a green run means every test talked
to the real thing.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from inferstream.config import Settings
from inferstream.stack import KafkaServer
from inferstream.stack.kafka import KAFKA_LIB_ENV
from inferstream.stack.testing import Broker, SearchServer, ephemeral_kafka, throwaway_elasticsearch

REPO_ROOT = Path(__file__).resolve().parents[2]
EXTERNAL_BOOTSTRAP_ENV = "INFERSTREAM_TEST_BOOTSTRAP"
EXTERNAL_ELASTICSEARCH_ENV = "INFERSTREAM_TEST_ELASTICSEARCH"


@pytest.fixture(scope="session")
def kafka_version() -> str:
    """The Kafka version under test (``INFERSTREAM_STACK__KAFKA_VERSION`` or the default)."""
    return Settings.load().stack.kafka_version


@pytest.fixture(scope="session")
def kafka_lib_dir(kafka_version: str) -> Path:
    """The shared jar cache, fetched once (``mvn``) if it is empty."""
    env = os.environ.get(KAFKA_LIB_ENV)
    lib_dir = Path(env) if env else REPO_ROOT / ".inferstream" / "cache" / f"kafka-{kafka_version}" / "lib"
    KafkaServer(REPO_ROOT / ".inferstream", version=kafka_version, lib_dir=lib_dir).fetch()
    return lib_dir


@pytest.fixture(scope="session")
def kafka(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """A running broker for the whole session (started here unless one is given)."""
    external = os.environ.get(EXTERNAL_BOOTSTRAP_ENV)
    if external:
        yield Broker(bootstrap_servers=external)
        return
    version: str = request.getfixturevalue("kafka_version")
    lib_dir: Path = request.getfixturevalue("kafka_lib_dir")
    with ephemeral_kafka(tmp_path_factory.mktemp("kafka-state"), version=version, lib_dir=lib_dir) as broker:
        yield broker


@pytest.fixture(scope="session")
def elasticsearch() -> Iterator[SearchServer]:
    """A running single-node Elasticsearch for the session (``INFERSTREAM_TEST_ELASTICSEARCH=url`` to bring one).

    Its distribution is cached beside the Kafka jars; its data lives in a fresh folder
    under the system's temporary directory, which the server's own user can reach
    (Elasticsearch refuses to run as root, so as root it runs as another user).
    """
    external = os.environ.get(EXTERNAL_ELASTICSEARCH_ENV)
    if external:
        yield SearchServer(url=external)
        return
    with throwaway_elasticsearch(REPO_ROOT / ".inferstream") as server:
        yield server


@pytest.fixture
def settings(kafka: Broker, tmp_path: Path) -> Settings:
    """Settings pointing at the session broker, with a topic prefix of this test's own."""
    return Settings.load(
        kafka={"bootstrap_servers": kafka.bootstrap_servers},
        topics={"prefix": f"t{uuid.uuid4().hex[:12]}."},
        state_dir=tmp_path,
    )


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``integration`` marker (also declared in pyproject.toml)."""
    config.addinivalue_line("markers", "integration: needs the real Kafka broker started by the harness")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test collected under this directory ``integration``."""
    here = Path(__file__).parent
    for item in items:
        if item.path.is_relative_to(here):
            item.add_marker(pytest.mark.integration)


def _no_skip(report: pytest.TestReport | pytest.CollectReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        report.outcome = "failed"
        report.longrepr = f"integration tests must not be skipped (got: {reason})"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Turn a skipped integration test into a failure."""
    report = yield
    _no_skip(report)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(
    collector: pytest.Collector,
) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
    """Turn a module skipped at collection (``pytest.importorskip``) into an error."""
    report = yield
    _no_skip(report)
    return report
