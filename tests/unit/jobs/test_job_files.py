"""Batch jobs that read and write files only: backfill and batch scoring, on the demo models."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from inferstream.config import Settings
from inferstream.demo import sample_texts
from inferstream.errors import ConfigError
from inferstream.jobs.backfill import backfill
from inferstream.jobs.reference import build as build_reference_job
from inferstream.jobs.score import score
from inferstream.monitoring import reference as references
from inferstream.monitoring import table as inference_table
from inferstream.serving.demo_models import TABULAR_NAME, tabular_rows
from inferstream.serving.onnx import OnnxModel
from inferstream.serving.repository import ModelRepository
from inferstream.serving.text import TextPreprocessor, pool


@pytest.fixture
def settings(models_dir: Path, tmp_path: Path) -> Settings:
    return Settings.load(models_dir=models_dir, state_dir=tmp_path / "state")


def _embed_directly(models_dir: Path, texts: list[str]) -> np.ndarray:
    version = ModelRepository(models_dir).resolve("minilm:1")
    model = OnnxModel(version).load()
    from inferstream.schemas.records import EmbeddingRequest

    prepared = TextPreprocessor(version.config, version.directory).prepare(
        [EmbeddingRequest.model_construct(text=t) for t in texts]  # type: ignore[call-arg]
    )
    hidden = model.run(prepared.feeds)["last_hidden_state"]
    return pool(hidden, prepared.attention_mask, "mean", True)


def test_backfill_jsonl_embeds_every_text_and_rejects_bad_lines(settings: Settings, tmp_path: Path) -> None:
    texts = sample_texts()[:90]
    corpus = tmp_path / "corpus.jsonl"
    lines = [json.dumps({"id": f"doc-{i}", "text": t}) for i, t in enumerate(texts)]
    lines[10:10] = ["{not json", json.dumps({"id": "empty", "text": "   "}), json.dumps({"id": "none"})]
    corpus.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out" / "embeddings.parquet"

    result = backfill(settings, [corpus], out)

    assert (result.rows_in, result.rows_out, result.rejected) == (93, 90, 3)
    assert result.accounted
    table = pq.read_table(out)
    assert sorted(table.column("id").to_pylist()) == sorted(f"doc-{i}" for i in range(90))
    assert table.schema.field("vector").type == pa.list_(pa.float32(), 384)
    by_id = {row["id"]: row for row in table.to_pylist()}
    # The same vectors as the model run directly (the streaming worker's path), unit length.
    expected = _embed_directly(settings.models_dir, texts[:3])
    got = np.array([by_id[f"doc-{i}"]["vector"] for i in range(3)], dtype=np.float32)
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert by_id["doc-0"]["text"] == texts[0]
    rejects = sorted(pq.read_table(result.rejects_path).to_pylist(), key=lambda r: r["line"])
    assert [(r["line"], r["raw"]) for r in rejects] == [
        (11, b"{not json"),
        (12, b'{"id":"empty","text":"   "}'),
        (13, b'{"id":"none"}'),
    ]
    assert "malformed JSON" in rejects[0]["reason"]
    assert rejects[1]["reason"] == "text is empty"
    assert "missing" in rejects[2]["reason"]


def test_backfill_parquet_and_csv_without_ids(settings: Settings, tmp_path: Path) -> None:
    texts = sample_texts()[100:140]
    pq.write_table(pa.table({"text": texts[:20]}), tmp_path / "a.parquet")
    with open(tmp_path / "b.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([["text"], *([t] for t in texts[20:])])
    out = tmp_path / "e.parquet"

    result = backfill(settings, [tmp_path / "a.parquet", tmp_path / "b.csv"], out)

    assert (result.rows_in, result.rows_out, result.rejected) == (40, 40, 0)
    table = pq.read_table(out)
    ids = set(table.column("id").to_pylist())
    assert {"a.parquet:1", "a.parquet:20", "b.csv:2", "b.csv:21"} <= ids
    assert sorted(table.column("text").to_pylist()) == sorted(texts)


def test_backfill_refuses_a_classifier(settings: Settings, tmp_path: Path) -> None:
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"text": "hello"}\n')
    with pytest.raises(ConfigError, match="not an embedder"):
        backfill(settings, [corpus], tmp_path / "o.parquet", model=TABULAR_NAME)


def test_backfill_to_the_index_is_searchable_and_idempotent(settings: Settings, tmp_path: Path) -> None:
    from inferstream.search import Searcher

    texts = sample_texts()[:30]
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"p{i}", "text": t}) + "\n" for i, t in enumerate(texts)))
    first = backfill(settings, [corpus], tmp_path / "o.parquet", to="index")  # the embedded store (no URL set)
    again = backfill(settings, [corpus], tmp_path / "o.parquet", to="index")  # same ids: replaced, not doubled
    assert first.indexed == again.indexed == len(texts) - first.rejected
    with Searcher(settings) as searcher:
        result = searcher.search(texts[7], k=50)  # the passage itself: its own vector is the nearest
    assert result.hits[0].id == "p7"
    assert len({hit.id for hit in result.hits}) == len(result.hits) == first.indexed


def test_score_writes_the_inference_table(settings: Settings, tmp_path: Path) -> None:
    rows, targets = tabular_rows()
    rows = [dict(r, request_id=f"r{i}") for i, r in enumerate(rows[:150])]
    rows[7] = {**rows[7], "mean_radius": None}
    source = tmp_path / "patients.parquet"
    pq.write_table(pa.Table.from_pylist(rows), source)

    result = score(settings, [source], model=TABULAR_NAME)

    assert (result.rows_in, result.rows_out, result.rejected) == (150, 149, 1)
    table = inference_table.read_table(inference_table.table_dir(settings), model=TABULAR_NAME)
    records = {r["request_id"]: r for r in inference_table.records(table)}
    assert len(records) == 149
    assert "r7" not in records
    labels = {"malignant": 0, "benign": 1}
    right = sum(labels[records[f"r{i}"]["outputs"]["label"]] == targets[i] for i in range(150) if i != 7)
    assert right / 149 > 0.9  # the demo classifier's accuracy on its own data
    assert records["r0"]["inputs"]["mean_radius"] == rows[0]["mean_radius"]
    rejects = pq.read_table(result.rejects_path).to_pylist()
    assert [(r["line"], "mean_radius" in r["reason"]) for r in rejects] == [(8, True)]

    again = score(settings, [source], model=TABULAR_NAME)  # a rerun rewrites the same files
    assert again.rows_out == 149
    assert inference_table.read_table(inference_table.table_dir(settings), model=TABULAR_NAME).num_rows == 149


MONITORS = """
[[monitors]]
name = "bc"
model = "breast-cancer"
version = "1"
columns = [{ name = "mean_radius" }, { name = "label", kind = "prediction" }]
"""


def test_reference_from_scored_files_matches_the_monitor_command(settings: Settings, tmp_path: Path) -> None:
    rows, _ = tabular_rows()
    source = tmp_path / "train.parquet"
    pq.write_table(pa.Table.from_pylist(rows), source)
    score(settings, [source], model=TABULAR_NAME)
    files = [f.path for f in inference_table.table_files(inference_table.table_dir(settings))]
    monitors = tmp_path / "monitors.toml"
    monitors.write_text(MONITORS)
    settings = settings.model_copy(
        update={"monitoring": settings.monitoring.model_copy(update={"monitors_file": monitors})}
    )

    built = build_reference_job(settings, "bc", files)

    assert built.path.name == "v0001"
    assert built.count == len(rows)
    assert set(built.profiles) == {"mean_radius", "label"}
    assert built.profiles["mean_radius"].kind == "numerical"
    assert built.profiles["label"].kind == "categorical"
    # The same profile `inferstream monitor reference --parquet` builds from the same rows.
    table = inference_table.read_table(inference_table.table_dir(settings))
    export = inference_table.export(table, tmp_path / "export.parquet")
    spec = settings.monitoring.monitor("bc")
    direct = references.build_reference(
        spec, references.records_from_parquet(export), root=tmp_path / "direct", source="export"
    )
    for name, profile in built.profiles.items():
        mine, theirs = profile.to_json(), direct.profiles[name].to_json()
        # Rows arrive in another order: sums differ in the last bits, nothing more.
        for key, value in mine.items():
            if isinstance(value, float) or (isinstance(value, list) and value and isinstance(value[0], float)):
                assert value == pytest.approx(theirs[key]), key
            else:
                assert value == theirs[key], key
    assert references.reference_for(settings, spec).path == built.path  # what the monitor will use


def test_cli_backfill_takes_beam_options_after_the_files(settings: Settings, tmp_path: Path) -> None:
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(sample_texts()[:20])))
    out = tmp_path / "e.parquet"
    env = {**os.environ, "INFERSTREAM_MODELS_DIR": str(settings.models_dir), "COLUMNS": "300"}
    done = subprocess.run(
        [sys.executable, "-m", "inferstream", "job", "backfill", str(corpus), "--direct_num_workers", "2",
         "--direct_running_mode", "multi_threading", "--out", str(out)],
        capture_output=True, env=env, timeout=180, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()
    assert "backfill: read 20, written 20, rejected 0" in done.stderr.decode()
    assert pq.read_table(out).num_rows == 20
