"""OpenAI-compatible routes: ``POST /v1/embeddings``, ``GET /v1/models[/{model}]``.

The official ``openai`` package works against it with ``base_url`` = the gateway's
``/v1`` and the gateway's token as API key::

    client = openai.OpenAI(base_url="http://127.0.0.1:8080/v1", api_key=token)
    client.embeddings.create(model="minilm", input=["first text", "second text"])

Each text is one request to an embedder worker through Kafka (``Client.embed``),
all of a call's texts at once, with ``index=False``: the vectors answer the call
and go nowhere else (no embeddings topic, no index). ``usage`` counts the tokens the model sees (special tokens
included), from the model's own ``tokenizer.json``; a text the model would refuse
(empty, longer than its ``max_length``) is answered at once with a 400. Errors take
OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import base64
import uuid
from typing import Any, ClassVar, Literal

import orjson
from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, ConfigDict, Field

from inferstream.errors import InferstreamError
from inferstream.gateway._body import JsonRoute
from inferstream.gateway._errors import OPENAI, ApiError, ErrorShape, from_sdk
from inferstream.gateway._state import Gateway
from inferstream.schemas.records import Embedding
from inferstream.serving.repository import ModelVersion
from inferstream.serving.text import TextPreprocessor

#: The most texts one call may embed (OpenAI's own limit).
MAX_INPUTS = 2048
_OWNER = "inferstream"


class OpenAIRoute(JsonRoute):
    """A route whose errors take OpenAI's shape."""

    error_shape: ClassVar[ErrorShape] = OPENAI


class EmbeddingsBody(BaseModel):
    """The body of ``POST /v1/embeddings`` (OpenAI's create-embeddings request)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(
        min_length=1, max_length=512, description="An embedder: `name:version`, or `name` (its route, else newest)."
    )
    input: str | list[str] | list[int] | list[list[int]] = Field(
        description="A text or a list of texts (token arrays are refused: send text)."
    )
    encoding_format: Literal["float", "base64"] = Field(
        default="float", description="`base64`: little-endian float32 bytes, base64-encoded."
    )
    dimensions: int | None = Field(default=None, ge=1, description="Must equal the model's dimensions if given.")
    user: str | None = Field(default=None, max_length=512, description="Accepted and ignored.")


class EmbeddingData(BaseModel):
    """One embedding of the answer."""

    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str = Field(description="The vector; a base64 string when asked for `base64`.")


class Usage(BaseModel):
    """Tokens the model saw."""

    prompt_tokens: int
    total_tokens: int


class EmbeddingsResponse(BaseModel):
    """The answer of ``POST /v1/embeddings``."""

    object: Literal["list"] = "list"
    data: list[EmbeddingData]
    model: str = Field(description="The model version that answered (`name:version`).")
    usage: Usage


class ModelCard(BaseModel):
    """A model as OpenAI lists it."""

    id: str = Field(description="`name` (its route, else the newest version) or `name:version`.")
    object: Literal["model"] = "model"
    created: int = Field(description="When the version's model.toml was written (Unix seconds).")
    owned_by: str = _OWNER


class ModelList(BaseModel):
    """The answer of ``GET /v1/models``."""

    object: Literal["list"] = "list"
    data: list[ModelCard]


class OpenAIError(BaseModel):
    """OpenAI's error body."""

    error: dict[str, Any] = Field(description="`message`, `type`, `param`, `code`.")


_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": OpenAIError, "description": "The request is invalid (which `param`, why)."},
    401: {"model": OpenAIError, "description": "No or a wrong API key (the gateway's token)."},
    404: {"model": OpenAIError, "description": "No such model."},
}


def router(state: Gateway) -> APIRouter:
    """The OpenAI-compatible routes."""
    routes = APIRouter(prefix="/v1", dependencies=[Depends(state.authorize("predict"))], route_class=OpenAIRoute)
    limit = state.settings.gateway.predict_timeout_s
    tokenizers: dict[str, TextPreprocessor] = {}

    def tokenizer(version: ModelVersion) -> TextPreprocessor:
        ref = version.config.ref
        if ref not in tokenizers:
            tokenizers[ref] = TextPreprocessor(version.config, version.directory).load()
        return tokenizers[ref]

    @routes.post(
        "/embeddings",
        summary="Embed texts (OpenAI-compatible), through Kafka",
        response_model=EmbeddingsResponse,
        responses={**_ERRORS, 504: {"model": OpenAIError, "description": "No vector within the timeout."}},
    )
    async def embeddings(body: EmbeddingsBody) -> Response:
        texts = _texts(body.input)
        version = await state.model(body.model, uuid.uuid4().hex)
        config = version.config
        if config.kind != "embedder":
            raise ApiError(
                400, "invalid_model", f"{config.ref} is a {config.kind}, not an embedder: ask an embedding model"
            )
        dims = config.outputs.dims
        if body.dimensions is not None and body.dimensions != dims:
            raise ApiError(
                400,
                "invalid_value",
                f"{config.ref} gives vectors of {dims} dimensions; it cannot shorten them to {body.dimensions} "
                "(leave out `dimensions`, or give the model's own)",
                param="dimensions",
            )
        try:
            # The first call reads the tokenizer file: off the event loop, like the counting.
            lengths, refused = await state.call(lambda: tokenizer(version).measure(texts))
        except InferstreamError as exc:
            raise from_sdk(exc) from None
        if refused:
            index = min(refused)
            where = "input" if isinstance(body.input, str) else f"input[{index}]"
            raise ApiError(400, "invalid_value", f"{where}: {refused[index]}", param="input")
        await state.require_model(config.name, config.version)

        def embed(text: str) -> Embedding:
            return state.client.embed(config.ref, text, timeout=limit, index=False)

        try:
            vectors = [e.vector for e in await state.each(embed, texts)]
        except InferstreamError as exc:
            raise from_sdk(exc) from None
        data = [
            {"object": "embedding", "index": i, "embedding": _encoded(vector, body.encoding_format)}
            for i, vector in enumerate(vectors)
        ]
        tokens = sum(lengths)
        answer = {
            "object": "list",
            "data": data,
            "model": config.ref,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return Response(orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")

    @routes.get("/models", summary="The repository's models (OpenAI-compatible)", response_model=ModelList)
    async def models() -> ModelList:
        return ModelList(data=await state.call(_cards, state))

    @routes.get("/models/{model}", summary="One model (OpenAI-compatible)", response_model=ModelCard, responses=_ERRORS)
    async def model(model: str) -> ModelCard:
        for card in await state.call(_cards, state):
            if card.id == model:
                return card
        raise ApiError(404, "unknown_model", f"no model {model!r} in {state.repository.root}", param="model")

    return routes


def _texts(given: str | list[str] | list[int] | list[list[int]]) -> list[str]:
    if isinstance(given, str):
        return [given]
    if not given:
        raise ApiError(400, "invalid_value", "input is an empty list: send a text or a list of texts", param="input")
    if not all(isinstance(text, str) for text in given):
        raise ApiError(
            400,
            "invalid_value",
            "input holds token ids: this gateway embeds text (the model's own tokenizer runs in the worker)",
            param="input",
        )
    if len(given) > MAX_INPUTS:
        raise ApiError(
            400, "invalid_value", f"input holds {len(given)} texts, over the limit of {MAX_INPUTS}", param="input"
        )
    return [text for text in given if isinstance(text, str)]


def _encoded(vector: Any, encoding_format: str) -> Any:
    if encoding_format == "base64":
        return base64.b64encode(vector.astype("<f4", copy=False).tobytes()).decode("ascii")
    return vector  # orjson writes a float32 array as the shortest decimals that read back the same


def _cards(state: Gateway) -> list[ModelCard]:
    repository = state.repository
    cards: list[ModelCard] = []
    for name in repository.names():
        versions = repository.versions(name)
        created = {v: int((repository.root / name / v / "model.toml").stat().st_mtime) for v in versions}
        cards.append(ModelCard(id=name, created=max(created.values())))
        cards.extend(ModelCard(id=f"{name}:{v}", created=created[v]) for v in versions)
    return cards
