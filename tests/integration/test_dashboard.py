"""The dashboard in a real headless browser (Debian's chromium and chromium-driver) against a running pipeline.

A tabular worker, an embedder, the index sink and a drift monitor run on the real
broker; predictions made before the gateway starts are the page's history. The
browser logs in with the token link, then the test checks what a user would see:
each model version named, charts with data, the alert raised by a drift it
injects, the search box finding a passage, lag, dead letters, routes, and no
console error. It saves a screenshot (and to ``$INFERSTREAM_ARTIFACTS`` when set).
``inferstream demo --keep`` prints the dashboard's link and serves it until Ctrl-C.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import JavascriptException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from inferstream import Client, Settings
from inferstream.config import GatewaySettings
from inferstream.demo import MONITORED, sample_texts
from inferstream.gateway import BackgroundGateway
from inferstream.monitoring.reference import build_reference, references_dir
from inferstream.monitoring.spec import MonitorSpec
from inferstream.serving.demo_models import EMBEDDER_NAME, TABULAR_NAME, tabular_rows
from inferstream.serving.repository import ModelRepository
from inferstream.serving.routes import set_route
from inferstream.serving.worker import InferenceWorker
from inferstream.stack.testing import running_in_thread
from inferstream.streams.drift_monitor import DriftMonitor
from inferstream.streams.index_sink import IndexSink

TOKEN = "dashboard-test-token"
MONITOR = "dash-clinical"
WINDOW = 100
PASSAGES = 20
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

T = TypeVar("T")


def _requests(count: int, *, start: int, scale: float = 1.0) -> list[dict[str, Any]]:
    rows, _ = tabular_rows(scale=scale)
    return [
        {"request_id": f"r{i}", "model": TABULAR_NAME, "version": "1", "inputs": rows[i % len(rows)]}
        for i in range(start, start + count)
    ]


def _eventually(check: Callable[[], T | None], *, what: str, timeout: float = 120) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.3)


@pytest.fixture
def browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[webdriver.Chrome]:
    """Headless Chromium driven by the system's chromedriver: nothing is downloaded."""
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if shutil.which(path) is None]
    if missing:
        pytest.fail(
            f"the dashboard test needs Debian's chromium and chromium-driver ({', '.join(missing)} missing): "
            "`apt-get install chromium chromium-driver` (scripts/install does it)"
        )
    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must not fetch a browser or a driver
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,3200"):
        options.add_argument(argument)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def _js(driver: webdriver.Chrome, script: str) -> Any:
    try:
        return driver.execute_script(script)
    except JavascriptException:
        return None


def _wait(driver: webdriver.Chrome, script: str, *, what: str, timeout: float = 120) -> Any:
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.3).until(lambda d: _js(d, script))
    except TimeoutException:
        state = _js(driver, "return JSON.stringify(window.inferstream && window.inferstream.state)")
        raise AssertionError(f"the page never showed {what}; its last state: {str(state)[:3000]}") from None


def test_the_dashboard_shows_the_running_pipeline(
    settings: Settings, models_dir: Path, browser: webdriver.Chrome, tmp_path: Path
) -> None:
    settings = settings.model_copy(update={"models_dir": models_dir, "gateway": GatewaySettings(token=TOKEN)})
    repository = ModelRepository(models_dir)
    spec = MonitorSpec.model_validate(
        {
            "name": MONITOR,
            "model": TABULAR_NAME,
            "version": "1",
            "columns": [{"name": f} for f in MONITORED],
            "window": {"kind": "count", "size": WINDOW},
            "alerting": {"alert_after": 1, "alert_window": 1, "resolve_after": 2},
        }
    )
    rows, _ = tabular_rows()
    reference = [{"model": TABULAR_NAME, "version": "1", "inputs": row} for row in rows]
    build_reference(spec, reference, root=references_dir(settings), source="the breast cancer data set")
    request_topic = settings.topics.request_topic(TABULAR_NAME, "1")
    with Client(settings) as client:
        client.topics.ensure_platform_topics()
        set_route(settings, TABULAR_NAME, {"1": 100})
    tabular = InferenceWorker(settings, repository.get(TABULAR_NAME, "1"))
    embedder = InferenceWorker(settings, repository.get(EMBEDDER_NAME, "1"))
    sink = IndexSink(settings)
    monitor = DriftMonitor(settings, spec)
    with (
        running_in_thread(tabular, timeout=120),
        running_in_thread(embedder, timeout=120),
        running_in_thread(sink, timeout=120),
        running_in_thread(monitor, timeout=120),
        Client(settings) as client,
    ):
        # History: predictions made before the gateway starts, and the passages to search.
        texts = sample_texts()[:PASSAGES]
        passages = [
            {"request_id": f"q{i}", "model": EMBEDDER_NAME, "version": "1", "document_id": f"doc-{i}", "text": text}
            for i, text in enumerate(texts)
        ]
        embedder_topic = settings.topics.request_topic(EMBEDDER_NAME, "1")
        assert client.produce(embedder_topic, passages, schema="embedding-request").produced == PASSAGES
        wrong = {**rows[0], next(iter(rows[0])): "big"}  # a request the worker dead-letters, with the reason
        before = [*_requests(3 * WINDOW, start=0), {**_requests(1, start=10_000)[0], "inputs": wrong}]
        assert client.produce(request_topic, before).produced == len(before)
        _eventually(lambda: tabular.stats.predictions >= 3 * WINDOW, what="the first predictions")
        _eventually(lambda: sink.stats.upserts >= PASSAGES, what="the passages indexed")

        with BackgroundGateway(settings) as gateway:
            browser.get(f"{gateway.url}/ui?token={TOKEN}")
            assert browser.current_url == f"{gateway.url}/ui"  # logged in: the token left the address bar
            # Every served model version is named in the page as text, the tabular one with its history.
            _wait(
                browser,
                f"""return [...document.querySelectorAll('#models td.name')].map(e => e.textContent)
                    .filter(t => t === '{TABULAR_NAME}:1' || t === '{EMBEDDER_NAME}:1').length === 2""",
                what="both model versions named",
            )
            history = _wait(
                browser,
                f"""const m = (window.inferstream.state || {{models: []}}).models
                    .find(m => m.model === '{TABULAR_NAME}' && m.version === '1');
                    return m && m.total >= {3 * WINDOW} && m.total""",
                what="the history read from the predictions topic",
            )
            assert history >= 3 * WINDOW

            # The drift: measurements 30% larger, predicted while the page is open.
            after = _requests(3 * WINDOW, start=3 * WINDOW, scale=1.3)
            assert client.produce(request_topic, after).produced == len(after)

            for chart in ("throughput", "latency"):
                total = _wait(
                    browser,
                    f"""const c = window.inferstream.charts['{chart} {TABULAR_NAME}:1'];
                        return c && c.data.slice(1).flat().reduce((a, v) => a + (v || 0), 0)""",
                    what=f"a {chart} chart with data",
                )
                assert total > 0
            assert int(browser.find_element(By.CSS_SELECTOR, ".throughput").get_attribute("data-points") or 0) > 0
            assert browser.find_elements(By.CSS_SELECTOR, f'[data-model="{TABULAR_NAME}:1"] canvas')

            card = f'[data-monitor="{MONITOR}"]'
            _wait(
                browser,
                f"""return document.querySelector('{card} tr.alert-row[data-status="drift"]') !== null""",
                what="the drift alert in the timeline",
                timeout=180,
            )
            markers = _js(
                browser,
                f"""const c = window.inferstream.charts['drift {MONITOR}'];
                    return c.data[c.data.length - 1].filter(v => v !== null).length""",
            )
            assert markers >= 1  # the alert's marker on the timeline
            drifted = browser.find_element(By.CSS_SELECTOR, f'{card} tr.alert-row[data-status="drift"] td:nth-child(6)')
            assert "mean_radius" in drifted.text or "mean_area" in drifted.text
            report = browser.find_element(By.CSS_SELECTOR, f'{card} tr.alert-row[data-status="drift"] a')
            href = report.get_attribute("href")
            assert href is not None
            assert href.startswith(f"{gateway.url}/ui/reports/{MONITOR}/")
            with httpx.Client(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as http:
                assert http.get(href).status_code == 200
                assert httpx.get(href, timeout=30).status_code == 401

            # The search box finds the passage the query was taken from.
            query = " ".join(texts[0].split()[:12])
            box = browser.find_element(By.ID, "search-query")
            box.send_keys(query)
            browser.find_element(By.CSS_SELECTOR, "#search-form button").click()
            first = _wait(
                browser,
                "const hit = document.querySelector('#search-results li.hit'); return hit && hit.dataset.id",
                what="a search result",
            )
            assert first == "doc-0"
            assert texts[0][:40] in browser.find_element(By.CSS_SELECTOR, "#search-results li.hit").text

            # The rest: the sampled tail, the workers' lag, the dead letter's reason, the route.
            _wait(browser, "return document.querySelectorAll('#tail tbody tr').length > 0", what="the tail")
            _wait(
                browser,
                f"""return [...document.querySelectorAll('#lag td')].some(
                    td => td.textContent === '{settings.topics.worker_group(TABULAR_NAME, "1")}')""",
                what="the tabular worker's group",
            )
            _wait(
                browser,
                "return [...document.querySelectorAll('#dead-letters td.reason')].some(td => td.textContent)",
                what="the dead letter with its reason",
            )
            route = _wait(
                browser,
                "const row = document.querySelector('#routes tbody tr'); return row && row.textContent",
                what="the route",
            )
            assert TABULAR_NAME in route
            assert "100%" in route

            screenshot = tmp_path / "dashboard.png"
            assert browser.save_screenshot(str(screenshot))
            artifacts = os.environ.get("INFERSTREAM_ARTIFACTS")
            if artifacts:
                Path(artifacts).mkdir(parents=True, exist_ok=True)
                shutil.copy(screenshot, Path(artifacts) / "dashboard.png")
            errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
            assert errors == []


def test_demo_keep_serves_the_dashboard_until_ctrl_c(settings: Settings, models_dir: Path, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "INFERSTREAM_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "INFERSTREAM_STATE_DIR": str(tmp_path / "state"),
        "INFERSTREAM_MODELS_DIR": str(models_dir),
        "INFERSTREAM_GATEWAY__TOKEN": TOKEN,
        "INFERSTREAM_GATEWAY__PORT": "0",  # any free port
        "COLUMNS": "200",
    }
    demo = subprocess.Popen(
        [sys.executable, "-m", "inferstream", "demo", "--keep", "--events", "100"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    try:
        assert demo.stdout is not None
        link = None
        for line in demo.stdout:
            lines.append(line)
            if "the live dashboard: " in line:
                link = line.split("the live dashboard: ", 1)[1].strip()
                break
        assert link is not None, "".join(lines)
        assert link.endswith(f"/ui?token={TOKEN}")
        base = link.removesuffix(f"/ui?token={TOKEN}")
        with httpx.Client(base_url=base, timeout=30, follow_redirects=True) as http:
            page = http.get(link)  # the token link: a cookie, then the page
            assert page.status_code == 200
            assert str(page.url) == f"{base}/ui"

            def tabular_seen() -> dict[str, Any] | None:
                models = http.get("/ui/api/state").json()["models"]
                return next((m for m in models if m["model"] == TABULAR_NAME and m["total"] > 0), None)

            # The demo's predictions, read back from its topics by the dashboard it keeps serving.
            assert _eventually(tabular_seen, what="the demo's predictions on the dashboard")["version"] == "1"
        demo.send_signal(signal.SIGINT)
        rest, _ = demo.communicate(timeout=120)
        lines.append(rest)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    output = "".join(lines)
    assert demo.returncode == 0, output
    assert "demo summary" in output
    assert "every event is accounted for" in output
