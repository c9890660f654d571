"""Tensors of the Open Inference Protocol, to and from the platform's per-request records.

A model's :class:`Signature` is what the gateway takes and gives for it, from its
``model.toml``: a tabular model takes its graph input (``input``, FP32, ``[-1, 30]``
for the demo classifier), whose columns are its features in order; a text model takes
``BYTES`` texts ``[-1]``; a model over vectors takes its vector input. Each row of an
input tensor becomes one request's inputs; the predictions' outputs become output
tensors (``label``, ``probabilities``, ``score``, ``embedding``), one row a request.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from inferstream.gateway._errors import ApiError
from inferstream.serving.config import ModelConfig, TabularPreprocessing, TextPreprocessing

#: The protocol's names for the dtypes a model config declares.
DATATYPES = {"float32": "FP32", "float64": "FP64", "int64": "INT64", "int32": "INT32"}
# Which numpy kinds (from the JSON values) each protocol datatype accepts.
_KINDS = {"FP32": "iuf", "FP64": "iuf", "INT64": "iu", "INT32": "iu", "BYTES": "U"}


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """A tensor a model takes or gives: name, protocol datatype, shape (-1: any length)."""

    name: str
    datatype: str
    shape: list[int]

    def as_dict(self) -> dict[str, Any]:
        """The protocol's tensor metadata."""
        return {"name": self.name, "datatype": self.datatype, "shape": self.shape}


@dataclass(frozen=True, slots=True)
class Signature:
    """What the gateway takes and gives for one model version over the protocol."""

    config: ModelConfig
    input: TensorSpec
    outputs: list[TensorSpec]

    @property
    def embeds(self) -> bool:
        """True for an embedder (answered by ``Client.embed``, one text a row)."""
        return self.config.kind == "embedder"

    def rows(self, array: npt.NDArray[Any]) -> list[Any]:
        """One request's inputs per row of the input tensor (a text, for an embedder)."""
        preprocessing = self.config.preprocessing
        if isinstance(preprocessing, TextPreprocessing):
            texts = [str(text) for text in array.reshape(-1).tolist()]
            return texts if self.embeds else [{preprocessing.field: text} for text in texts]
        values = array.tolist()
        if isinstance(preprocessing, TabularPreprocessing):
            return [dict(zip(preprocessing.features, row, strict=True)) for row in values]
        return [{preprocessing.field: row} for row in values]


def signature(config: ModelConfig) -> Signature:
    """The protocol signature of a model version, from its config."""
    preprocessing = config.preprocessing
    first = config.inputs[0]
    if isinstance(preprocessing, TextPreprocessing):
        given = TensorSpec(preprocessing.field, "BYTES", [-1])
    elif isinstance(preprocessing, TabularPreprocessing):
        given = TensorSpec(first.name, DATATYPES[first.dtype], [-1, len(preprocessing.features)])
    else:
        given = TensorSpec(first.name, DATATYPES[first.dtype], [-1, preprocessing.dims])
    spec = config.outputs
    outputs: list[TensorSpec] = []
    if config.kind == "embedder":
        outputs.append(TensorSpec("embedding", "FP32", [-1, spec.dims or -1]))
    if spec.label:
        outputs.append(TensorSpec("label", "BYTES" if spec.labels else "INT64", [-1]))
    if spec.probabilities:
        outputs.append(TensorSpec("probabilities", "FP32", [-1, len(spec.labels) if spec.labels else -1]))
    if spec.score:
        outputs.append(TensorSpec("score", "FP32", [-1]))
    return Signature(config, given, outputs)


def parse_input(spec: TensorSpec, datatype: str, shape: Sequence[int], data: Any, max_rows: int) -> npt.NDArray[Any]:
    """The input tensor as an array of its shape; 400 when its datatype, shape or data do not fit ``spec``.

    ``data`` is row-major, flat or nested. A text tensor may also be ``[n, 1]``.
    """
    name = spec.name
    if datatype != spec.datatype:
        raise ApiError(400, "invalid_datatype", f"input {name!r} is {spec.datatype}, not {datatype}")
    fits = len(shape) == len(spec.shape) and all(w in (-1, g) for w, g in zip(spec.shape, shape, strict=True))
    if spec.datatype == "BYTES" and list(shape[1:]) == [1]:
        fits = True
    if not fits:
        raise ApiError(400, "invalid_shape", f"input {name!r} has shape {list(shape)}, expected {spec.shape}")
    if not 1 <= shape[0] <= max_rows or any(d < 1 for d in shape):
        raise ApiError(
            400, "invalid_shape", f"input {name!r} has shape {list(shape)}: send 1 to {max_rows} rows, none empty"
        )
    try:
        array = np.asarray(data)
    except ValueError:  # ragged nested lists
        raise ApiError(400, "invalid_data", f"input {name!r}: data is not a regular (row-major) array") from None
    if array.dtype.kind not in _KINDS[spec.datatype]:
        wanted = "strings" if spec.datatype == "BYTES" else "integers" if "INT" in spec.datatype else "numbers"
        raise ApiError(400, "invalid_data", f"input {name!r} is {spec.datatype}: its data must be {wanted}")
    expected = math.prod(shape)
    if array.size != expected:
        raise ApiError(
            400,
            "invalid_shape",
            f"input {name!r} has {array.size} values, but shape {list(shape)} holds {expected}",
        )
    return array.reshape(shape)


def output_tensor(spec: TensorSpec, outputs: Sequence[Any], config: ModelConfig) -> dict[str, Any]:
    """The output tensor ``spec`` of a request's answers (their outputs, or vectors for ``embedding``)."""
    rows = len(outputs)
    if spec.name == "embedding":
        matrix = np.stack([np.asarray(v, dtype=np.float32) for v in outputs]) if rows else np.empty((0, 0))
        return {**spec.as_dict(), "shape": list(matrix.shape), "data": matrix.reshape(-1)}
    values = [o.get(spec.name) for o in outputs]
    if spec.name == "probabilities":
        labels = config.outputs.labels
        table = [[p[label] for label in labels] if labels else p for p in values]
        width = len(table[0]) if table else 0
        data = [p for row in table for p in row]
        return {**spec.as_dict(), "shape": [rows, width], "data": data}
    return {**spec.as_dict(), "shape": [rows], "data": values}
