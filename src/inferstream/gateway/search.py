"""``POST /v1/search`` and ``POST /v1/retrieve``: the vector index, searched through the SDK.

``/v1/search`` answers hits as :meth:`inferstream.client.Client.search` finds them;
``/v1/retrieve`` answers passages for a RAG prompt (:meth:`~inferstream.client.Client.retrieve`:
hybrid search, documents with text only, each with its source).
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from inferstream.errors import InferstreamError, SearchError
from inferstream.gateway._body import JsonRoute
from inferstream.gateway._errors import ApiError
from inferstream.gateway._state import Gateway


class SearchBody(BaseModel):
    """The body of ``POST /v1/search``."""

    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1, max_length=10_000, description="What to look for (embedded like the index).")
    k: int = Field(default=10, ge=1, le=1000, description="How many hits.")
    filters: dict[str, str | list[str]] | None = Field(
        default=None, description="Field → value(s) the hits must have (e.g. `attributes.lang`)."
    )
    hybrid: bool = Field(default=False, description="Fuse kNN with BM25 on the text (reciprocal rank fusion).")
    num_candidates: int | None = Field(default=None, ge=1, le=10_000, description="kNN candidates per shard.")


class RetrieveBody(BaseModel):
    """The body of ``POST /v1/retrieve``."""

    model_config = ConfigDict(extra="forbid")

    question: str = Field(min_length=1, max_length=10_000, description="The question to find passages for.")
    k: int = Field(default=5, ge=1, le=100, description="How many passages at most.")
    filters: dict[str, str | list[str]] | None = Field(
        default=None, description="Field → value(s) the passages must have (e.g. `attributes.lang`)."
    )


class Passage(BaseModel):
    """A retrieved passage: its text, where it came from, how well it matched."""

    text: str
    source: str = Field(description="The document's `source` attribute, else its id.")
    score: float
    document_id: str
    event_time: datetime | None = None
    attributes: dict[str, str] = Field(default_factory=dict)


class Passages(BaseModel):
    """The answer of ``POST /v1/retrieve``: the best passages first."""

    question: str
    passages: list[Passage]


def router(state: Gateway) -> APIRouter:
    """The search route."""
    routes = APIRouter(prefix="/v1", dependencies=[Depends(state.authorize("read"))], route_class=JsonRoute)

    @routes.post("/search", summary="Search the vector index (kNN, optionally hybrid with BM25)")
    async def search(body: SearchBody) -> dict[str, Any]:
        try:
            result = await state.call(
                state.client.search,
                body.query,
                body.k,
                filters=body.filters,
                hybrid=body.hybrid,
                num_candidates=body.num_candidates,
            )
        except SearchError as exc:
            raise ApiError(503, "search_unavailable", str(exc)) from None
        except InferstreamError as exc:
            raise ApiError(400, "search_failed", str(exc)) from None
        return dataclasses.asdict(result)

    @routes.post(
        "/retrieve",
        summary="Passages for a RAG prompt (hybrid search over the index)",
        response_model=Passages,
        responses={503: {"description": "No index to search (or it is down)."}},
    )
    async def retrieve(body: RetrieveBody) -> Passages:
        try:
            found = await state.call(state.client.retrieve, body.question, body.k, filters=body.filters)
        except SearchError as exc:
            raise ApiError(503, "search_unavailable", str(exc)) from None
        except InferstreamError as exc:
            raise ApiError(400, "search_failed", str(exc)) from None
        return Passages(question=body.question, passages=[Passage(**dataclasses.asdict(p)) for p in found])

    return routes
