"""Backfill throughput (the Beam job, end to end) against the raw embedder on the same corpus, same run.

    .venv/bin/python benchmarks/backfill.py --quick     # 600 texts: a few minutes on 2 cores
    .venv/bin/python benchmarks/backfill.py

The corpus is ``demo.sample_texts()`` (passages of Python's documentation) as JSON
Lines. *Raw* is the model alone, as the streaming worker runs it: tokenize every
text, bucket by length into batches of the model's ``max_batch_size``, run ONNX,
pool — no files, no Beam. *Backfill* is ``inferstream job backfill`` on the
FnApiRunner: read the file, batch, embed, write Parquet, session load included.
The two alternate for a few rounds and each keeps its best (the CPUs may be shared).
Goal: backfill ≥ 0.8 of raw.

*Dask* is the same job with ``--runner dask`` over a local ``dask.distributed``
cluster of ``--dask-workers`` processes (default 2), started once before its rounds
(the job then finds its scheduler with ``--dask-address``), the corpus split into as
many files as there are workers so that each can take one; each worker loads the
model on its first bundle. Its rows and checksum must equal the FnApiRunner's.
Its keys come after the others on the ``RESULT`` line.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _harness import note, result_line
from inferstream.config import Settings
from inferstream.demo import sample_texts
from inferstream.jobs._pipeline import JobResult
from inferstream.jobs.backfill import backfill
from inferstream.schemas.records import EmbeddingRequest
from inferstream.serving.demo_models import build_demo_models
from inferstream.serving.onnx import OnnxModel
from inferstream.serving.repository import ModelRepository
from inferstream.serving.text import TextPreprocessor, bucket_by_length, pool


def raw_rate(models_dir: Path, texts: list[str]) -> float:
    """Texts a second through tokenizer, model and pooling alone (session already loaded)."""
    version = ModelRepository(models_dir).resolve("minilm:1")
    model = OnnxModel(version).load()
    text = TextPreprocessor(version.config, version.directory).load()
    spec = version.config.outputs
    size = version.config.batching.max_batch_size
    assert spec.embedding is not None
    started = time.perf_counter()
    prepared = text.prepare([EmbeddingRequest.model_construct(text=t) for t in texts])  # type: ignore[call-arg]
    done = 0
    for bucket in bucket_by_length(prepared.lengths, size):
        rows = np.asarray(bucket)
        width = int(prepared.lengths[rows].max())
        hidden = model.run({n: a[rows, :width] for n, a in prepared.feeds.items()})[spec.embedding]
        done += len(pool(hidden, prepared.attention_mask[rows, :width], spec.pooling, spec.normalize))
    return done / (time.perf_counter() - started)


def dask_rates(settings: Settings, corpus: list[Path], out: Path, rounds: int, workers: int) -> list[JobResult]:
    """The backfill on a local cluster of ``workers`` processes, ``rounds`` times (cluster started once)."""
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    ) as cluster:
        flags = ["--runner", "dask", "--dask-address", cluster.scheduler_address]
        return [backfill(settings, corpus, out.with_name(f"dask-{i}.parquet"), flags=flags) for i in range(rounds)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="A small corpus (600 texts), two rounds of each.")
    parser.add_argument("--rounds", type=int, default=None, help="Rounds of each (default: 2 quick, 3 full).")
    parser.add_argument("--dask-workers", type=int, default=2, help="Worker processes of the Dask cluster.")
    args = parser.parse_args()
    args.rounds = args.rounds or (2 if args.quick else 3)
    texts = sample_texts()
    texts = texts[:600] if args.quick else texts
    with tempfile.TemporaryDirectory(prefix="inferstream-bench-") as tmp:
        root = Path(tmp)
        build_demo_models(root / "models")
        corpus = root / "corpus.jsonl"
        corpus.write_text("".join(json.dumps({"id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(texts)))
        settings = Settings.load(models_dir=root / "models", state_dir=root / "state")
        note(f"corpus: {len(texts)} passages")
        # The CPUs may be shared: rounds alternate, and each side keeps its best round.
        raws: list[float] = []
        jobs: list[float] = []
        for round_ in range(args.rounds):
            raws.append(raw_rate(root / "models", texts))
            note(f"round {round_ + 1}: raw model {raws[-1]:.0f} texts/s")
            result = backfill(settings, [corpus], root / f"out-{round_}.parquet")
            if not result.accounted or result.rows_in != len(texts):
                raise SystemExit(f"backfill lost rows: {result}")
            jobs.append(result.rows_out / result.elapsed_s)
            note(f"round {round_ + 1}: backfill job {jobs[-1]:.0f} texts/s ({result.elapsed_s:.1f}s)")
        raw, job = max(raws), max(jobs)
        shards = []
        for k in range(args.dask_workers):
            shards.append(root / f"corpus-{k}.jsonl")
            shards[-1].write_text("".join(corpus.read_text().splitlines(keepends=True)[k :: args.dask_workers]))
        local = backfill(settings, shards, root / "local-shards.parquet")
        on_dask = dask_rates(settings, shards, root / "dask.parquet", args.rounds, args.dask_workers)
        for i, run in enumerate(on_dask):
            if (run.rows_in, run.rows_out, run.checksum) != (local.rows_in, local.rows_out, local.checksum):
                raise SystemExit(f"the Dask runner wrote other rows: {run} against {local}")
            rate = run.rows_out / run.elapsed_s
            note(f"round {i + 1}: backfill on Dask ({args.dask_workers} workers) {rate:.0f} texts/s")
        dask = max(r.rows_out / r.elapsed_s for r in on_dask)
    figures = {
        "backfill_texts_per_s": job,
        "raw_texts_per_s": raw,
        "ratio": job / raw,
        "texts": float(len(texts)),
        "dask_backfill_texts_per_s": dask,
        "dask_vs_in_process": dask / job,
        "dask_workers": float(args.dask_workers),
    }
    print(f"{'metric':24} {'value':>12}")
    for key, value in figures.items():
        print(f"{key:24} {value:12.4g}")
    print(f"goal: backfill >= 0.8 of raw ({figures['ratio']:.2f})")
    print(result_line(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
