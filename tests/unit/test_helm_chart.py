"""deploy/helm/inferstream: `helm lint` and `helm template` pass, and what they render is what a
cluster accepts and what the processes expect.

helm is built once from the Go module proxy (scripts/install-helm, into .inferstream/cache).
The manifests are validated against the Kubernetes schemas kubernetes-validate ships and
against KEDA's CRD schemas (vendored in tests/schemas); every container's command parses with
the CLI's parser and every INFERSTREAM_ variable the chart sets is a setting.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from compose_stack import REPO_ROOT, is_setting, parse_command
from inferstream.config import TopicSettings

CHART = REPO_ROOT / "deploy" / "helm" / "inferstream"
SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"
#: The cluster version the manifests are rendered for and validated against.
KUBERNETES = "1.34.0"
SECURE = {
    "kafka": {
        "bootstrapServers": "broker-0.kafka:9093,broker-1.kafka:9093",
        "security": {
            "protocol": "SASL_SSL",
            "saslMechanism": "SCRAM-SHA-512",
            "saslUsername": "inferstream",
            "saslPassword": "kafka-secret",
            "tlsSecret": "kafka-ca",
        },
    },
    "elasticsearch": {"url": "https://search:9200", "apiKey": "es-api-key"},
    "gateway": {"existingSecret": "gateway-token"},
    "workers": [
        {"model": "minilm", "version": "1", "gpu": 1, "autoscaling": {"scaleToZero": True, "maxReplicas": 4}},
    ],
}


@pytest.fixture(scope="module")
def helm() -> str:
    """The helm binary: $INFERSTREAM_HELM, else the cached build (built now when absent)."""
    given = os.environ.get("INFERSTREAM_HELM")
    if given:
        return given
    built = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / "install-helm")], capture_output=True, text=True, check=False
    )
    assert built.returncode == 0, f"building helm failed:\n{built.stderr}"
    return built.stdout.strip()


def _helm(helm: str, *args: str, values: dict[str, Any] | None = None, tmp_path: Path | None = None) -> str:
    command = [helm, *args, str(CHART), "--kube-version", KUBERNETES]
    if values is not None:
        assert tmp_path is not None
        file = tmp_path / "values.yaml"
        file.write_text(yaml.safe_dump(values))
        command += ["--values", str(file)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def render(helm: str, values: dict[str, Any] | None = None, tmp_path: Path | None = None) -> list[dict[str, Any]]:
    """The manifests `helm template` renders, parsed."""
    text = _helm(helm, "template", "rel", values=values, tmp_path=tmp_path)
    return [doc for doc in yaml.safe_load_all(text) if doc]


def _of(manifests: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {m["metadata"]["name"]: m for m in manifests if m["kind"] == kind}


def _crd_schema(name: str) -> dict[str, Any]:
    crd = yaml.safe_load((SCHEMAS / name).read_text())
    (version,) = (v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1")
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


KEDA = {
    "ScaledObject": _crd_schema("keda.sh_scaledobjects.yaml"),
    "TriggerAuthentication": _crd_schema("keda.sh_triggerauthentications.yaml"),
}


def _validate(manifests: list[dict[str, Any]]) -> None:
    for manifest in manifests:
        where = f"{manifest['kind']} {manifest['metadata']['name']}"
        if manifest["apiVersion"].startswith("keda.sh/"):
            errors = [e.message for e in jsonschema.Draft7Validator(KEDA[manifest["kind"]]).iter_errors(manifest)]
            assert not errors, f"{where}: {errors}"
        else:
            try:
                kubernetes_validate.validate(manifest, KUBERNETES, strict=True)
            except kubernetes_validate.ValidationError as exc:
                raise AssertionError(f"{where}: {exc.message} at {list(exc.path)}") from None


def test_helm_lint_passes(helm: str, tmp_path: Path) -> None:
    _helm(helm, "lint", "--strict")
    _helm(helm, "lint", "--strict", values=SECURE, tmp_path=tmp_path)


@pytest.mark.parametrize("values", [None, SECURE], ids=["defaults", "sasl-ssl-gpu"])
def test_rendered_manifests_follow_the_kubernetes_and_keda_schemas(
    helm: str, tmp_path: Path, values: dict[str, Any] | None
) -> None:
    _validate(render(helm, values, tmp_path))


def test_every_worker_scales_on_its_consumer_groups_lag(helm: str) -> None:
    manifests = render(helm)
    deployments, scaled = _of(manifests, "Deployment"), _of(manifests, "ScaledObject")
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    topics = TopicSettings(prefix=defaults["topics"]["prefix"])
    assert len(scaled) == len(defaults["workers"]) >= 1
    for worker in defaults["workers"]:
        (so,) = (s for s in scaled.values() if s["metadata"]["name"].endswith(f"worker-{worker['model']}-1"))
        target = deployments[so["spec"]["scaleTargetRef"]["name"]]
        (container,) = target["spec"]["template"]["spec"]["containers"]
        assert container["args"] == ["serve", "--model", f"{worker['model']}:{worker['version']}"]
        (trigger,) = so["spec"]["triggers"]
        assert trigger["type"] == "kafka"
        # The group and topic the worker really uses (the settings name them, under the prefix).
        assert trigger["metadata"]["consumerGroup"] == topics.worker_group(worker["model"], worker["version"])
        assert trigger["metadata"]["topic"] == topics.request_topic(worker["model"], worker["version"])
        # Max replicas = partitions: a group's members beyond its partitions would sit idle.
        assert so["spec"]["maxReplicaCount"] == defaults["topics"]["partitions"]
        assert so["spec"]["minReplicaCount"] == 1


def test_max_replicas_above_the_partitions_is_refused(helm: str, tmp_path: Path) -> None:
    values = {
        "topics": {"partitions": 3},
        "workers": [{"model": "minilm", "version": "1", "autoscaling": {"maxReplicas": 4}}],
    }
    (tmp_path / "values.yaml").write_text(yaml.safe_dump(values))
    result = subprocess.run(
        [helm, "template", "rel", str(CHART), "--kube-version", KUBERNETES, "--values", str(tmp_path / "values.yaml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "maxReplicas 4 is above topics.partitions 3" in result.stderr


def test_the_gateway_token_comes_from_a_secret(helm: str, tmp_path: Path) -> None:
    for values, chart_secret in ((None, True), (SECURE, False)):
        manifests = render(helm, values, tmp_path)
        (gateway,) = (d for n, d in _of(manifests, "Deployment").items() if n.endswith("-gateway"))
        (container,) = gateway["spec"]["template"]["spec"]["containers"]
        (token,) = (e for e in container["env"] if e["name"] == "INFERSTREAM_GATEWAY__TOKEN")
        reference = token["valueFrom"]["secretKeyRef"]
        secrets = _of(manifests, "Secret")
        if chart_secret:  # generated when none is given
            assert len(secrets[reference["name"]]["stringData"][reference["key"]]) >= 32
        else:
            assert reference == {"name": "gateway-token", "key": "token"}
            assert reference["name"] not in secrets
        assert "value" not in token


def test_processes_probe_their_health_endpoints_and_have_disruption_budgets(helm: str) -> None:
    manifests = render(helm)
    budgets = _of(manifests, "PodDisruptionBudget")
    selectors = [b["spec"]["selector"]["matchLabels"] for b in budgets.values()]
    deployments = _of(manifests, "Deployment")
    components = {d["metadata"]["labels"]["app.kubernetes.io/component"] for d in deployments.values()}
    assert {"ingest", "index", "monitor", "gateway"} < components
    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]
        assert pod["metadata"]["labels"] in selectors, f"{name} has no PodDisruptionBudget"
        (container,) = pod["spec"]["containers"]
        path = "/healthz" if name.endswith("-gateway") else "/metrics"
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            assert container[probe]["httpGet"] == {"path": path, "port": "http"}, f"{name} {probe}"
        assert [p["name"] for p in container["ports"]] == ["http"]


def test_every_command_and_setting_is_one_the_processes_take(helm: str, tmp_path: Path) -> None:
    for values in (None, SECURE):
        manifests = render(helm, values, tmp_path)
        (settings,) = (c for n, c in _of(manifests, "ConfigMap").items() if n.endswith("-settings"))
        variables = set(settings["data"])
        for secret in _of(manifests, "Secret").values():
            variables |= {k for k in secret.get("stringData") or {} if k.startswith("INFERSTREAM_")}
        for deployment in _of(manifests, "Deployment").values():
            spec = deployment["spec"]["template"]["spec"]
            for container in [*spec["initContainers"], *spec["containers"]]:
                parse_command(container["args"])  # raises on an unknown command or option
                variables |= {e["name"] for e in container.get("env", [])}
        unknown = sorted(v for v in variables if not is_setting(v))
        assert not unknown, f"not settings: {unknown}"


def test_security_settings_reach_the_processes_and_keda(helm: str, tmp_path: Path) -> None:
    manifests = render(helm, SECURE, tmp_path)
    (settings,) = (c["data"] for n, c in _of(manifests, "ConfigMap").items() if n.endswith("-settings"))
    assert settings["INFERSTREAM_KAFKA__SECURITY__PROTOCOL"] == "SASL_SSL"
    assert settings["INFERSTREAM_KAFKA__SECURITY__SASL_MECHANISM"] == "SCRAM-SHA-512"
    assert settings["INFERSTREAM_KAFKA__SECURITY__SSL_CA_LOCATION"] == "/etc/inferstream/kafka-tls/ca.crt"
    # Credentials only in the Secret.
    rendered_settings = json.dumps(settings)
    assert "kafka-secret" not in rendered_settings
    assert "es-api-key" not in rendered_settings
    (credentials,) = (s["stringData"] for n, s in _of(manifests, "Secret").items() if n.endswith("-settings"))
    assert credentials["INFERSTREAM_ELASTICSEARCH__API_KEY"] == "es-api-key"
    assert credentials["INFERSTREAM_KAFKA__SECURITY__SASL_PASSWORD"] == "kafka-secret"
    # KEDA reads the lag with the same credentials, and scales the GPU worker to zero when idle.
    (auth,) = _of(manifests, "TriggerAuthentication").values()
    assert {r["parameter"] for r in auth["spec"]["secretTargetRef"]} == {"username", "password", "ca"}
    (so,) = _of(manifests, "ScaledObject").values()
    assert so["spec"]["minReplicaCount"] == 0
    assert so["spec"]["maxReplicaCount"] == 4
    (trigger,) = so["spec"]["triggers"]
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    assert (trigger["metadata"]["sasl"], trigger["metadata"]["tls"]) == ("scram_sha512", "enable")
    # The GPU worker: the GPU image and one nvidia.com/gpu.
    (worker,) = (d for n, d in _of(manifests, "Deployment").items() if "-worker-" in n)
    (container,) = worker["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["image"].startswith("inferstream-gpu:")
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["kafka-tls"] == "/etc/inferstream/kafka-tls"


def test_keda_owns_the_workers_replicas_and_the_monitor_runs_alone(helm: str, tmp_path: Path) -> None:
    deployments = _of(render(helm), "Deployment")
    workers = {n: d for n, d in deployments.items() if "-worker-" in n}
    assert workers
    assert all("replicas" not in d["spec"] for d in workers.values())  # an upgrade never resets KEDA's count
    (monitor,) = (d for n, d in deployments.items() if n.endswith("-monitor"))
    assert monitor["spec"]["replicas"] == 1
    assert monitor["spec"]["strategy"] == {"type": "Recreate"}  # two copies would split its partitions
    fixed = render(helm, {"keda": {"enabled": False}}, tmp_path)
    assert not _of(fixed, "ScaledObject")
    assert all(d["spec"]["replicas"] == 1 for n, d in _of(fixed, "Deployment").items() if "-worker-" in n)
