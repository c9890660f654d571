"""Batch jobs: backfill, batch scoring, export, replay, reference (Apache Beam), and retraining.

- :mod:`~inferstream.jobs.backfill`: a corpus → embeddings (Parquet);
- :mod:`~inferstream.jobs.score`: rows → predictions in the inference table;
- :mod:`~inferstream.jobs.topics`: a topic range → Parquet (export), Parquet → a topic (replay);
- :mod:`~inferstream.jobs.reference`: Parquet predictions → a monitor's drift reference;
- :mod:`~inferstream.jobs.retrain`: the inference table's labelled rows → a model's next version
  (scikit-learn in one process, no Beam: the rows of a model fit in memory).

They share the model handler (:mod:`~inferstream.jobs._model`), the runner and file
plumbing (:mod:`~inferstream.jobs._pipeline`), and the model jobs' common steps
(:mod:`~inferstream.jobs._scoring`). Importing this package does not import Beam.
"""
