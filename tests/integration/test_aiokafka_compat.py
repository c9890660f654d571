"""faust-streaming (the ingest processor's library) talks to Kafka through aiokafka.

This checks that aiokafka works against the broker version the project runs:
idempotent produce, a consumer group with manual commits, and records our SDK wrote.
"""

import asyncio

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from inferstream import Client, Settings
from inferstream.schemas import SCHEMA_HEADER, Event, codec_for


def test_aiokafka_produces_and_consumes_in_a_group(settings: Settings) -> None:
    topic = settings.topics.name("events")
    with Client(settings) as client:
        client.topics.ensure_platform_topics()
        client.produce("events", [{"id": "sdk-1", "type": "review", "text": "from the sdk"}])
    codec = codec_for(Event)

    async def run() -> list[Event]:
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers, enable_idempotence=True)
        await producer.start()
        try:
            record = codec.validate({"id": "aio-1", "type": "review", "text": "from aiokafka"})
            await producer.send_and_wait(topic, codec.encode(record), key=b"aio-1", headers=[codec.header])
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=settings.kafka.bootstrap_servers,
            group_id="aiokafka-compat",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        events: list[Event] = []
        try:
            for _ in range(30):
                batches = await consumer.getmany(timeout_ms=1000)
                for messages in batches.values():
                    for message in messages:
                        events.append(codec.decode(message.value, headers=message.headers))
                        assert (SCHEMA_HEADER, b"event/1") in message.headers
                if len(events) >= 2:
                    break
            await consumer.commit()
            committed = [await consumer.committed(tp) for tp in consumer.assignment()]
        finally:
            await consumer.stop()
        assert sum(c or 0 for c in committed) == 2
        return events

    events = asyncio.run(run())
    assert sorted(e.id for e in events) == ["aio-1", "sdk-1"]
