"""``POST /v1/models/{name}/predict``: one prediction, request/reply through Kafka (``Client.predict``).

Answered by :mod:`inferstream.gateway._direct`, past FastAPI's request machinery; the
FastAPI route describes it and answers the bodies the direct route leaves it.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError

from inferstream.errors import (
    ConfigError,
    ContractError,
    KafkaError,
    ModelError,
    RecordValidationError,
    RequestTimeoutError,
)
from inferstream.gateway._body import JsonRoute, Scope, header, parse_json
from inferstream.gateway._direct import DirectRoute, Fallback, is_json
from inferstream.gateway._errors import ApiError
from inferstream.gateway._state import Gateway
from inferstream.schemas.codec import codec_for
from inferstream.schemas.records import Prediction


class PredictBody(BaseModel):
    """The body of ``POST /v1/models/{name}/predict``."""

    model_config = ConfigDict(extra="forbid")

    inputs: dict[str, JsonValue] = Field(description="Model inputs by name (features, text, ...).")
    version: str | None = Field(default=None, description="Model version (or put it in the path: `name:version`).")
    timeout: float | None = Field(
        default=None, gt=0, description="Seconds to wait for the prediction (default and maximum: the gateway's)."
    )
    request_id: str | None = Field(
        default=None, min_length=1, max_length=512, description="Your id for the request (default: a fresh one)."
    )
    attributes: dict[str, str] = Field(default_factory=dict, description="Carried through to the prediction.")


def router(state: Gateway) -> APIRouter:
    """The native predict route."""
    routes = APIRouter(prefix="/v1", dependencies=[Depends(state.authorize("predict"))], route_class=JsonRoute)
    predict = _Predict(state)

    @routes.post(
        "/models/{name}/predict",
        response_model=Prediction,
        summary="One prediction from a model (request/reply through Kafka)",
        responses={
            404: {"description": "No such model version (its request topic does not exist)."},
            422: {"description": "The request is invalid."},
            504: {"description": "No prediction within the timeout."},
        },
    )
    async def endpoint(name: str, body: PredictBody) -> Response:
        return await predict.answer(name, body)

    return routes


def direct(state: Gateway) -> list[DirectRoute]:
    """The predict route, answered past FastAPI's request machinery (:mod:`inferstream.gateway._direct`)."""
    predict = _Predict(state)

    async def answer(params: dict[str, str], body: PredictBody) -> Response:
        return await predict.answer(params["name"], body)

    return [DirectRoute("/v1/models/{name}/predict", "predict", _parse, answer)]


def _parse(scope: Scope, body: bytes) -> PredictBody:
    # Anything FastAPI would word otherwise is left to it: another Content-Type, an invalid body.
    if not is_json(header(scope, b"content-type")):
        raise Fallback
    try:
        return PredictBody.model_validate(parse_json(body))
    except ValidationError:
        raise Fallback from None


class _Predict:
    """Predict: what the FastAPI endpoint and the direct route both call."""

    def __init__(self, state: Gateway) -> None:
        self.state = state
        self.limit = state.settings.gateway.predict_timeout_s
        self.codec = codec_for(Prediction)

    async def answer(self, name: str, body: PredictBody) -> Response:
        """The prediction of ``body.inputs`` by ``name`` (``model`` or ``model:version``)."""
        state, limit = self.state, self.limit
        model, _, pinned = name.partition(":")
        version = body.version or pinned or None
        if version is not None:
            await state.require_model(model, version)
        timeout = min(body.timeout or limit, limit)
        try:
            prediction = await state.client.predict_async(
                model,
                body.inputs,
                version=version,
                timeout=timeout,
                request_id=body.request_id,
                attributes=body.attributes,
            )
        except RequestTimeoutError as exc:
            raise ApiError(504, "timeout", str(exc), model=model, version=version, timeout_s=timeout) from None
        except RecordValidationError as exc:
            problems = [{"field": p.field, "reason": p.reason} for p in exc.problems]
            raise ApiError(422, "invalid_request", str(exc), problems=problems) from None
        except ModelError as exc:
            raise ApiError(404, "unknown_model", str(exc), model=model) from None
        except ConfigError as exc:  # a bare model name without a route on the control topic
            raise ApiError(404, "no_route", str(exc), model=model) from None
        except ContractError as exc:
            raise ApiError(422, "invalid_request", str(exc)) from None
        except KafkaError as exc:
            raise ApiError(503, "kafka_unavailable", str(exc)) from None
        return Response(self.codec.encode(prediction), media_type="application/json")
