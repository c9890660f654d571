"""Bulk scoring by request/reply: many rows in one columnar request, one prediction batch back.

``Client.predict_batch`` takes columns (a mapping of name → values), rows (a sequence
of mappings) or an Arrow table / record batch, checks them at once (empty, ragged,
oversized, values that are not scalars: ``RecordValidationError`` with the field
path, before anything is sent) and sends one ``inference-batch-request`` in the
Arrow form (or JSON with ``form="json"``) over the request/reply plumbing of
:mod:`inferstream._client.requests`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa

from inferstream._client.requests import Requests, answer
from inferstream.errors import FieldProblem, RecordValidationError
from inferstream.schemas.codec import codec_for
from inferstream.schemas.columnar import Form, columns_of, decode_request, encode_request, headers_for
from inferstream.schemas.records import InferenceBatchRequest, PredictionBatch, columns_problem

_NAME = InferenceBatchRequest.schema_name


def predict_batch(
    requests: Requests,
    model: str,
    data: Any,
    *,
    version: str | None = None,
    timeout: float = 30.0,
    request_id: str | None = None,
    attributes: Mapping[str, str] | None = None,
    form: Form = "arrow",
) -> PredictionBatch:
    """Score many rows with ``model`` as one batch and wait for the one prediction batch that answers.

    ``data``: columns (``{"feature": [v1, v2, ...], ...}``), rows (``[{"feature": v1, ...}, ...]``)
    or a ``pyarrow`` Table / RecordBatch, up to ``MAX_BATCH_ROWS`` rows. Sent as Arrow
    (``form="json"``: as JSON). Bad input raises ``RecordValidationError`` (field path and
    reason) before anything is sent; a worker's refusal raises ``RequestRejectedError``;
    no answer within ``timeout`` raises ``RequestTimeoutError``. The answer's
    ``inputs``/``outputs`` are columns; ``inferstream.schemas.columnar.prediction_rows``
    gives one prediction per row. ``name:version`` or ``version=`` pins a version; a bare
    name is routed by the model's route, by request id.
    """
    if form not in ("arrow", "json"):
        raise ValueError(f"form must be 'arrow' or 'json', not {form!r}")
    lists, batch = columns_of(data)
    if lists is not None:
        problem = columns_problem({name: len(values) for name, values in lists.items()})
        if problem is not None:
            raise RecordValidationError(_NAME, [FieldProblem("columns", problem)])
        if form == "arrow":
            batch = _record_batch(lists)
    elif form == "json":
        assert batch is not None
        lists = batch.to_pydict()
    headers = headers_for(InferenceBatchRequest, form)
    codec = codec_for(InferenceBatchRequest)

    def build(head: dict[str, Any]) -> tuple[bytes, Sequence[tuple[str, bytes]]]:
        if form == "json":
            return encode_request(codec.validate({**head, "columns": lists}), "json", None), headers
        value = encode_request(InferenceBatchRequest.model_construct(**head), "arrow", batch)
        decode_request(value, headers)  # what the worker checks (fields, column types, sizes), here first
        return value, headers

    reply = requests.ask_built(model, version, build, timeout, request_id, attributes)
    return answer(PredictionBatch, model, reply)


def _record_batch(lists: dict[str, Sequence[Any]]) -> pa.RecordBatch:
    arrays = []
    for name, values in lists.items():
        try:
            arrays.append(pa.array(values))
        except (pa.ArrowException, TypeError, ValueError) as exc:
            problem = FieldProblem(f"columns.{name}", f"not a column of scalars ({exc})")
            raise RecordValidationError(_NAME, [problem]) from None
    return pa.RecordBatch.from_arrays(arrays, names=list(lists))


__all__ = ["predict_batch"]
