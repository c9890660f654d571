"""The compose stack's Prometheus and Grafana query only what the processes export.

Every PromQL expression (dashboard panels, annotations and variables; alerting rules) is
parsed with a real PromQL parser, and each metric it selects and each label it matches or
groups by must be one docs/metrics.md lists (which test_metrics_catalog.py holds to the
code). The compose file must mount these files where the configurations expect them.
"""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import promql_parser as promql
import pytest
import yaml
from metrics_doc import documented_metrics

COMPOSE = Path(__file__).resolve().parents[2] / "compose"
DASHBOARD = COMPOSE / "grafana" / "dashboards" / "inferstream.json"
DATASOURCES = COMPOSE / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
PROVIDERS = COMPOSE / "grafana" / "provisioning" / "dashboards" / "inferstream.yml"
RULES = COMPOSE / "prometheus" / "rules.yml"
SCRAPES = COMPOSE / "prometheus" / "prometheus.yml"
#: Prometheus attaches these to every series it scrapes.
TARGET_LABELS = frozenset({"job", "instance"})
#: Grafana's interval variables, as Grafana substitutes them before Prometheus parses the query.
GRAFANA_INTERVALS = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}
#: Each alert kind the issue asks for, and the series its rule must select.
REQUIRED_ALERTS = {
    "InferstreamConsumerLagGrowing": "inferstream_consumer_lag",
    "InferstreamDeadLetters": "inferstream_dead_letters_total",
    "InferstreamDriftCritical": "inferstream_drift_alert_state",
    "InferstreamProcessDown": "up",
}


def _yaml(path: Path) -> dict[str, Any]:
    document = yaml.safe_load(path.read_text())
    assert isinstance(document, dict), path
    return document


def exported_series() -> dict[str, frozenset[str]]:
    """Every series name a query may select, with the labels it carries once scraped."""
    series = {"up": TARGET_LABELS}
    for name, row in documented_metrics().items():
        labels = frozenset(row.labels) | TARGET_LABELS
        if row.kind == "histogram":
            series |= {f"{name}_bucket": labels | {"le"}, f"{name}_sum": labels, f"{name}_count": labels}
        else:
            series[name] = labels
    return series


def _children(node: promql.Expr) -> list[promql.Expr]:
    if isinstance(node, promql.MatrixSelector):
        return [node.vector_selector]
    if isinstance(node, promql.Call):
        return list(node.args)
    if isinstance(node, promql.AggregateExpr):
        return [node.expr] + ([node.param] if node.param is not None else [])
    if isinstance(node, promql.BinaryExpr):
        return [node.lhs, node.rhs]
    if isinstance(node, (promql.ParenExpr, promql.UnaryExpr, promql.SubqueryExpr)):
        return [node.expr]
    return []


def _labels(node: promql.Expr, series: dict[str, frozenset[str]]) -> set[str]:
    """The labels of every series selected under ``node``."""
    if isinstance(node, promql.VectorSelector):
        return set(series.get(node.name or "", ()))
    return set().union(*(_labels(child, series) for child in _children(node)))


def parse(expr: str) -> promql.Expr:
    """``expr`` parsed as Prometheus parses it once Grafana has put in its interval variables."""
    for variable, value in GRAFANA_INTERVALS.items():
        expr = expr.replace(variable, value)
    return promql.parse(expr)


def problems(expr: str, series: dict[str, frozenset[str]]) -> tuple[set[str], list[str]]:
    """The series ``expr`` selects, and what in it names no exported metric or label."""
    selected: set[str] = set()
    found: list[str] = []

    def visit(node: promql.Expr) -> None:
        if isinstance(node, promql.VectorSelector):
            if node.name is None or node.name not in series:
                found.append(f"{node.name or node.prettify()} is not an exported series")
            else:
                selected.add(node.name)
                unknown = {m.name for m in node.matchers.matchers} - series[node.name] - {"__name__"}
                found.extend(f"{node.name} has no label {label}" for label in sorted(unknown))
        elif isinstance(node, promql.AggregateExpr) and node.modifier is not None:
            unknown = set(node.modifier.labels) - _labels(node.expr, series)
            found.extend(f"{node.op} groups by {label}, which {node.expr.prettify()} lacks" for label in unknown)
        elif isinstance(node, promql.BinaryExpr) and node.modifier is not None:
            lhs, rhs = _labels(node.lhs, series), _labels(node.rhs, series)
            matching = node.modifier.matching
            if matching is not None and matching.type == promql.LabelModifierType.Include:
                found.extend(f"on({label}): a side lacks it" for label in set(matching.labels) - (lhs & rhs))
            copied = set(node.modifier.group_labels or ()) - (lhs | rhs)
            found.extend(f"group_left/right({label}): no side has it" for label in copied)
        for child in _children(node):
            visit(child)

    visit(parse(expr))
    return selected, found


def job_matchers(node: promql.Expr) -> set[str]:
    """The jobs that ``job="..."`` and ``job=~"a|b"`` matchers under ``node`` name."""
    jobs = set().union(*(job_matchers(child) for child in _children(node)))
    if isinstance(node, promql.VectorSelector):
        for matcher in node.matchers.matchers:
            if matcher.name == "job":
                jobs |= set(matcher.value.split("|"))
    return jobs


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))  # a collapsed row holds its panels


def dashboard_queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str, str | None]]:
    """(where, PromQL, label a variable lists or None) of every query the dashboard runs."""
    for panel in _panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            yield f"panel {panel['title']!r} {target['refId']}", target["expr"], None
    for annotation in dashboard["annotations"]["list"]:
        if "expr" in annotation:
            yield f"annotation {annotation['name']!r}", annotation["expr"], None
    for variable in dashboard["templating"]["list"]:
        query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
        values = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query)
        assert values, f"variable {variable['name']}: {query!r} is not label_values(selector, label)"
        yield f"variable {variable['name']!r}", values[1], values[2]


def rule_queries(rules: dict[str, Any]) -> Iterator[tuple[str, str, str | None]]:
    """(where, PromQL, None) of every alerting and recording rule."""
    for group in rules["groups"]:
        for rule in group["rules"]:
            yield f"rule {rule.get('alert') or rule.get('record')}", rule["expr"], None


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    document = json.loads(DASHBOARD.read_text())
    assert isinstance(document, dict)
    return document


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return _yaml(COMPOSE / "docker-compose.yml")  # PyYAML resolves the << merge keys, as Compose does


@pytest.mark.parametrize("source", ["dashboard", "rules"])
def test_every_query_names_only_exported_metrics_and_their_labels(source: str, dashboard: dict[str, Any]) -> None:
    series = exported_series()
    queries = list(dashboard_queries(dashboard) if source == "dashboard" else rule_queries(_yaml(RULES)))
    assert len(queries) >= (30 if source == "dashboard" else 4)
    for where, expr, listed_label in queries:
        selected, found = problems(expr, series)
        assert selected, f"{where}: {expr!r} selects no series"
        assert not found, f"{where}: {expr!r}: " + "; ".join(found)
        if listed_label is not None:
            assert any(listed_label in series[name] for name in selected), f"{where} lists a label it lacks"


@pytest.mark.parametrize(
    ("expr", "problem"),
    [
        ("rate(inferstream_predictions_total[5m])", "inferstream_predictions_total is not an exported series"),
        ("inferstream_drift_score_bucket", "is not an exported series"),
        ('inferstream_consumer_lag{model="m"}', "inferstream_consumer_lag has no label model"),
        ("sum by (modle) (inferstream_inference_count_total)", "groups by modle"),
        ("histogram_quantile(0.9, sum by (le) (rate(inferstream_drift_score[5m])))", "groups by le"),
        ("inferstream_drift_score * on(stage) inferstream_drift_threshold", "on(stage)"),
        ('{__name__=~"inferstream_.*"}', "is not an exported series"),
    ],
)
def test_the_check_rejects_unknown_metrics_and_labels(expr: str, problem: str) -> None:
    _selected, found = problems(expr, exported_series())
    assert any(problem in message for message in found), found


def test_the_dashboard_is_grafana_json_over_the_provisioned_data_source(dashboard: dict[str, Any]) -> None:
    (source,) = _yaml(DATASOURCES)["datasources"]
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
    expected = {"type": "prometheus", "uid": source["uid"]}
    assert isinstance(dashboard["schemaVersion"], int)
    assert dashboard["uid"]
    assert dashboard["title"]
    panels = list(_panels(dashboard["panels"]))
    assert len({panel["id"] for panel in panels}) == len(panels), "panel ids repeat"
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["datasource"] == expected, panel["title"]
        for target in panel.get("targets", []):
            assert target["datasource"] == expected, panel["title"]
    for item in dashboard["templating"]["list"] + dashboard["annotations"]["list"]:
        assert item["datasource"] == expected, item["name"]


def test_the_dashboard_covers_the_platform(dashboard: dict[str, Any]) -> None:
    series = exported_series()
    used = set().union(*(problems(expr, series)[0] for _where, expr, _label in dashboard_queries(dashboard)))
    wanted = {
        "inferstream_inference_count_total",  # throughput
        "inferstream_inference_request_seconds_bucket",  # latency percentiles
        "inferstream_inference_batch_size_sum",
        "inferstream_consumer_lag",
        "inferstream_dead_letters_total",
        "inferstream_records_in_total",  # reconciliation
        "inferstream_records_handled_total",
        "inferstream_index_freshness_seconds_bucket",
        "inferstream_index_documents_indexed_total",
        "inferstream_index_documents_deleted_total",
        "inferstream_table_rows_written_total",
        "inferstream_drift_score",
        "inferstream_drift_threshold",
        "inferstream_drift_alert_state",
        "inferstream_gateway_requests_total",
        "inferstream_gateway_request_seconds_bucket",
    }
    assert wanted <= used, f"no panel shows {sorted(wanted - used)}"
    assert {variable["name"] for variable in dashboard["templating"]["list"]} == {"model", "version"}


def test_the_committed_dashboard_is_the_generators_output() -> None:
    spec = importlib.util.spec_from_file_location("grafana_dashboard", COMPOSE / "grafana" / "dashboard.py")
    assert spec is not None
    assert spec.loader is not None
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    assert generator.render() == DASHBOARD.read_text(), "run python compose/grafana/dashboard.py"


def test_the_rules_raise_the_four_alert_kinds() -> None:
    series = exported_series()
    rules = {rule["alert"]: rule for group in _yaml(RULES)["groups"] for rule in group["rules"] if "alert" in rule}
    for name, metric in REQUIRED_ALERTS.items():
        assert name in rules, f"no {name} rule"
        assert metric in problems(rules[name]["expr"], series)[0], f"{name} does not watch {metric}"
    for name, rule in rules.items():
        assert re.fullmatch(r"\d+[smh]", rule["for"]), name
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert {"summary", "description"} <= set(rule["annotations"]), name
        if not rule["expr"].startswith("absent("):  # absent() yields one series without labels
            assert "$labels" in rule["annotations"]["summary"] + rule["annotations"]["description"], name


def test_prometheus_scrapes_every_process_of_the_stack(compose: dict[str, Any]) -> None:
    config = _yaml(SCRAPES)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    # The long-running processes (one-shot setup steps run with restart "no" and export nothing).
    processes = {
        name: s
        for name, s in compose["services"].items()
        if s.get("image") == "inferstream:local" and s.get("restart") != "no"
    }
    assert processes, "the stack runs no inferstream process"
    discovered = {
        name: (job_name, discovery["type"], discovery["port"])
        for job_name, job in jobs.items()
        for discovery in job.get("dns_sd_configs", [])
        for name in discovery["names"]
    }
    for name, service in processes.items():
        environment = service["environment"]
        if name == "gateway":  # its own /metrics on its own port, behind its token
            port = int(environment["INFERSTREAM_GATEWAY__PORT"])
            assert discovered[name] == ("gateway", "A", port)
            continue
        assert environment["INFERSTREAM_METRICS__HOST"] == "0.0.0.0", f"{name} serves metrics on loopback only"
        port = int(environment["INFERSTREAM_METRICS__PORT"])
        assert port, f"{name} exports no metrics"
        assert str(port) not in " ".join(map(str, service.get("ports", []))), f"{name} publishes its metrics"
        assert name in discovered, f"no scrape job discovers {name}"
        job_name, kind, scraped = discovered[name]
        assert (kind, scraped) == ("A", port), name
        assert job_name == name or name.startswith(f"{job_name}-"), f"{name} is scraped as job {job_name}"
    assert set(discovered) <= set(compose["services"]), "a scrape job names a service the stack does not run"
    assert set(config["rule_files"]) == {"/etc/prometheus/rules.yml"}
    queries = [*dashboard_queries(json.loads(DASHBOARD.read_text())), *rule_queries(_yaml(RULES))]
    named = set().union(*(job_matchers(parse(expr)) for _where, expr, _label in queries))
    assert named, "no query names a job"
    assert named <= set(jobs), f"queries name jobs Prometheus does not scrape: {sorted(named - set(jobs))}"


def test_the_gateway_is_scraped_with_its_token_from_a_secret(compose: dict[str, Any]) -> None:
    (gateway,) = (job for job in _yaml(SCRAPES)["scrape_configs"] if job["job_name"] == "gateway")
    assert gateway["authorization"]["type"] == "Bearer"
    secret = Path(gateway["authorization"]["credentials_file"])
    assert secret.parent == Path("/run/secrets")
    assert secret.name in compose["services"]["prometheus"]["secrets"]
    assert compose["secrets"][secret.name] == {"environment": "INFERSTREAM_GATEWAY__TOKEN"}


def _mounts(service: dict[str, Any]) -> dict[str, Path | str]:
    """Container path → host path (resolved) or named volume."""
    mounts: dict[str, Path | str] = {}
    for volume in service["volumes"]:
        source, target = volume.split(":")[:2]
        mounts[target] = (COMPOSE / source).resolve() if source.startswith(".") else source
    return mounts


def test_compose_runs_prometheus_and_grafana_over_these_files(compose: dict[str, Any]) -> None:
    volumes = set(compose["volumes"])
    prometheus, grafana = compose["services"]["prometheus"], compose["services"]["grafana"]
    for service in (prometheus, grafana):
        assert re.fullmatch(r"[\w./-]+:v?\d+\.\d+\.\d+", service["image"]), service["image"]
        assert service["restart"] == "unless-stopped"
        assert service["healthcheck"]["test"]
    mounts = _mounts(prometheus)
    assert mounts["/etc/prometheus/prometheus.yml"] == SCRAPES
    assert mounts["/etc/prometheus/rules.yml"] == RULES
    assert mounts["/prometheus"] in volumes
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]

    mounts = _mounts(grafana)
    provisioning = mounts["/etc/grafana/provisioning"]
    assert isinstance(provisioning, Path)
    assert provisioning / "datasources" / DATASOURCES.name == DATASOURCES
    assert provisioning / "dashboards" / PROVIDERS.name == PROVIDERS
    (provider,) = _yaml(PROVIDERS)["providers"]
    assert mounts[provider["options"]["path"]] == DASHBOARD.parent
    assert mounts["/var/lib/grafana"] in volumes
    assert grafana["depends_on"]["prometheus"]["condition"] == "service_healthy"
