"""Reading the contracts' field annotations: what ``Annotated`` wraps, and what a union holds.

Shared by the mappings derived from the pydantic models (Arrow schemas, compiled
decoders, the JSON policy's plan, the codec's encoder choice).
"""

from __future__ import annotations

import types
import typing
from typing import Any, Union, get_args, get_origin


def unwrap(annotation: Any) -> tuple[Any, list[Any]]:
    """The type inside any ``Annotated[...]`` wrappers, and their metadata (outermost first)."""
    metadata: list[Any] = []
    while get_origin(annotation) is typing.Annotated:
        annotation, *extra = get_args(annotation)
        metadata += extra
    return annotation, metadata


def is_union(annotation: Any) -> bool:
    """``X | Y`` or ``Union[X, Y]`` (``Optional[X]`` included)."""
    origin = get_origin(annotation)
    return origin is Union or origin is types.UnionType


def members(annotation: Any) -> tuple[list[Any], bool]:
    """The members of a union other than None (the annotation itself if no union), and whether None is one."""
    if is_union(annotation):
        args = get_args(annotation)
        kept = [a for a in args if a is not type(None)]
        return kept, len(kept) < len(args)
    return [annotation], False


__all__ = ["is_union", "members", "unwrap"]
