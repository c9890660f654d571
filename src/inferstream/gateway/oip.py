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
version, a name goes by its route, else to its highest version. Tensor data is JSON (``binary_data=False`` in
tritonclient): the binary extension is not served. Errors are ``{"error": message}``:
400 for a bad request (shape, datatype, data), 404 for an unknown model.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Coroutine
from importlib.metadata import version as package_version
from typing import Any, ClassVar

import orjson
from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field, JsonValue

from inferstream.errors import InferstreamError, KafkaError
from inferstream.gateway._body import JsonRoute
from inferstream.gateway._errors import OIP, ApiError, ErrorShape, from_sdk
from inferstream.gateway._state import Gateway, every
from inferstream.gateway._tensors import Signature, TensorSpec, output_tensor, parse_input, signature
from inferstream.serving.repository import ModelVersion

#: The most rows one infer call may carry.
MAX_ROWS = 4096
#: ONNX Runtime models, in Triton's words.
PLATFORM = "onnxruntime_onnx"


class OipRoute(JsonRoute):
    """A route whose errors take the protocol's shape, ``{"error": message}``.

    Bodies are JSON whatever their Content-Type says (tritonclient sends none);
    binary tensor data is refused.
    """

    error_shape: ClassVar[ErrorShape] = OIP

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """The JSON route's handler, after a check that the body is JSON alone."""
        handler = super().get_route_handler()

        async def json_only(request: Request) -> Response:
            # tritonclient's binary extension: a JSON header, then raw tensor bytes.
            if "inference-header-content-length" in request.headers:
                raise ApiError(400, "binary_data", "binary tensor data is not served: send JSON (binary_data=False)")
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
    data: list[JsonValue] = Field(description="Row-major, flat or nested.")
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
    limit = state.settings.gateway.predict_timeout_s

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

    async def infer(name: str, version: str | None, body: InferBody) -> Response:
        found = await version_of(name, version, uuid.uuid4().hex)
        shown = signature(found.config)
        tensor = _the_input(shown, body)
        rows = shown.rows(parse_input(shown.input, tensor.datatype, tensor.shape, tensor.data, MAX_ROWS))
        wanted = _wanted(shown, body)
        config = found.config
        await state.require_model(config.name, config.version)

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
        return Response(orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")

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
        return await infer(name, None, body)

    @routes.post("/models/{name}/versions/{version}/infer", summary="Infer with one version (OIP)", **infer_doc)
    async def version_infer(name: str, version: str, body: InferBody) -> Response:
        return await infer(name, version, body)

    return routes


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
