"""inferstream: Kafka-native streaming ML.

Produce events to topics, subscribe to prediction streams, watch drift alerts::

    from inferstream import Client, Settings

    with Client(Settings.load()) as client:
        client.produce("events", [{"id": "e1", "type": "review", "text": "great"}])
"""

from inferstream.client import Client, ProduceReport, Received, Subscription
from inferstream.config import Settings
from inferstream.errors import InferstreamError

__version__ = "0.1.0"

__all__ = ["Client", "InferstreamError", "ProduceReport", "Received", "Settings", "Subscription", "__version__"]
