"""Columnar requests against the real broker: many rows in, one prediction batch out, bad records dead-lettered."""

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from inferstream import Client, Settings
from inferstream.connectors.kafka import Producer
from inferstream.errors import RecordValidationError, RequestRejectedError
from inferstream.schemas import Prediction
from inferstream.schemas.columnar import headers_for, prediction_rows, write_arrow
from inferstream.schemas.records import InferenceBatchRequest, PredictionBatch
from inferstream.serving.demo_models import TABULAR_NAME, tabular_rows
from inferstream.serving.repository import ModelRepository
from inferstream.serving.worker import InferenceWorker
from inferstream.stack.testing import running_in_thread

ROWS = 256


@pytest.fixture
def serving(settings: Settings, models_dir: Path) -> Iterator[tuple[Settings, InferenceWorker]]:
    settings = settings.model_copy(update={"models_dir": models_dir})
    with Client(settings) as client:
        client.topics.ensure_platform_topics()
    worker = InferenceWorker(settings, ModelRepository(models_dir).resolve(TABULAR_NAME))
    with running_in_thread(worker):
        yield settings, worker


def _columns() -> dict[str, list[float]]:
    rows, _ = tabular_rows()
    picked = [rows[i % len(rows)] for i in range(ROWS)]
    return {name: [row[name] for row in picked] for name in picked[0]}


def test_a_columnar_request_is_answered_as_its_rows_one_by_one_in_both_forms(
    serving: tuple[Settings, InferenceWorker],
) -> None:
    settings, _worker = serving
    columns = _columns()
    names = list(columns)
    with Client(settings) as client:
        one_by_one = [
            client.predict(TABULAR_NAME, {n: columns[n][i] for n in names}, version="1", timeout=30).outputs
            for i in range(0, ROWS, 16)
        ]
        arrow = client.predict_batch(TABULAR_NAME, pa.table(columns), version="1", timeout=30)
        json = client.predict_batch(TABULAR_NAME, columns, version="1", timeout=30, form="json")
        rows = client.predict_batch(
            TABULAR_NAME, [{n: columns[n][i] for n in names} for i in range(ROWS)], version="1", timeout=30
        )
    for batch in (arrow, json, rows):
        assert isinstance(batch, PredictionBatch)
        assert batch.rows == ROWS
        assert batch.inputs == columns
        expanded = prediction_rows(batch)
        assert len(expanded) == ROWS
        for single, row in zip(one_by_one, expanded[::16], strict=True):
            assert row.outputs["label"] == single["label"]
            for label, p in single["probabilities"].items():
                assert row.outputs["probabilities"][label] == pytest.approx(p, abs=1e-5)


def test_a_malformed_columnar_record_is_dead_lettered_and_the_next_is_served(
    serving: tuple[Settings, InferenceWorker],
) -> None:
    settings, _worker = serving
    columns = _columns()
    first = next(iter(columns))
    topic = settings.topics.request_topic(TABULAR_NAME, "1")
    head = {"request_id": "", "model": TABULAR_NAME, "version": "1"}
    arrow_headers = headers_for(InferenceBatchRequest, "arrow")
    json_headers = headers_for(InferenceBatchRequest, "json")
    ragged = {**columns, first: columns[first][:-1]}
    missing = {k: v for k, v in columns.items() if k != first}
    with Producer(settings) as producer:
        producer.produce(topic, b"not arrow at all", b"garbage", arrow_headers)
        producer.produce(
            topic, write_arrow(pa.record_batch(missing), {**head, "request_id": "missing"}), b"missing", arrow_headers
        )
        ragged_json = InferenceBatchRequest.model_construct(**{**head, "request_id": "ragged"}, columns=ragged)
        producer.produce(topic, ragged_json.model_dump_json().encode(), b"ragged", json_headers)
        producer.produce(
            topic, write_arrow(pa.record_batch(columns), {**head, "request_id": "good"}), b"good", arrow_headers
        )
        producer.flush()
    with Client(settings) as client:
        answers = list(client.subscribe("predictions", from_beginning=True, max_records=1, idle_timeout=60))
        letters = {letter.original_key: letter for letter in client.dead_letters()}
        # Bad input is refused at once by the SDK, with the field path, before anything is sent.
        with pytest.raises(RecordValidationError, match="columns"):
            client.predict_batch(TABULAR_NAME, ragged, version="1", timeout=30)
        with pytest.raises(RecordValidationError, match="no columns"):
            client.predict_batch(TABULAR_NAME, {}, version="1", timeout=30)
        # A worker's refusal comes back at once too.
        with pytest.raises(RequestRejectedError, match="missing feature"):
            client.predict_batch(TABULAR_NAME, missing, version="1", timeout=30)
    assert [m.key for m in answers] == [b"good"]
    assert isinstance(answers[0].record, PredictionBatch)
    assert answers[0].record.rows == ROWS
    assert set(letters) >= {b"garbage", b"missing", b"ragged"}
    assert "Arrow IPC" in letters[b"garbage"].error_message
    assert "missing feature" in letters[b"missing"].error_message
    assert "every column needs one value per row" in letters[b"ragged"].error_message
    assert not any(isinstance(m.record, Prediction) for m in answers)
