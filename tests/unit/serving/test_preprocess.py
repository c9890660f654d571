"""The tabular preprocessor: a request it cannot feed is refused by position, the rest are fed."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from inferstream.schemas.records import InferenceRequest
from inferstream.serving.demo_models import TABULAR_NAME, tabular_rows
from inferstream.serving.preprocess import TabularPreprocessor
from inferstream.serving.repository import ModelRepository


def _request(index: int, inputs: dict[str, object]) -> InferenceRequest:
    return InferenceRequest(request_id=f"r{index}", model=TABULAR_NAME, version="1", inputs=inputs)


def test_a_number_beyond_float32_or_nan_refuses_its_request_alone(models_dir: Path) -> None:
    # pytest turns warnings into errors: a cast that warned of overflow would raise here, as it
    # stopped a worker run so.
    preprocessor = TabularPreprocessor(ModelRepository(models_dir).get(TABULAR_NAME, "1").config)
    rows, _ = tabular_rows()
    huge, nan = dict(rows[1]), dict(rows[2])
    huge["mean_radius"] = 1e300
    nan["mean_area"] = None
    prepared = preprocessor.prepare([_request(0, rows[0]), _request(1, huge), _request(2, nan), _request(3, rows[3])])
    assert prepared.positions == [0, 3]
    assert prepared.errors == {
        1: "feature(s) mean_radius beyond the range of float32",
        2: "NaN in feature(s) mean_area (allow_nan is off)",
    }
    matrix = prepared.feeds[preprocessor.input_name]
    assert matrix.shape == (2, len(preprocessor.features))
    assert np.isfinite(matrix).all()
