"""Drift monitoring: detection quality on the demo model's data, and monitor throughput vs evidently alone.

    .venv/bin/python benchmarks/drift.py --quick     # under a minute
    .venv/bin/python benchmarks/drift.py             # 200 stationary windows of 10k rows, ~ a few minutes

The stream: predictions of the demo tabular model (breast-cancer data, 10 features,
rows drawn with replacement, a 2% measurement jitter). Quality: many stationary
windows (false alarm rate), then the demo's 1.3x shift at a known window (detection
delay in windows), then back to normal (windows until resolved). Throughput: the
monitor's path (JSON decode into columns, panes, sketches, statistics) on in-memory
windows, against evidently's ``DataDriftPreset`` alone on the same windows already
in pandas; then end to end through Kafka (produce, then a ``DriftMonitor`` reads it;
timed from its first batch, its group join shown apart).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import warnings

import numpy as np

from _harness import add_common_args, bench_client, broker, note, print_figures, result_line
from inferstream.connectors.kafka import Producer
from inferstream.monitoring.extract import Extractor
from inferstream.monitoring.reference import build_reference, references_dir
from inferstream.monitoring.spec import MonitorSpec
from inferstream.monitoring.window import Hysteresis, Windows
from inferstream.schemas import SCHEMA_HEADER
from inferstream.serving.demo_models import tabular_rows
from inferstream.streams.drift_monitor import DriftMonitor

FEATURES = 10
SHIFT = 1.3
BASE = 1_735_689_000  # a whole multiple of every window length used here


class Stream:
    """Prediction JSON bytes of the demo model, stationary or shifted, with event times one per ms."""

    def __init__(self, seed: int = 0) -> None:
        rows, target = tabular_rows()
        self.names = list(rows[0])[:FEATURES]
        self.data = np.asarray([[row[n] for n in self.names] for row in rows])
        self.labels = ["benign" if t else "malignant" for t in target]
        self.rng = np.random.default_rng(seed)
        self.t = 0

    def rows(self, count: int, scale: float = 1.0) -> tuple[list[bytes], np.ndarray]:
        picks = self.rng.integers(0, len(self.data), count)
        values = self.data[picks] * scale * self.rng.normal(1.0, 0.02, (count, FEATURES))
        out = []
        for i, (k, row) in enumerate(zip(picks.tolist(), values.tolist(), strict=True)):
            record = {
                "request_id": f"r{self.t + i}",
                "event_time": (BASE * 1000 + self.t + i) / 1000,
                "model": "breast-cancer",
                "version": "1",
                "inputs": dict(zip(self.names, row, strict=True)),
                "outputs": {"label": self.labels[k]},
                "latency": {"queue_ms": 0.1, "compute_ms": 0.1, "total_ms": 0.3},
            }
            out.append(json.dumps(record).encode())
        self.t += count
        return out, values


def spec(names: list[str], window: int, kind: str = "count") -> MonitorSpec:
    return MonitorSpec.model_validate(
        {
            "name": "bench",
            "model": "breast-cancer",
            "columns": [{"name": n} for n in names],
            "window": {"kind": kind, "size": window, "duration_s": window / 1000, "report_rows": 100},
            "alerting": {"alert_after": 1, "alert_window": 1, "resolve_after": 1},
        }
    )


def quality(stream: Stream, monitor: MonitorSpec, profiles: dict, window: int, stationary: int) -> dict[str, float]:
    windows = Windows(monitor.window, profiles, monitor.alerting)
    hysteresis = Hysteresis(monitor.alerting)
    extractor = Extractor(monitor.columns, dict.fromkeys(profiles, "numerical"), model="breast-cancer", version=None)
    phases = [("stationary", 1.0, stationary), ("shifted", SHIFT, 5), ("recovered", 1.0, 5)]
    verdicts: list[tuple[str, bool, str | None]] = []
    decode_s = fold_s = 0.0
    rows_done = 0
    for phase, scale, count in phases:
        for _ in range(count):
            values, _ = stream.rows(window, scale)
            started = time.perf_counter()
            batch = extractor.decode([(v, ("p", 0), i) for i, v in enumerate(values)])
            decoded = time.perf_counter()
            closed = windows.add(batch, 0.0)
            fold_s += time.perf_counter() - decoded
            decode_s += decoded - started
            rows_done += window
            verdicts += [(phase, w.dataset_drift, hysteresis.update(w.dataset_drift, float(w.index))) for w in closed]
    false_alarms = sum(d for p, d, _ in verdicts if p == "stationary")
    first_shift = next(i for i, (p, _, _) in enumerate(verdicts) if p == "shifted")
    first_recovered = next(i for i, (p, _, _) in enumerate(verdicts) if p == "recovered")
    alerts = [i for i, (_, _, t) in enumerate(verdicts) if t == "drift" and i >= first_shift]
    resolved = [i for i, (_, _, t) in enumerate(verdicts) if t == "resolved" and i >= first_recovered]
    return {
        "false_alarm_rate": false_alarms / stationary,
        "detection_delay_windows": (alerts[0] - first_shift + 1) if alerts else float("inf"),
        "resolve_delay_windows": (resolved[0] - first_recovered + 1) if resolved else float("inf"),
        "monitor_pred_per_s": rows_done / (decode_s + fold_s),
        "stats_pred_per_s": rows_done / fold_s,
    }


def evidently_alone(stream: Stream, names: list[str], reference: np.ndarray, window: int, rounds: int) -> float:
    import pandas as pd

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from evidently import DataDefinition, Dataset, Report
        from evidently.presets import DataDriftPreset

        definition = DataDefinition(numerical_columns=names)
        ref = Dataset.from_pandas(pd.DataFrame(reference, columns=names), data_definition=definition)
        frames = [pd.DataFrame(stream.rows(window)[1], columns=names) for _ in range(rounds)]
        started = time.perf_counter()
        for frame in frames:
            Report([DataDriftPreset()]).run(Dataset.from_pandas(frame, data_definition=definition), ref)
        return rounds * window / (time.perf_counter() - started)


def end_to_end(bootstrap: str, names: list[str], records: list[dict], window: int, total: int) -> float:
    with bench_client(bootstrap) as client:
        client.topics.ensure_platform_topics()
        import tempfile
        from pathlib import Path

        with tempfile.TemporaryDirectory() as state:
            settings = client.settings.model_copy(update={"state_dir": Path(state)})
            monitor_spec = spec(names, window, kind="time")
            build_reference(monitor_spec, records, root=references_dir(settings), source="bench")
            stream = Stream(seed=3)
            topic = settings.topics.platform_topics()["predictions"]
            header = [(SCHEMA_HEADER, b"prediction/1")]
            with Producer(settings) as producer:
                for _ in range(total // 10_000):
                    values, _ = stream.rows(10_000)
                    for i, value in enumerate(values):
                        producer.produce(topic, value, str(i).encode(), header)
                values, _ = stream.rows(window)  # one more window moves the watermark past the last
                for i, value in enumerate(values):
                    producer.produce(topic, value, str(i).encode(), header)
            monitor = DriftMonitor(settings, monitor_spec, reports=False, max_batch=20_000)
            launched = time.perf_counter()
            thread = threading.Thread(target=monitor.run, daemon=True)
            thread.start()
            expected = total // window
            deadline = time.monotonic() + 600
            # Timed from the first batch read, as the serving benchmark times its worker: joining
            # the consumer group is paid once per start, not per prediction (shown apart).
            while not monitor.stats.predictions and time.monotonic() < deadline:
                time.sleep(0.001)
            started = time.perf_counter()
            first = monitor.stats.predictions
            while monitor.stats.windows < expected and time.monotonic() < deadline:
                time.sleep(0.01)
            elapsed = time.perf_counter() - started
            monitor.stop()
            thread.join(60)
            note(
                f"end to end: {monitor.stats.windows} windows, {monitor.stats.predictions} predictions read; "
                f"{started - launched:.1f} s from start to the first batch (group join)"
            )
            return (monitor.stats.windows * window - first) / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser)
    parser.add_argument("--no-kafka", action="store_true", help="Skip the end-to-end figure through Kafka.")
    args = parser.parse_args()
    window = 10_000
    stationary = 15 if args.quick else 200
    e2e_total = 50_000 if args.quick else 500_000

    stream = Stream(seed=0)
    reference_bytes, reference_values = stream.rows(20_000)
    records = [json.loads(v) for v in reference_bytes]
    import tempfile
    from pathlib import Path

    monitor = spec(stream.names, window)
    with tempfile.TemporaryDirectory() as root:
        reference = build_reference(monitor, records, root=Path(root), source="bench")
    profiles = reference.for_spec(monitor)
    note(f"reference: 20000 rows, methods {sorted({p.method for p in profiles.values()})}")
    figures = quality(stream, monitor, profiles, window, stationary)
    note(f"quality over {stationary} stationary windows of {window} rows done")
    evidently_rate = evidently_alone(stream, stream.names, reference_values, window, rounds=2 if args.quick else 5)
    figures["evidently_pred_per_s"] = evidently_rate
    figures["speedup_vs_evidently"] = figures["monitor_pred_per_s"] / evidently_rate
    if not args.no_kafka:
        with broker(args.bootstrap_servers) as bootstrap:
            figures["e2e_kafka_pred_per_s"] = end_to_end(bootstrap, stream.names, records, window, e2e_total)

    print_figures(figures)
    print(
        f"goals: false alarms <= 1% ({figures['false_alarm_rate']:.1%}), detection <= 2 windows "
        f"({figures['detection_delay_windows']:g}), >= 20k predictions/s ({figures['monitor_pred_per_s']:.0f})"
    )
    print(result_line(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
