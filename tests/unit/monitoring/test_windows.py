"""Windows (count, event time, sliding), the watermark, hysteresis and bad input, without a broker."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from inferstream.monitoring.extract import Extractor
from inferstream.monitoring.spec import AlertingSpec, ColumnSpec, WindowSpec
from inferstream.monitoring.stats import profile_column
from inferstream.monitoring.window import Hysteresis, Windows

TP0 = ("predictions", 0)
TP1 = ("predictions", 1)
COLUMNS = [ColumnSpec(name="x"), ColumnSpec(name="label", kind="prediction")]
KINDS = {"x": "numerical", "label": "categorical"}


def _profiles() -> dict[str, Any]:
    rng = np.random.default_rng(0)
    labels = np.array(rng.choice(["a", "b"], 3000), dtype=object)
    return {
        "x": profile_column("x", "numerical", rng.normal(size=3000)),
        "label": profile_column("label", "categorical", labels),
    }


def _record(x: Any, t: float, label: str = "a", **extra: Any) -> bytes:
    inputs = {} if x == "absent" else {"x": x}
    return json.dumps(
        {"model": "m", "version": "1", "event_time": t, "inputs": inputs, "outputs": {"label": label}, **extra}
    ).encode()


def _batch(extractor: Extractor, values: list[bytes], tp: tuple[str, int] = TP0, first: int = 0) -> Any:
    return extractor.decode([(v, tp, first + i) for i, v in enumerate(values)])


def test_count_windows_tumble_and_measure_drift() -> None:
    spec = WindowSpec(kind="count", size=1000)
    windows = Windows(spec, _profiles(), AlertingSpec())
    extractor = Extractor(COLUMNS, KINDS, model="m", version=None)
    rng = np.random.default_rng(1)
    stationary = [
        _record(float(v), 1000.0 + i, str(rng.choice(["a", "b"]))) for i, v in enumerate(rng.normal(size=1500))
    ]
    closed = windows.add(_batch(extractor, stationary), 0.0)
    assert [w.count for w in closed] == [1000]
    assert not closed[0].dataset_drift
    shifted = [_record(float(v), 3000.0 + i, "b") for i, v in enumerate(rng.normal(2, 1, 1000))]
    closed = windows.add(_batch(extractor, shifted, first=1500), 0.0)
    assert [w.count for w in closed] == [1000]
    assert closed[0].dataset_drift
    assert set(closed[0].drifted_columns) == {"x", "label"}
    # 500 rows wait in the open window: a restart resumes at the first of them.
    assert windows.commit_offsets() == {TP0: 2000}
    assert windows.state()["rows"] == 2000


def test_sliding_count_windows_share_panes() -> None:
    windows = Windows(WindowSpec(kind="count", size=1000, slide=500), _profiles(), AlertingSpec())
    extractor = Extractor(COLUMNS, KINDS, model="m", version=None)
    rows = [_record(float(v), float(i)) for i, v in enumerate(np.random.default_rng(2).normal(size=2500))]
    closed = windows.add(_batch(extractor, rows), 0.0)
    assert [w.count for w in closed] == [1000, 1000, 1000, 1000]


def test_event_time_windows_close_on_the_lowest_watermark() -> None:
    spec = WindowSpec(kind="time", duration_s=10, idle_partition_s=60)
    windows = Windows(spec, _profiles(), AlertingSpec())
    windows.assigned([TP0, TP1], 0.0)
    extractor = Extractor(COLUMNS, KINDS, model="m", version=None)
    fast = [_record(0.1 * i, 100.0 + 0.01 * i) for i in range(2500)]  # 100 s .. 125 s
    assert windows.add(_batch(extractor, fast, TP0), 1.0) == []  # partition 1 has said nothing
    slow = [_record(0.1, 100.0 + i) for i in range(12)]  # 100 s .. 111 s
    closed = windows.add(_batch(extractor, slow, TP1), 2.0)
    # Watermark min(125, 111) = 111: only [100, 110) closed, with both partitions' rows in it.
    assert [(w.start.timestamp(), w.end.timestamp(), w.count) for w in closed] == [(100.0, 110.0, 1000 + 10)]
    late = [_record(0.1, 105.0)]
    assert windows.add(_batch(extractor, late, TP1, first=12), 3.0) == []
    # Partition 1 falls silent: after idle_partition_s the watermark is partition 0's alone.
    closed = windows.close_due(100.0)
    assert [(w.start.timestamp(), w.late_records) for w in closed] == [(110.0, 1)]


def test_bad_input_is_counted_not_fatal() -> None:
    windows = Windows(WindowSpec(kind="count", size=100), _profiles(), AlertingSpec())
    extractor = Extractor(COLUMNS, KINDS, model="m", version=None)
    good = [_record(0.5, float(i)) for i in range(90)]
    bad = [
        _record("absent", 1.0),
        _record("big", 1.0),
        _record(None, 1.0),
        _record(float("nan"), 1.0)
        if False
        else b'{"model":"m","version":"1","event_time":1,"inputs":{"x":NaN},"outputs":{"label":"a"}}',
        _record(1.0, 1.0, label=["not", "a", "label"]),  # type: ignore[arg-type]
        b"not json",
        b'{"model": "m", "inputs": {}}',
        _record(1.0, 1.0, model="other"),
    ] + [_record(0.5, 2.0)] * 8
    closed = windows.add(_batch(extractor, good + bad), 0.0)
    assert len(closed) == 1
    window = closed[0]
    assert window.quality["x"] == {"missing": 1, "invalid": 1, "nan": 2}
    assert window.quality["label"]["invalid"] == 1
    assert window.bad_records == 2
    assert extractor.skipped == 1
    assert window.scores["x"] is not None


def test_integers_beyond_a_float_are_invalid_values_not_a_crash() -> None:
    # JSON has no limit on integers (the lenient parser reads them): one too large for a float
    # is an invalid value, an event time too large a bad record, a sampled row's value None.
    huge = "1" * 400
    extractor = Extractor(COLUMNS, KINDS, model="m", version=None)
    values = [
        _record(0.5, 1.0),
        f'{{"model":"m","event_time":1,"inputs":{{"x":{huge}}},"outputs":{{"label":"a"}}}}'.encode(),
        f'{{"model":"m","event_time":{huge},"inputs":{{"x":1}},"outputs":{{"label":"a"}}}}'.encode(),
        _record(2**70, 1.0),
    ]
    batch = _batch(extractor, values)
    assert batch.bad_records == 1
    column = batch.columns["x"]
    assert column.values.tolist() == [0.5, float(2**70)]
    assert column.invalid.tolist() == [1]
    assert [extractor.row_values(row)["x"] for row in batch.raw] == [0.5, None, float(2**70)]


def test_hysteresis_k_of_n_resolve_after_m_and_cooldown() -> None:
    spec = AlertingSpec(alert_after=2, alert_window=3, resolve_after=2, cooldown_s=100)
    h = Hysteresis(spec)
    seen = [
        h.update(d, float(t)) for t, d in enumerate([True, False, False, True, True, True, False, True, False, False])
    ]
    assert seen == [None, None, None, None, "drift", None, None, None, None, "resolved"]
    # Within the cooldown of the last alert, drift does not alert again.
    assert [h.update(True, 10.0), h.update(True, 11.0)] == [None, None]
    assert h.update(True, 200.0) == "drift"
    again = Hysteresis.restore(spec, h.state())
    assert again.active
    assert again.last_alert_at == 200.0


def test_undecodable_records_count_in_the_oldest_open_time_window() -> None:
    windows = Windows(WindowSpec(kind="time", duration_s=10), _profiles(), AlertingSpec())
    windows.assigned([TP0], 0.0)
    extractor = Extractor(COLUMNS, KINDS, model="m", version=None)
    # Before any window is open: they wait for the first one.
    assert windows.add(_batch(extractor, [b"not json"]), 1.0) == []
    # One batch opens the first window, holds bad records and closes it: they are in it.
    rows = [_record(0.5, 100.0 + i) for i in range(10)] + [b"{", b'{"model": "m", "version": "1"}']
    rows += [_record(0.5, 110.0 + i) for i in range(10)]
    closed = windows.add(_batch(extractor, rows, first=1), 1.0)
    assert [(w.count, w.bad_records) for w in closed] == [(10, 3)]
