"""Compiled decoding into a view: a struct that reads as the record would, no record built.

Building the pydantic record from the decoded struct (:class:`~inferstream.schemas.compiled.FastDecoder`)
costs about as much again as the checks, ~1 µs a request on the tabular worker's hot path. A
view is the decoder's struct itself, made mutable, each field converted in place by the
model's own conversions: timestamps become aware datetimes, nested parts their records, so
every attribute holds the value the record's would. It has no pydantic methods; its readers
only read attributes.

One field is *echoed*: decoded and checked as before, and its JSON text kept as it came.
A writer that copies the field into its own record (a prediction echoes its request's
inputs) embeds that text (``orjson.Fragment``) instead of encoding the values again (~1.6 µs
for 30 features). The text holds the same values, in the writer's spelling of them
(exponents, escapes and spaces as the request had them); it passed the same checks as the
values (the JSON policy included), or the record went the model's way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
from pydantic import BaseModel

from inferstream.schemas.compiled import UnsupportedError, _after_validators, _Mapper, _statements

#: A view and its echoed field's JSON text.
Viewed = tuple[Any, bytes]


class FastView:
    """Decodes one contract's JSON bytes in compiled code into a view of the record; None where the model must decide.

    Takes exactly the bytes :class:`~inferstream.schemas.compiled.FastDecoder` takes, with the
    same values (``tests/unit/test_compiled_view.py``).
    """

    def __init__(self, model: type[BaseModel], *, echo: str) -> None:
        if _after_validators(model):
            raise UnsupportedError(f"{model.__name__} has validators that need the record")
        fields, converted = _Mapper().fields(model)
        kinds = {name: (kind, default) for name, kind, default in fields}
        if echo not in kinds:
            raise UnsupportedError(f"{model.__name__} has no field {echo!r}")
        kind, default = kinds[echo]
        if default is not msgspec.NODEFAULT or echo in dict(converted):
            raise UnsupportedError(f"the echoed field {echo!r} must be required and taken as decoded")
        #: The views' type: what ``decode`` gives is an instance of it (or None).
        self.type: type[msgspec.Struct] = msgspec.defstruct(
            f"{model.__name__}View",
            [(name, msgspec.Raw if name == echo else k, d) for name, k, d in fields],
            kw_only=True,
            forbid_unknown_fields=True,
        )
        self._decode = msgspec.json.Decoder(self.type).decode
        self._view = _viewer(converted, echo, msgspec.json.Decoder(kind).decode)

    def decode(self, data: bytes) -> Viewed | None:
        """The view and the echoed field's JSON text, or None: not taken here (the model decodes it, or refuses it)."""
        try:
            return self._view(self._decode(data))
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError, TypeError):
            return None


def _viewer(
    converted: list[tuple[str, Callable[[Any], Any]]], echo: str, decode_echo: Callable[[Any], Any]
) -> Callable[[Any], Viewed]:
    """A function converting each field of a struct in place, then decoding the echoed one (straight-line code)."""
    body, namespace = _statements(converted, assign=True)
    namespace.update(_echo=decode_echo, _bytes=bytes)
    body += f"    text = struct.{echo}\n    struct.{echo} = _echo(text)\n    return struct, _bytes(text)\n"
    exec(f"def view(struct):\n{body}", namespace)
    view: Callable[[Any], Viewed] = namespace["view"]
    return view


def fast_view(model: type[BaseModel], echo: str) -> FastView | None:
    """The compiled view decoder of a model echoing ``echo``, or None where it has none."""
    try:
        return FastView(model, echo=echo)
    except UnsupportedError:
        return None


__all__ = ["FastView", "Viewed", "fast_view"]
