"""inferstream: Kafka-native streaming ML.

Produce events to topics, subscribe to prediction streams, watch drift alerts::

    from inferstream import Client, Settings

    with Client(Settings.load()) as client:
        client.produce("events", [{"id": "e1", "type": "review", "text": "great"}])
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from inferstream.client import Client, ProduceReport, Received, Subscription
    from inferstream.config import Settings
    from inferstream.errors import InferstreamError

__version__ = "0.1.0"

__all__ = ["Client", "InferstreamError", "ProduceReport", "Received", "Settings", "Subscription", "__version__"]

# The public names load on first use (PEP 562): importing a submodule, such as the CLI for
# `inferstream --help`, then costs only that submodule, not the SDK with numpy and the Kafka client.
_LAZY = {
    "Client": "inferstream.client",
    "InferstreamError": "inferstream.errors",
    "ProduceReport": "inferstream.client",
    "Received": "inferstream.client",
    "Settings": "inferstream.config",
    "Subscription": "inferstream.client",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value  # once loaded, a plain attribute: no second trip through here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
