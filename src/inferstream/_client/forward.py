"""The client's methods that are another object's: their signature and documentation live once, there.

``Client.search`` is :meth:`Searcher.search <inferstream.search.Searcher.search>` on the
client's searcher; writing the method out again would repeat its parameters and their
meaning, and let the two drift apart.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any, Concatenate, Generic, ParamSpec, Self, TypeVar, overload

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


class Forward(Generic[T, P, R]):
    """A method that calls ``method`` on what the owner's ``attribute`` holds, looked up at each call.

    Looked up when called, not when read: reading ``client.search`` (to hand it to a
    thread pool, say) must not open the index. Read on the class, it is the unbound
    method: ``Client.search(client, "text")`` works, and its signature is the method's.
    """

    def __init__(self, attribute: str, method: Callable[Concatenate[T, P], R]) -> None:
        self.attribute = attribute
        self.method = method
        self.__doc__ = method.__doc__
        self.__wrapped__ = method  # inspect.signature and help() show the method's
        self.__name__ = self.__qualname__ = method.__name__

    def __set_name__(self, owner: type[Any], name: str) -> None:
        # help(Client) names it as the client does: closest_topic, not TopicNames' closest.
        self.__name__, self.__qualname__ = name, f"{owner.__qualname__}.{name}"

    def __call__(self, owner: object, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.method(getattr(owner, self.attribute), *args, **kwargs)

    @overload
    def __get__(self, owner: None, kind: type[Any] | None = None) -> Self: ...

    @overload
    def __get__(self, owner: object, kind: type[Any] | None = None) -> Callable[P, R]: ...

    def __get__(self, owner: object | None, kind: type[Any] | None = None) -> Self | Callable[P, R]:
        return self if owner is None else types.MethodType(self, owner)


def forward(attribute: str, method: Callable[Concatenate[T, P], R]) -> Forward[T, P, R]:
    """``method`` of the object in the owner's ``attribute``, as a method of the owner (same signature and doc)."""
    return Forward(attribute, method)
