"""Pure parts of the Beam jobs: file chunks, document ids, prediction outputs, the runner choice."""

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.runners.portability.fn_api_runner.fn_runner import FnApiRunner

from inferstream.errors import ConfigError
from inferstream.jobs._model import LINE, SOURCE, model_outputs
from inferstream.jobs._pipeline import JobResult, ReadFiles, check_inputs, make_pipeline, rejects_path
from inferstream.jobs.backfill import document_ids
from inferstream.serving.config import ModelConfig


def _read(path: Path, rows: int) -> tuple[list[pa.Table], list[pa.Table]]:
    tables, rejects = [], []
    for item in ReadFiles(rows).process(str(path)):
        if isinstance(item, pa.Table):
            tables.append(item)
        else:
            rejects.append(item.value)
    return tables, rejects


def test_jsonl_chunks_carry_lines_and_source_and_keep_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text('{"text": "a"}\n\n{"text": "b"}\n[1]\n{"text": "c"}\n')
    tables, rejects = _read(path, 2)
    assert [t.num_rows for t in tables] == [2, 1]
    assert [t.column(LINE).to_pylist() for t in tables] == [[1, 3], [5]]
    assert tables[0].column(SOURCE).cast(pa.string()).to_pylist() == [str(path)] * 2
    assert [r.to_pylist() for r in rejects] == [
        [{"source": str(path), "line": 4, "reason": "expected a JSON object, got list", "raw": b"[1]"}]
    ]


def test_parquet_chunks_number_rows_across_batches(tmp_path: Path) -> None:
    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"text": [f"t{i}" for i in range(7)]}), path)
    tables, rejects = _read(path, 3)
    assert [t.column(LINE).to_pylist() for t in tables] == [[1, 2, 3], [4, 5, 6], [7]]
    assert rejects == []


def test_document_ids_prefer_the_id_column() -> None:
    source = pa.DictionaryArray.from_arrays(pa.array([0, 0], pa.int32()), pa.array(["/data/x.jsonl"]))
    rows = pa.table({LINE: pa.array([3, 9], pa.int64()), SOURCE: source})
    assert document_ids(rows).to_pylist() == ["x.jsonl:3", "x.jsonl:9"]
    with_ids = rows.append_column("id", pa.array([1, 2]))
    assert document_ids(with_ids).to_pylist() == ["1", "2"]


def test_model_outputs_name_labels_and_probabilities() -> None:
    config = ModelConfig.model_validate(
        {
            "name": "m",
            "version": "1",
            "kind": "classifier",
            "preprocessing": {"type": "tabular", "features": ["a"]},
            "inputs": [{"name": "x", "source": "features", "shape": [-1, 1]}],
            "outputs": {"label": "label", "probabilities": "p", "labels": ["no", "yes"]},
        }
    )
    rows = model_outputs(config, {"label": np.array([1, 0]), "p": np.array([[0.25, 0.75], [0.9, 0.1]])}, 2)
    assert rows == [
        {"label": "yes", "probabilities": {"no": 0.25, "yes": 0.75}},
        {"label": "no", "probabilities": {"no": 0.9, "yes": 0.1}},
    ]


def test_runner_defaults_to_fn_api_and_flags_pass_through() -> None:
    assert isinstance(make_pipeline([]).runner, FnApiRunner)
    named = make_pipeline(["--runner", "FnApiRunner", "--job_name", "nightly"])
    assert named.options.get_all_options()["job_name"] == "nightly"


def test_small_helpers(tmp_path: Path) -> None:
    assert rejects_path(tmp_path / "e.parquet") == tmp_path / "e.rejects.parquet"
    assert JobResult("x", rows_in=5, rows_out=3, rejected=2).accounted
    assert not JobResult("x", rows_in=5, rows_out=3, rejected=1).accounted
    with pytest.raises(ConfigError, match="does not exist"):
        check_inputs([tmp_path / "missing.parquet"])
