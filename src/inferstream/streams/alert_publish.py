"""Publishing a monitor's alert: produce, wait for the acknowledgement, and stall (never drop) while Kafka is away."""

from __future__ import annotations

import logging
import threading
import time

from inferstream.connectors.kafka.producer import Producer
from inferstream.errors import DeliveryError
from inferstream.schemas.codec import codec_for
from inferstream.schemas.records import DriftAlert

log = logging.getLogger("inferstream.monitoring")

_CODEC = codec_for(DriftAlert)


def publish_alert(producer: Producer, topic: str, alert: DriftAlert, stopping: threading.Event) -> None:
    """Produce ``alert`` and wait until it is acknowledged; retries with backoff unless ``stopping`` is set."""
    # A broker that is away stalls the monitor (nothing is committed meanwhile), never drops the alert.
    delay = 0.5
    while True:
        producer.produce(topic, _CODEC.encode(alert), alert.key(), [_CODEC.header])
        try:
            producer.flush(30)
            return
        except DeliveryError as exc:
            if stopping.is_set():
                raise
            log.error("monitor %s: alert not acknowledged (%s); retrying in %.1fs", alert.monitor, exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, 30.0)
