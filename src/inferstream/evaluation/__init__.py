"""Offline evaluation: how good the platform's answers are against labelled data.

:mod:`~inferstream.evaluation.retrieval` holds the ranking metrics (recall@k, MRR,
nDCG@k), :mod:`~inferstream.evaluation.exact` the brute-force search they are
compared with, and :mod:`~inferstream.evaluation.queries` the labelled query files
(and the query set built from the demo corpus). None of them touches a store: the
SDK's :mod:`inferstream._client.retrieval_eval` runs them against an index.
"""
