"""The columnar scorer: an Arrow request's features found by name whatever its columns' order, refusals named."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from inferstream.schemas.columnar import ColumnarRequest, decode_request, headers_for, write_arrow
from inferstream.schemas.records import InferenceBatchRequest
from inferstream.serving.columnar import ColumnarScorer
from inferstream.serving.demo_models import TABULAR_NAME, tabular_rows
from inferstream.serving.repository import ModelRepository

HEAD = {"request_id": "b1", "model": TABULAR_NAME, "version": "1"}


def _request(batch: pa.RecordBatch, index: int = 0) -> ColumnarRequest:
    value = write_arrow(batch, {**HEAD, "request_id": f"b{index}"})
    return decode_request(value, headers_for(InferenceBatchRequest, "arrow"))


def test_features_are_found_by_name_in_any_order_and_shape_after_shape(models_dir: Path) -> None:
    scorer = ColumnarScorer(ModelRepository(models_dir).get(TABULAR_NAME, "1").config)
    rows, _ = tabular_rows()
    table = pa.RecordBatch.from_pylist(rows[:4])
    expected = np.asarray([[row[name] for name in scorer.features] for row in rows[:4]], dtype=np.float32)
    shuffled = table.select(list(reversed(table.schema.names))).append_column("extra", pa.array(["a"] * 4))
    # Each shape twice (the second time its features' positions are known) and back again.
    for index, batch in enumerate([table, table, shuffled, shuffled, table]):
        matrix = scorer.feeds(_request(batch, index))[scorer.input_name]
        assert matrix.dtype == np.float32
        np.testing.assert_array_equal(matrix, expected)


def test_a_missing_feature_or_a_null_is_refused_with_the_column(models_dir: Path) -> None:
    scorer = ColumnarScorer(ModelRepository(models_dir).get(TABULAR_NAME, "1").config)
    rows, _ = tabular_rows()
    table = pa.RecordBatch.from_pylist(rows[:3])
    assert scorer.feeds(_request(table))  # this shape is known from now on
    with pytest.raises(ValueError, match="missing feature\\(s\\) mean_area of 30"):
        scorer.feeds(_request(table.drop_columns(["mean_area"])))
    nulls = dict(rows[1], mean_area=None, mean_radius=None)
    with pytest.raises(ValueError, match="NaN or null in feature\\(s\\) mean_radius, mean_area"):
        scorer.feeds(_request(pa.RecordBatch.from_pylist([rows[0], nulls], schema=table.schema)))
