"""Errors as HTTP answers: one exception, one body shape per protocol.

A route raises :class:`ApiError` (status, code, message); the body it becomes is the
shape of the interface the route belongs to, which its route class names
(:attr:`inferstream.gateway._body.JsonRoute.error_shape`):

========  ====================================================================
native    ``{"error": code, "detail": message, ...extra}``
openai    ``{"error": {"message", "type", "param", "code"}}`` (OpenAI's API)
oip       ``{"error": message}`` (Open Inference Protocol v2)
========  ====================================================================

Errors raised before a route is chosen (a body over the limit) take the shape of
the route the path would reach.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi.responses import JSONResponse
from starlette.routing import Match

from inferstream.errors import (
    ConfigError,
    ContractError,
    InferstreamError,
    KafkaError,
    ModelError,
    RequestTimeoutError,
)

Scope = MutableMapping[str, Any]


class ApiError(Exception):
    """An error answered with an HTTP status; its body takes the shape of the route's protocol.

    ``code`` is a stable snake_case name (``unknown_model``), ``detail`` says what was
    wrong and what to do, ``param`` names the request field at fault (OpenAI shows it),
    and ``extra`` adds fields to the native body.
    """

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        param: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.param = param
        self.headers = headers or {}
        self.extra = extra

    def response(self, shape: ErrorShape | None = None) -> JSONResponse:
        """This error as a JSON response in ``shape`` (the native one by default)."""
        shape = shape or NATIVE
        status = shape.invalid_status if self.status == 422 else self.status
        headers = {"WWW-Authenticate": "Bearer", **self.headers} if status == 401 else self.headers
        return JSONResponse(shape.body(self), status_code=status, headers=headers or None)


@dataclass(frozen=True, slots=True)
class ErrorShape:
    """How one protocol writes an error body."""

    name: str
    body: Callable[[ApiError], dict[str, Any]]
    #: The status of an invalid request (the native routes answer 422; OpenAI and the OIP, 400).
    invalid_status: int = 400


def _native(error: ApiError) -> dict[str, Any]:
    return {"error": error.code, "detail": error.detail, **error.extra}


# OpenAI's own codes for what the gateway names otherwise; its clients and docs know these.
_OPENAI_CODES = {"unauthorized": "invalid_api_key", "unknown_model": "model_not_found"}


def _openai(error: ApiError) -> dict[str, Any]:
    kind = (
        "authentication_error"
        if error.status == 401
        else "invalid_request_error"
        if error.status < 500
        else "server_error"
    )
    code = _OPENAI_CODES.get(error.code, error.code)
    return {"error": {"message": error.detail, "type": kind, "param": error.param, "code": code}}


def _oip(error: ApiError) -> dict[str, Any]:
    return {"error": error.detail}


NATIVE = ErrorShape("native", _native, invalid_status=422)
OPENAI = ErrorShape("openai", _openai)
OIP = ErrorShape("oip", _oip)


def shape_of(scope: Scope, routes: Sequence[Any] | None = None) -> ErrorShape:
    """The error shape of the route that serves ``scope``.

    After routing, the route is in the scope; before it (middleware), ``routes`` are
    matched against the path. Anything that matches no route answers natively.
    """
    route = scope.get("route")
    if route is None and routes is not None:
        route = next((r for r in routes if r.matches(scope)[0] is Match.FULL), None)
    shape = getattr(route, "error_shape", NATIVE)
    return shape if isinstance(shape, ErrorShape) else NATIVE


def validation_message(errors: Any) -> tuple[str, str | None]:
    """A one-line message for pydantic/FastAPI validation errors, and the first field at fault."""
    parts: list[str] = []
    first: str | None = None
    for error in errors:
        location = [str(p) for p in error.get("loc", ()) if p != "body"]
        field = ".".join(location)
        first = first if first is not None else (field or None)
        parts.append(f"{field}: {error.get('msg', 'invalid')}" if field else str(error.get("msg", "invalid")))
    return "; ".join(parts) or "the request is invalid", first


def from_sdk(exc: InferstreamError, *, model: str | None = None) -> ApiError:
    """The answer to an SDK error raised while serving a request of ``model``.

    A request the model or its contract refuses is the caller's error (400); a model
    or route that does not exist, 404; Kafka, 503; no answer in time, 504.
    """
    extra: dict[str, Any] = {"model": model} if model is not None else {}
    if isinstance(exc, RequestTimeoutError):
        return ApiError(504, "timeout", str(exc), **extra)
    if isinstance(exc, ContractError):  # invalid inputs, or a worker refused the request
        return ApiError(400, "invalid_request", str(exc), **extra)
    if isinstance(exc, ModelError):
        return ApiError(404, "unknown_model", str(exc), param="model", **extra)
    if isinstance(exc, ConfigError):  # a bare model name without a route
        return ApiError(404, "no_route", str(exc), param="model", **extra)
    if isinstance(exc, KafkaError):
        return ApiError(503, "kafka_unavailable", str(exc), **extra)
    return ApiError(500, "internal_error", str(exc), **extra)
