"""compose/docker-compose.yml describes the whole stack, and Docker Compose accepts it.

Where the Docker CLI has its compose plugin, ``docker compose config`` validates the file
(it needs no engine). Elsewhere the file is checked structurally with PyYAML, so the test
still guards it on machines without Docker.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from inferstream.config import StackSettings

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_DIR = REPO_ROOT / "compose"
COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yml"
PLATFORM = {"serve", "ingest", "monitor"}
SERVICES = {"kafka", "elasticsearch", "prometheus", "grafana"} | PLATFORM


def _docker_compose() -> str | None:
    docker = shutil.which("docker")
    if docker is None:
        return None
    try:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return docker if probe.returncode == 0 else None


def _load_yaml() -> dict[str, Any]:
    yaml = pytest.importorskip("yaml", reason="neither `docker compose` nor PyYAML is available")
    document = yaml.safe_load(COMPOSE_FILE.read_text())  # resolves the << merge keys, as Compose does
    assert isinstance(document, dict)
    return document


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """The compose model: as ``docker compose config`` resolves it, else as parsed YAML."""
    docker = _docker_compose()
    if docker is None:
        return _load_yaml()
    result = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE_FILE), "config", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"docker compose config rejected {COMPOSE_FILE}:\n{result.stderr}"
    model = json.loads(result.stdout)
    assert isinstance(model, dict)
    return model


def test_compose_lists_the_platform_services(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == SERVICES


def test_every_dependency_and_volume_is_declared(compose: dict[str, Any]) -> None:
    services = compose["services"]
    declared_volumes = set(compose.get("volumes") or {})
    for name, service in services.items():
        assert "image" in service or "build" in service, name
        for dependency in service.get("depends_on") or {}:
            assert dependency in services, f"{name} depends on unknown service {dependency}"
        for volume in service.get("volumes") or []:
            source = volume["source"] if isinstance(volume, dict) else volume.split(":", 1)[0]
            if not source.startswith((".", "/")):
                assert source in declared_volumes, f"{name} mounts undeclared volume {source}"


def test_platform_services_build_the_project_image_and_wait_for_kafka(compose: dict[str, Any]) -> None:
    for name in PLATFORM:
        service = compose["services"][name]
        build = service["build"]
        context = Path(build["context"]) if Path(build["context"]).is_absolute() else COMPOSE_DIR / build["context"]
        assert context.resolve() == REPO_ROOT
        assert (context / build.get("dockerfile", "Dockerfile")).is_file()
        assert service["environment"]["INFERSTREAM_KAFKA__BOOTSTRAP_SERVERS"] == "kafka:19092"
        assert service["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert compose["services"]["ingest"]["depends_on"]["elasticsearch"]["condition"] == "service_healthy"
    commands = {name: compose["services"][name]["command"][:2] for name in PLATFORM}
    assert commands == {"serve": ["serve"], "ingest": ["stream", "ingest"], "monitor": ["monitor", "run"]}


def test_backing_services_match_the_versions_the_project_pins(compose: dict[str, Any]) -> None:
    kafka = compose["services"]["kafka"]
    assert kafka["image"] == f"apache/kafka:{StackSettings().kafka_version}"
    assert "INTERNAL://kafka:19092" in kafka["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    assert kafka["environment"]["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert "healthcheck" in kafka

    elasticsearch = compose["services"]["elasticsearch"]
    # The Python client of major N only talks to servers of major N (pyproject pins elasticsearch 9).
    assert elasticsearch["image"].endswith(":9.3.0")
    assert elasticsearch["environment"]["discovery.type"] == "single-node"
    assert elasticsearch["environment"]["xpack.security.enabled"] == "false"
    assert "healthcheck" in elasticsearch


def test_the_image_installs_the_project_and_runs_the_cli() -> None:
    dockerfile = (COMPOSE_DIR / "Dockerfile").read_text()
    assert "COPY src ./src" in dockerfile
    assert 'pip install --prefix=/install ".[${EXTRAS}]"' in dockerfile
    assert 'ENTRYPOINT ["inferstream"]' in dockerfile
    # The build context is the repository root: keep .venv and .inferstream out of it.
    ignore = (COMPOSE_DIR / "Dockerfile.dockerignore").read_text().splitlines()
    assert {"*", "!pyproject.toml", "!README.md", "!src/"} <= set(ignore)
