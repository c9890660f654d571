"""The demo's quality-loop data: labels that name its events, a concept drift, windows split at the shift."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

from inferstream import Settings
from inferstream.demo import (
    DIAGNOSES,
    LOOP_MIN_EVENTS,
    QUALITY_WINDOW_S,
    _close_the_loop,
    clinical_cases,
    clinical_every_s,
    clinical_labels,
    further_clinical,
    sample_events,
)
from inferstream.demo_quality import QualityLoop

ORIGIN = datetime(2026, 1, 1, tzinfo=UTC)


def test_every_clinical_event_has_one_label_by_its_event_id() -> None:
    clinical = [e for e in sample_events(400, origin=ORIGIN) if e["type"] == "clinical"]
    labels = clinical_labels(400)
    assert [label["id"] for label in labels] == [event["id"] for event in clinical]
    assert {label["id_type"] for label in labels} == {"event"}
    assert {label["label"] for label in labels} == set(DIAGNOSES)


def test_the_shifted_patients_keep_their_diagnoses_while_their_measurements_grow() -> None:
    cases = list(clinical_cases(200))
    baseline, shifted = cases[:100], cases[100:]
    assert not any(s for _, s, _ in baseline)
    assert all(s for _, s, _ in shifted)
    for (before, _, diagnosis), (after, _, same) in zip(baseline, shifted, strict=True):
        assert same == diagnosis  # the label does not move ...
        assert after["mean_radius"] == before["mean_radius"] * 1.3  # ... when the measurement does


def test_the_shift_falls_on_a_quality_window_boundary() -> None:
    every_s = clinical_every_s(400)
    times = [e["event_time"] for e in sample_events(400, origin=ORIGIN, every_s=every_s) if e["type"] == "clinical"]
    windows = [int((t - ORIGIN).total_seconds() // QUALITY_WINDOW_S) for t in times]
    assert windows[:100] == sorted(windows[:100])
    assert set(windows[:100]) == {0, 1, 2, 3}
    assert set(windows[100:]) == {4, 5, 6, 7}
    assert times[100] == ORIGIN + timedelta(seconds=4 * QUALITY_WINDOW_S)


def test_the_traffic_after_retraining_is_new_patients_with_new_ids_after_the_sample() -> None:
    every_s = clinical_every_s(400)
    events, labels = further_clinical(400, 100, ORIGIN, every_s)
    sample = list(sample_events(400, origin=ORIGIN, every_s=every_s))
    assert not {e["id"] for e in events} & {e["id"] for e in sample}
    assert [label["id"] for label in labels] == [e["id"] for e in events]
    seen = [features for features, shifted, _ in clinical_cases(200) if shifted]
    assert not [e for e in events if e["features"] in seen]
    assert min(e["event_time"] for e in events) > max(e["event_time"] for e in sample if "event_time" in e)


def test_a_run_too_small_for_the_loop_says_why_and_touches_nothing(tmp_path: Path) -> None:
    said: list[str] = []
    loop = QualityLoop(Settings(state_dir=tmp_path), said.append, window_s=QUALITY_WINDOW_S, min_labels=10)
    _close_the_loop(None, loop, LOOP_MIN_EVENTS - 2, ORIGIN, None)  # type: ignore[arg-type]
    assert loop.summary.stopped is not None
    assert f"--events {LOOP_MIN_EVENTS}" in loop.summary.stopped
    assert said == [f"quality loop stopped: {loop.summary.stopped}"]
    assert loop.summary.labels == 0
    assert loop.summary.retrained is None
