"""The README's first command, reduced: every event accounted for, an alert after the shift, a search hit,
and the quality loop: labels, a quality alert, v2 retrained, better on labelled shadow traffic, promoted."""

from pathlib import Path

from inferstream import Settings
from inferstream.demo import run_demo
from inferstream.serving.repository import ModelRepository
from inferstream.serving.routes import read_routes


def test_demo_runs_the_whole_platform_and_accounts_for_every_event(settings: Settings, tmp_path: Path) -> None:
    settings = settings.model_copy(update={"models_dir": tmp_path / "models"})
    lines: list[str] = []
    summary = run_demo(settings, events=400, say=lines.append)
    assert not summary.started_kafka  # the harness broker answered
    assert summary.events_produced == 400
    assert summary.events_read == 400
    assert summary.bad_records == 3
    assert summary.dead_letters == 3 + summary.embedding_dead_letters
    # Every clinical event became a prediction (through the ingest processor), every doc is indexed.
    assert summary.requests == 200
    assert summary.predictions == 200
    assert summary.request_dead_letters == 0
    assert summary.indexed + summary.embedding_dead_letters == 200
    assert summary.indexed > 190
    assert summary.accounted
    # The shift moves the classifier's answers and raises a drift alert with its report.
    assert summary.malignant_share_after > summary.malignant_share_before
    assert summary.alerts >= 1
    assert summary.report_path is not None
    assert Path(summary.report_path).is_file()
    # The search finds the passage it was asked about (doc-8) first.
    assert summary.search_hits[:1] == ["doc-8"]
    assert summary.predict_round_trip_ms > 0
    # Latency runs from when an event entered Kafka (the clinical events' event times lie in the past).
    assert 0 < summary.latency_p50_ms <= summary.latency_p99_ms < summary.elapsed_s * 1000
    assert any("dead-letter" in line for line in lines)
    # The quality loop: every clinical prediction labelled and archived beside its label ...
    loop = summary.loop
    assert loop.labels == 200
    assert loop.archived_predictions == 200
    assert loop.archived_labels == 200
    # ... the quality monitor finds the shifted measurements mislead v1 ...
    alert = loop.quality_alert
    assert alert is not None
    assert alert["accuracy"] < alert["limit"] == 0.9
    assert alert["labels"] >= 12  # the monitor's min_labels: a verdict
    assert Path(alert["report_path"]).is_file()  # evidently's classification report of that window
    # ... v2 is trained on the labelled rows after the shift, with its lineage ...
    assert loop.retrained == "breast-cancer:2"
    assert loop.lineage["source_version"] == "1"
    assert loop.lineage["rows"] == 100  # the shifted half's labelled rows
    assert len(loop.lineage["data_sha256"]) == 64
    # ... and beats v1 on the labelled traffic that came after it, so it is promoted.
    assert loop.trial_labels == 100  # v2's trial: the clinical traffic after it was trained, all labelled
    assert loop.labelled_shadow == 100
    assert loop.after["accuracy"] > loop.before["accuracy"]
    assert loop.after["f1_macro"] > loop.before["f1_macro"]
    assert loop.promoted
    assert loop.decision.startswith("promoted: v2's accuracy")
    run = settings.model_copy(update={"topics": settings.topics.model_copy(update={"prefix": summary.prefix})})
    route = read_routes(run)["breast-cancer"]
    assert [(v.version, v.weight) for v in route.versions] == [("2", 100.0)]
    assert loop.served_by == "breast-cancer:2"  # the promoted version serves the model's bare name
    assert loop.stopped is None
    # The demo's own models stay as built: v2 lives in the run's repository.
    assert ModelRepository(settings.models_dir).versions("breast-cancer") == ["1"]
