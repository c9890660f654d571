"""The dashboard without a broker: its series, drift timeline, report paths, token cookie and files."""

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from inferstream.config import Settings
from inferstream.connectors.kafka.groups import GroupInfo, PartitionLag
from inferstream.gateway import create_app
from inferstream.gateway.ui._access import COOKIE, dashboard_link
from inferstream.gateway.ui._drift import DriftTimeline
from inferstream.gateway.ui._history import parse_prediction
from inferstream.gateway.ui._platform import served
from inferstream.gateway.ui._reports import report_file, report_link
from inferstream.gateway.ui._series import SPAN_S, ModelSeries
from inferstream.schemas.records import ColumnDrift, DriftAlert

TOKEN = "dashboard-unit-token"


def test_series_count_each_second_and_take_percentiles_of_the_recent_ones() -> None:
    series = ModelSeries()
    now = 1_000_000.0
    for second in range(20):
        for i in range(10):
            series.add("m", "1", now - 20 + second + 0.5, float(i + 1))
    series.add("e", "2", now - 3, 7.0)
    [embedder, model] = series.snapshot(now)
    assert (model["model"], model["version"], model["total"]) == ("m", "1", 200)
    assert model["rate_per_s"] == 10.0  # ten a second over the last ten seconds
    assert model["p50_ms"] == 5.5
    assert model["series"]["count"] == [10] * 20
    assert model["series"]["t"] == list(range(int(now) - 20, int(now)))
    assert model["series"]["p99"][0] == pytest.approx(9.91)
    assert (embedder["model"], embedder["total"], embedder["series"]["count"]) == ("e", 1, [1])


def test_series_keep_a_bounded_span_and_sample() -> None:
    series = ModelSeries()
    for second in range(3 * SPAN_S):
        for i in range(100):
            series.add("m", "1", float(second), float(i))
    series.add("m", "1", 0.0, 1.0)  # far older than the span: counted, not kept
    [model] = series.snapshot(3 * SPAN_S)
    assert model["total"] == 3 * SPAN_S * 100 + 1
    assert len(model["series"]["t"]) == SPAN_S
    assert model["series"]["t"][-1] == 3 * SPAN_S - 1
    assert set(model["series"]["count"]) == {100}


def test_a_prediction_record_is_parsed_and_anything_else_passed_over() -> None:
    good = (
        b'{"request_id":"r1","model":"m","version":"1","latency":{"queue_ms":1,"compute_ms":1,"total_ms":2.5},'
        b'"predicted_at":"2026-01-01T00:00:00Z","outputs":{}}'
    )
    seen = parse_prediction(good)
    assert seen is not None
    assert (seen.model, seen.version, seen.total_ms) == ("m", "1", 2.5)
    assert seen.predicted_at == datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    for bad in (b"", b"{", b"[]", b'{"model":1}', good.replace(b'"2026-01-01T00:00:00Z"', b"5"), b"\xff\xfe"):
        assert parse_prediction(bad) is None


def _alert(minutes: int, status: str, report: str | None = None) -> DriftAlert:
    start = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=minutes)
    return DriftAlert(
        id=f"a-{minutes}-{status}",
        monitor="clinical",
        model="breast-cancer",
        version="1",
        window_start=start,
        window_end=start + timedelta(minutes=1),
        window_count=100,
        status=status,
        dataset_drift=status == "drift",
        drift_share=0.5,
        severity="critical",
        columns=[
            ColumnDrift(column="radius", kind="numerical", method="psi", score=0.4, threshold=0.2, drifted=True),
            ColumnDrift(column="texture", kind="numerical", method="psi", score=0.05, threshold=0.2, drifted=False),
        ],
        report_path=report,
    )


def test_the_drift_timeline_has_windows_from_alerts_and_status_files(tmp_path: Path) -> None:
    report = tmp_path / "clinical" / "w1.html"
    timeline = DriftTimeline(tmp_path)
    timeline.add_alert(_alert(1, "drift", str(report)))
    timeline.add_alert(_alert(1, "drift", str(report)))  # a replayed window's repeat
    timeline.add_status(
        {
            "monitor": "clinical",
            "model": "breast-cancer",
            "version": "1",
            "alert_active": True,
            "last_window": {
                "start": "2026-01-01T00:00:00+00:00",
                "end": "2026-01-01T00:01:00+00:00",
                "count": 100,
                "dataset_drift": False,
                "drift_share": 0.0,
                "columns": {"radius": {"method": "psi", "score": 0.01, "threshold": 0.2, "drifted": False}},
            },
        }
    )
    timeline.add_status({"monitor": 5})  # not a status: passed over
    [monitor] = timeline.snapshot()
    assert (monitor["monitor"], monitor["model"], monitor["alert_active"]) == ("clinical", "breast-cancer", True)
    assert monitor["columns"] == ["radius", "texture"]
    assert [w.get("alert") for w in monitor["windows"]] == [None, "drift"]
    assert monitor["windows"][1]["columns"]["radius"] == {
        "method": "psi",
        "score": 0.4,
        "threshold": 0.2,
        "drifted": True,
    }
    [alert] = monitor["alerts"]
    assert alert["drifted"] == ["radius"]
    assert alert["report"] == "/ui/reports/clinical/w1.html"
    timeline.add_alert(_alert(5, "resolved", "/elsewhere/r.html"))
    [monitor] = timeline.snapshot()
    assert not monitor["alert_active"]
    assert [a["status"] for a in monitor["alerts"]] == ["resolved", "drift"]
    assert monitor["alerts"][0]["report"] is None  # outside the reports directory: no link


def test_reports_are_found_only_inside_their_directory(tmp_path: Path) -> None:
    root = tmp_path / "reports"
    (root / "m").mkdir(parents=True)
    (root / "m" / "w.html").write_text("<p>report</p>")
    (root / "m" / "notes.txt").write_text("not a report")
    (tmp_path / "secret.html").write_text("secret")
    (root / "m" / "link.html").symlink_to(tmp_path / "secret.html")
    assert report_file(root, "m/w.html") == (root / "m" / "w.html").resolve()
    for bad in ("../secret.html", "m/../../secret.html", "/etc/passwd", "m/notes.txt", "m/link.html", ""):
        assert report_file(root, bad) is None, bad
    assert report_file(root, "m/w.html\x00") is None
    assert report_link(root, str(root / "m" / "w.html")) == "/ui/reports/m/w.html"
    assert report_link(root, str(tmp_path / "secret.html")) is None
    assert report_link(root, None) is None


@pytest.fixture
def http(tmp_path: Path) -> Iterator[TestClient]:
    """The gateway with a token; nothing here reaches Kafka (the board starts only when its state is asked)."""
    settings = Settings.load(gateway={"token": TOKEN}, state_dir=tmp_path)
    reports = tmp_path / "reports" / "m"
    reports.mkdir(parents=True)
    (reports / "w.html").write_text("<p>the report</p>")
    with TestClient(create_app(settings)) as client:
        yield client


def test_the_token_link_logs_a_browser_in_with_a_strict_http_only_cookie(http: TestClient) -> None:
    closed = http.get("/ui")
    assert closed.status_code == 401
    assert "?token=" in closed.text
    assert http.get("/ui", params={"token": "wrong"}).status_code == 401
    login = http.get("/ui", params={"token": TOKEN}, follow_redirects=False)
    assert login.status_code == 303
    assert login.headers["location"] == "/ui"  # the token leaves the address bar
    cookie = login.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}={TOKEN};")
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie
    assert "Path=/ui" in cookie
    page = http.get("/ui")  # the client keeps the cookie
    assert page.status_code == 200
    assert "/ui/static/vendor/uPlot.iife.min.js" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    report = http.get("/ui/reports/m/w.html")
    assert report.status_code == 200
    assert report.text == "<p>the report</p>"
    assert report.headers["content-security-policy"] == "sandbox allow-scripts"
    assert http.get("/ui/reports/m/../../secret.html").status_code == 404
    assert http.get("/ui/reports/m/%2e%2e/%2e%2e/x.html").status_code == 404


def test_the_api_takes_the_bearer_header_or_the_cookie(http: TestClient) -> None:
    assert http.get("/ui/api/state").status_code == 401
    assert http.post("/ui/api/search", json={"query": "x"}).status_code == 401
    assert http.get("/ui/reports/m/w.html").status_code == 401
    bearer = http.get("/ui/reports/m/w.html", headers={"Authorization": f"Bearer {TOKEN}"})
    assert bearer.status_code == 200
    empty = http.post("/ui/api/search", json={"query": ""}, headers={"Authorization": f"Bearer {TOKEN}"})
    assert empty.status_code == 422  # refused before any search


def test_the_page_files_are_served_and_nothing_else(http: TestClient) -> None:
    script = http.get("/ui/static/app.js")
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")
    library = http.get("/ui/static/vendor/uPlot.iife.min.js")
    assert library.status_code == 200
    assert library.text.startswith("/*! https://github.com/leeoniya/uPlot")
    assert "MIT" in http.get("/ui/static/vendor/uPlot.LICENSE").text
    assert http.get("/ui/static/index.html").status_code == 404
    assert http.get("/ui/static/../_routes.py").status_code == 404
    assert http.get("/ui/static/vendor/../../_routes.py").status_code == 404


def test_served_model_versions_are_read_from_their_workers_groups() -> None:
    settings = Settings.load(topics={"prefix": "p."})
    infos = [
        GroupInfo(
            "p.serve-breast-cancer-1",
            "Stable",
            2,
            [
                PartitionLag("p.requests.breast-cancer.1", 0, committed=10, log_end=15, lag=5),
                PartitionLag("p.requests.breast-cancer.1", 1, committed=None, log_end=3, lag=3),
            ],
        ),
        GroupInfo("p.serve-minilm-1", "Empty", 0, [PartitionLag("p.requests.minilm.1", 0, 4, 4, 0)]),
        GroupInfo("p.shadow-breast-cancer-2", "Stable", 1, [PartitionLag("p.requests.breast-cancer.1", 0, 1, 15, 14)]),
        GroupInfo("p.index", "Stable", 1, [PartitionLag("p.embeddings", 0, 1, 1, 0)]),
    ]
    assert served(settings, infos) == [
        {
            "model": "breast-cancer",
            "version": "1",
            "workers": 2,
            "lag": 8,
            "committed": 10,
            "group": "p.serve-breast-cancer-1",
        },
        {"model": "minilm", "version": "1", "workers": 0, "lag": 0, "committed": 4, "group": "p.serve-minilm-1"},
    ]


def test_the_dashboard_link_shows_the_token_only_when_asked() -> None:
    settings = Settings.load(gateway={"token": "a b/c"})
    assert dashboard_link("http://h:1", settings) == "http://h:1/ui?token=<the gateway's token>"
    assert dashboard_link("http://h:1", settings, reveal=True) == "http://h:1/ui?token=a%20b%2Fc"
    assert dashboard_link("http://h:1", Settings.load()) == "http://h:1/ui"
