"""The Open Inference Protocol's binary tensor data extension (tritonclient's default), and compressed bodies.

A request may carry a tensor as raw bytes after its JSON: the header
``Inference-Header-Content-Length`` says how long the JSON is, and the input says
``"parameters": {"binary_data_size": n}`` instead of ``data``. Numbers are
little-endian, row-major; a ``BYTES`` element is a 4-byte little-endian length and
then its bytes. Outputs come back the same way when asked (``binary_data_output``
for all of them, an output's ``binary_data`` for one): their bytes follow the
answer's JSON, whose length the answer's ``Inference-Header-Content-Length`` gives.
A body may be sent compressed (``Content-Encoding: gzip`` or ``deflate``, as
tritonclient's ``request_compression_algorithm`` does), inflated up to the body limit.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import orjson
from fastapi import Response

from inferstream.gateway._errors import ApiError

#: The request and answer header giving the length of the JSON before the tensors' bytes.
HEADER = "Inference-Header-Content-Length"
_DTYPES = {"FP32": "<f4", "FP64": "<f8", "INT32": "<i4", "INT64": "<i8"}
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


def inflate(body: bytes, encoding: str, limit: int) -> bytes:
    """``body`` uncompressed (``gzip`` or ``deflate``); 400 for another encoding, 413 past ``limit`` bytes."""
    wbits = _WBITS.get(encoding.strip().lower())
    if wbits is None:
        served = "send gzip, deflate or none"
        raise ApiError(400, "invalid_encoding", f"Content-Encoding {encoding!r} is not served: {served}")
    inflater = zlib.decompressobj(wbits)
    try:
        plain = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise ApiError(400, "invalid_encoding", f"the body is not valid {encoding}: {exc}") from None
    if len(plain) > limit:
        raise ApiError(413, "body_too_large", f"the request body inflates past the gateway's limit of {limit} bytes")
    return plain


def split(body: bytes, length: str) -> tuple[bytes, memoryview]:
    """The JSON part and the tensors' bytes of a body whose JSON is ``length`` bytes long."""
    if not length.strip().isdigit() or int(length) > len(body):
        most = f"the length of the body's JSON ({len(body)} at most)"
        raise ApiError(400, "invalid_binary", f"{HEADER} is {length!r}: it must be {most}")
    at = int(length)
    return body[:at], memoryview(body)[at:]


def input_data(name: str, datatype: str, parameters: Mapping[str, Any] | None, raw: memoryview | None) -> Any:
    """The data of the one input tensor, from the bytes after the JSON; 400 when they do not fit."""
    size = (parameters or {}).get("binary_data_size")
    if raw is None or not isinstance(size, int) or isinstance(size, bool):
        raise ApiError(400, "invalid_inputs", f"input {name!r} has neither data nor binary_data_size")
    if size != len(raw):
        raise ApiError(
            400, "invalid_binary", f"input {name!r} says binary_data_size {size}, but {len(raw)} bytes follow the JSON"
        )
    if datatype == "BYTES":
        return _elements(name, raw)
    dtype = _DTYPES.get(datatype)
    if dtype is None:
        raise ApiError(400, "invalid_datatype", f"input {name!r}: binary {datatype} is not served")
    if len(raw) % np.dtype(dtype).itemsize:
        raise ApiError(400, "invalid_binary", f"input {name!r}: {len(raw)} bytes is not a whole number of {datatype}")
    return np.frombuffer(raw, dtype=dtype)


def _elements(name: str, raw: memoryview) -> list[str]:
    texts: list[str] = []
    at = 0
    while at < len(raw):
        if at + 4 > len(raw):
            raise ApiError(400, "invalid_binary", f"input {name!r}: BYTES element {len(texts)} is cut short")
        (length,) = struct.unpack_from("<I", raw, at)
        end = at + 4 + length
        if end > len(raw):
            raise ApiError(400, "invalid_binary", f"input {name!r}: BYTES element {len(texts)} is cut short")
        try:
            texts.append(bytes(raw[at + 4 : end]).decode())
        except UnicodeDecodeError as exc:
            raise ApiError(400, "invalid_binary", f"input {name!r}: element {len(texts)} is not UTF-8: {exc}") from None
        at = end
    return texts


def _encode(datatype: str, data: Any) -> bytes:
    if datatype == "BYTES":
        encoded = [str(value).encode() for value in data]
        return b"".join(struct.pack("<I", len(value)) + value for value in encoded)
    return bytes(np.ascontiguousarray(data, dtype=_DTYPES[datatype]).tobytes())


def answer(body: dict[str, Any], binary: Sequence[bool]) -> Response:
    """The infer answer: JSON alone, or JSON then the bytes of the outputs marked ``binary`` (in order)."""
    tail: list[bytes] = []
    if any(binary):
        outputs = []
        for output, as_bytes in zip(body["outputs"], binary, strict=True):
            if as_bytes:
                data = _encode(output["datatype"], output.pop("data"))
                output["parameters"] = {"binary_data_size": len(data)}
                tail.append(data)
            outputs.append(output)
        body = {**body, "outputs": outputs}
    head = orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
    if not tail:
        return Response(head, media_type="application/json")
    return Response(head + b"".join(tail), media_type="application/octet-stream", headers={HEADER: str(len(head))})


__all__ = ["HEADER", "answer", "inflate", "input_data", "split"]
