"""A bulk histogram exports what prometheus_client's own histogram would for the same observations."""

from __future__ import annotations

import random

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from inferstream.metrics import LATENCY_BUCKETS, BulkHistogram


def test_batches_short_and_long_give_the_same_series_as_one_observation_at_a_time() -> None:
    values = [random.Random(7).expovariate(20) for _ in range(500)] + [0.0, 0.001, 60.0, 1e6]
    bulk_registry, plain_registry = CollectorRegistry(), CollectorRegistry()
    bulk = BulkHistogram("t_seconds", "t", ["model"], LATENCY_BUCKETS, namespace="x", registry=bulk_registry)
    plain = Histogram("t_seconds", "t", ["model"], namespace="x", registry=plain_registry, buckets=LATENCY_BUCKETS)
    child = bulk.labels("m")
    child.observe_many(values[:5])  # bucketed in Python
    child.observe_many(values[5:400])  # with numpy
    child.observe(values[400])
    child.observe_many(values[401:])
    for value in values:
        plain.labels("m").observe(value)
    sample = {s.name + str(sorted(s.labels.items())): s.value for f in bulk_registry.collect() for s in f.samples}
    expected = {
        s.name + str(sorted(s.labels.items())): s.value
        for f in plain_registry.collect()
        for s in f.samples
        if not s.name.endswith("_created")
    }
    assert sample.keys() == expected.keys()
    for key, value in expected.items():
        assert abs(sample[key] - value) <= 1e-9 * max(1.0, abs(value)), key
    assert b'x_t_seconds_bucket{le="+Inf",model="m"} 504.0' in generate_latest(bulk_registry)
