"""Open Inference Protocol v2 (KServe, Triton) over REST: health, model metadata, readiness, infer.

=====================================================  ===========================================
``GET  /v2/health/live``, ``/v2/health/ready``         the gateway answers / the broker answers
``GET  /v2``                                           server metadata
``GET  /v2/models/{name}[/versions/{v}]``              name, versions, platform, inputs, outputs
``GET  /v2/models/{name}[/versions/{v}]/ready``        200 when a worker serves that version
``POST /v2/models/{name}[/versions/{v}]/infer``        tensors in, tensors out, through Kafka
=====================================================  ===========================================

Each row of the input tensor is one request through Kafka (``Client.predict``, or
``Client.embed`` for an embedder), all of a call's rows at once; the answers come
back as output tensors in row order (:mod:`inferstream.gateway._tensors`). Without a
version, a name goes by its route, else to its highest version. Tensor data is JSON,
or raw bytes after the JSON (the binary data extension, tritonclient's default:
:mod:`inferstream.gateway._binary`); bodies may come gzip- or deflate-compressed.
Errors are ``{"error": message}``: 400 for a bad request (shape, datatype, data), 404
for an unknown model. Infer is answered by :mod:`inferstream.gateway._direct`, past
FastAPI's request machinery; its FastAPI routes describe it and answer what the
direct route leaves them.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Coroutine
from importlib.metadata import version as package_version
from typing import Any, ClassVar

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError

from inferstream.errors import InferstreamError, KafkaError
from inferstream.gateway import _binary
from inferstream.gateway._body import JsonRoute, Scope, header, parse_json
from inferstream.gateway._direct import DirectRoute, Fallback, is_json
from inferstream.gateway._errors import OIP, ApiError, ErrorShape, from_sdk, validation_message
from inferstream.gateway._state import Gateway, every
from inferstream.gateway._tensors import Signature, TensorSpec, output_tensor, parse_input, signature
from inferstream.serving.repository import ModelVersion

#: The most rows one infer call may carry.
MAX_ROWS = 4096
#: ONNX Runtime models, in Triton's words.
PLATFORM = "onnxruntime_onnx"


class OipRoute(JsonRoute):
    """A route whose errors take the protocol's shape, ``{"error": message}``.

    Bodies are JSON when no Content-Type is given (tritonclient sends none).
    """

    error_shape: ClassVar[ErrorShape] = OIP

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """The JSON route's handler, reading a body without a Content-Type as JSON."""
        handler = super().get_route_handler()

        async def json_only(request: Request) -> Response:
            if "content-type" not in request.headers:
                request.scope["headers"] = [*request.scope["headers"], (b"content-type", b"application/json")]
            return await handler(request)

        return json_only


class InputTensor(BaseModel):
    """One input tensor of an infer request."""

    model_config = ConfigDict(extra="forbid")

    name: str
    shape: list[int] = Field(min_length=1, max_length=8)
    datatype: str
    data: list[JsonValue] | None = Field(
        default=None,
        description="Row-major, flat or nested; left out when the tensor's bytes follow the JSON "
        "(binary data extension: `parameters.binary_data_size`).",
    )
    parameters: dict[str, JsonValue] | None = None


class RequestedOutput(BaseModel):
    """An output asked for (all of them when none is)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    parameters: dict[str, JsonValue] | None = None


class InferBody(BaseModel):
    """The body of ``POST /v2/models/{name}[/versions/{v}]/infer``."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(default=None, max_length=512, description="Echoed in the answer.")
    inputs: list[InputTensor] = Field(min_length=1)
    outputs: list[RequestedOutput] | None = None
    parameters: dict[str, JsonValue] | None = Field(default=None, description="Accepted; none changes the answer.")


class TensorMetadata(BaseModel):
    """A tensor's name, datatype and shape (-1: any length)."""

    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(BaseModel):
    """The answer of ``GET /v2/models/{name}[/versions/{v}]``."""

    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class OutputTensor(TensorMetadata):
    """An output tensor of an infer answer."""

    data: list[Any]


class InferResponse(BaseModel):
    """The answer of an infer call."""

    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[OutputTensor]


class OipError(BaseModel):
    """The protocol's error body."""

    error: str


_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": OipError, "description": "A bad request: shape, datatype or data."},
    401: {"model": OipError, "description": "No or a wrong token."},
    404: {"model": OipError, "description": "No such model or version."},
}


def probes(state: Gateway) -> APIRouter:
    """The health routes, open to probes (no token)."""
    routes = APIRouter(prefix="/v2/health", route_class=OipRoute)

    @routes.get("/live", summary="Is the gateway up? (OIP)")
    async def live() -> dict[str, bool]:
        return {"live": True}

    @routes.get("/ready", summary="Does the broker answer? (OIP)", responses={503: {"model": OipError}})
    async def ready() -> dict[str, bool]:
        try:
            await state.call(state.client.topics.list, timeout=5.0)
        except KafkaError as exc:
            raise ApiError(503, "kafka_unavailable", str(exc)) from None
        return {"ready": True}

    return routes


def router(state: Gateway) -> APIRouter:
    """The model routes (behind the token)."""
    routes = APIRouter(prefix="/v2", dependencies=[Depends(state.authorize("predict"))], route_class=OipRoute)
    infer = _Infer(state)

    async def version_of(name: str, version: str | None, request_id: str = "") -> ModelVersion:
        return await state.model(f"{name}:{version}" if version else name, request_id)

    async def metadata(name: str, version: str | None) -> ModelMetadata:
        found = await version_of(name, version)
        known = await state.call(state.repository.versions, name)
        shown = signature(found.config)
        return ModelMetadata(
            name=name,
            versions=known,
            platform=PLATFORM,
            inputs=[TensorMetadata(**shown.input.as_dict())],
            outputs=[TensorMetadata(**o.as_dict()) for o in shown.outputs],
        )

    async def ready(name: str, version: str | None) -> dict[str, Any]:
        found = (await version_of(name, version)).config
        group = state.settings.topics.worker_group(found.name, found.version)
        try:
            await state.require_model(found.name, found.version)
            info = (await state.call(state.client.groups.describe_many, [group]))[0]
        except KafkaError as exc:
            raise ApiError(503, "kafka_unavailable", str(exc)) from None
        if info.members < 1:
            raise ApiError(503, "not_ready", f"no worker serves {found.ref} (its group {group} has no members)")
        return {"name": found.name, "ready": True}

    @routes.get("", summary="Server metadata (OIP)")
    async def server() -> dict[str, Any]:
        return {"name": "inferstream", "version": package_version("inferstream"), "extensions": []}

    infer_doc: dict[str, Any] = {
        "response_model": InferResponse,
        "responses": {**_ERRORS, 504: {"model": OipError, "description": "No answer within the timeout."}},
    }

    @routes.get("/models/{name}", summary="Model metadata (OIP)", response_model=ModelMetadata, responses=_ERRORS)
    async def model_metadata(name: str) -> ModelMetadata:
        return await metadata(name, None)

    @routes.get(
        "/models/{name}/versions/{version}",
        summary="Model version metadata (OIP)",
        response_model=ModelMetadata,
        responses=_ERRORS,
    )
    async def version_metadata(name: str, version: str) -> ModelMetadata:
        return await metadata(name, version)

    ready_doc: dict[str, Any] = {"responses": {**_ERRORS, 503: {"model": OipError, "description": "No worker."}}}

    @routes.get("/models/{name}/ready", summary="Is a worker serving the model? (OIP)", **ready_doc)
    async def model_ready(name: str) -> dict[str, Any]:
        return await ready(name, None)

    @routes.get("/models/{name}/versions/{version}/ready", summary="Is a worker serving it? (OIP)", **ready_doc)
    async def version_ready(name: str, version: str) -> dict[str, Any]:
        return await ready(name, version)

    @routes.post("/models/{name}/infer", summary="Infer (OIP): each row one request through Kafka", **infer_doc)
    async def model_infer(name: str, body: InferBody) -> Response:
        return await infer.answer(name, None, body, None)

    @routes.post("/models/{name}/versions/{version}/infer", summary="Infer with one version (OIP)", **infer_doc)
    async def version_infer(name: str, version: str, body: InferBody) -> Response:
        return await infer.answer(name, version, body, None)

    return routes


def direct(state: Gateway) -> list[DirectRoute]:
    """The infer routes, answered past FastAPI's request machinery (:mod:`inferstream.gateway._direct`)."""
    infer = _Infer(state)

    async def model_infer(params: dict[str, str], parsed: Parsed) -> Response:
        return await infer.answer(params["name"], None, *parsed)

    async def version_infer(params: dict[str, str], parsed: Parsed) -> Response:
        return await infer.answer(params["name"], params["version"], *parsed)

    return [
        DirectRoute("/v2/models/{name}/infer", "predict", infer.parse, model_infer),
        DirectRoute("/v2/models/{name}/versions/{version}/infer", "predict", infer.parse, version_infer),
    ]


#: An infer body, and the tensor bytes after its JSON (binary data extension), if any.
Parsed = tuple[InferBody, memoryview | None]


class _Infer:
    """Infer: what the FastAPI endpoints and the direct routes both call."""

    def __init__(self, state: Gateway) -> None:
        self.state = state
        self.limit = state.settings.gateway.predict_timeout_s
        self.max_body = state.settings.gateway.max_body_bytes

    def parse(self, scope: Scope, body: bytes) -> Parsed:
        """The body: JSON, or JSON then tensor bytes, either maybe compressed; 400 when it is not one."""
        length = header(scope, b"inference-header-content-length")
        if length is None and not is_json(header(scope, b"content-type")):
            raise Fallback
        encoding = header(scope, b"content-encoding")
        if encoding is not None and encoding.strip().lower() != "identity":
            body = _binary.inflate(body, encoding, self.max_body)
        raw = None
        if length is not None:
            body, raw = _binary.split(body, length)
        try:
            return InferBody.model_validate(parse_json(body)), raw
        except ValidationError as exc:  # worded as the FastAPI route words it
            message, param = validation_message(exc.errors())
            raise ApiError(400, "invalid_request", message, param=param) from None

    async def answer(self, name: str, version: str | None, body: InferBody, raw: memoryview | None) -> Response:
        """Each row of the input one request through Kafka, all at once; the answers as output tensors."""
        state = self.state
        # The request id only picks a bare name's version by its route.
        found = await state.model(f"{name}:{version}" if version else name, "" if version else uuid.uuid4().hex)
        shown = signature(found.config)
        tensor = _the_input(shown, body)
        if tensor.data is not None and raw:
            raise ApiError(400, "invalid_binary", f"input {tensor.name!r} has data, yet bytes follow the JSON")
        data = tensor.data
        if data is None:
            data = _binary.input_data(tensor.name, tensor.datatype, tensor.parameters, raw)
        rows = shown.rows(parse_input(shown.input, tensor.datatype, tensor.shape, data, MAX_ROWS))
        wanted = _wanted(shown, body)
        config = found.config
        await state.require_model(config.name, config.version)
        limit = self.limit

        def embed(row: Any) -> Any:
            return state.client.embed(config.ref, row, timeout=limit, index=False).vector

        async def predict(row: Any) -> Any:
            return (await state.client.predict_async(config.ref, row, timeout=limit)).outputs

        try:
            if shown.embeds:
                answers = await state.each(embed, rows)
            else:  # every row's request at once, awaited on the event loop
                answers = await every(predict(row) for row in rows)
        except InferstreamError as exc:
            raise from_sdk(exc) from None
        answer = {
            "model_name": config.name,
            "model_version": config.version,
            **({"id": body.id} if body.id is not None else {}),
            "outputs": [output_tensor(spec, answers, config) for spec in wanted],
        }
        return _binary.answer(answer, [_as_bytes(body, spec.name) for spec in wanted])


def _as_bytes(body: InferBody, name: str) -> bool:
    """Whether output ``name`` goes as bytes: its ``binary_data``, else the request's ``binary_data_output``."""
    for requested in body.outputs or ():
        if requested.name == name and requested.parameters and "binary_data" in requested.parameters:
            return requested.parameters["binary_data"] is True
    return bool(body.parameters and body.parameters.get("binary_data_output") is True)


def _the_input(shown: Signature, body: InferBody) -> InputTensor:
    names = [t.name for t in body.inputs]
    if names != [shown.input.name]:
        raise ApiError(
            400,
            "invalid_inputs",
            f"{shown.config.ref} takes one input, {shown.input.name!r} ({shown.input.datatype} "
            f"{shown.input.shape}), not {names}",
        )
    return body.inputs[0]


def _wanted(shown: Signature, body: InferBody) -> list[TensorSpec]:
    if not body.outputs:
        return shown.outputs
    by_name = {o.name: o for o in shown.outputs}
    unknown = [o.name for o in body.outputs if o.name not in by_name]
    if unknown:
        raise ApiError(400, "invalid_outputs", f"{shown.config.ref} has no output {unknown} (it has {list(by_name)})")
    return [by_name[o.name] for o in body.outputs]
