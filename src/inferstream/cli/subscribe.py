"""``inferstream subscribe TOPIC``: records as JSON lines on stdout, like a console consumer."""

from __future__ import annotations

import base64
import json
import sys
from typing import TYPE_CHECKING, Annotated

import typer

from inferstream.cli._app import app
from inferstream.cli._common import client_of, console

if TYPE_CHECKING:
    from inferstream.client import Client


@app.command()
def subscribe(
    ctx: typer.Context,
    topic: Annotated[str, typer.Argument(help="Topic (platform names like `predictions` get the prefix).")],
    from_beginning: Annotated[
        bool,
        typer.Option(
            "--from-beginning",
            help="Where the group has no committed offset, start at the oldest record (else: new ones only).",
        ),
    ] = False,
    max_records: Annotated[
        int | None,
        typer.Option(
            "--max",
            "-n",
            help="Stop after N records; with --from-beginning, also at the end of the topic as it was at the start.",
            min=1,
        ),
    ] = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="With --from-beginning --max: wait for new records until N.")
    ] = False,
    group: Annotated[str | None, typer.Option("--group", "-g", help="Consumer group: resume where it stopped.")] = None,
    timeout: Annotated[
        float | None, typer.Option("--timeout", help="Stop after this many seconds without a record.", min=0)
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Only predictions of NAME or NAME:VERSION (prediction topics).")
    ] = None,
    envelope: Annotated[
        bool, typer.Option("--envelope", "-e", help="Wrap each record with topic, partition, offset, key and headers.")
    ] = False,
) -> None:
    """Print each record's value as one JSON line (Ctrl-C stops; offsets are committed).

    ``--from-beginning --max N`` reads what the topic holds: it stops at N records, or at the
    end offsets read at the start when there are fewer; ``--follow`` waits for new ones instead.
    """
    client = client_of(ctx)
    # A bounded read of what is there: with fewer than N records it would otherwise wait forever.
    stop_at_end = from_beginning and max_records is not None and not follow
    if model is not None:
        _predictions_of(client, topic, model, from_beginning, max_records, group, timeout, stop_at_end)
        return
    subscription = client.subscribe(
        topic,
        group=group,
        from_beginning=from_beginning,
        max_records=max_records,
        idle_timeout=timeout,
        decode=False,
        stop_at_end=stop_at_end,
    )
    subscription.consumer.stop_on_signals()
    write = sys.stdout.buffer.write
    count = 0
    with subscription:
        for batch in subscription.raw():
            for message in batch:
                value = message.value() or b"null"
                if envelope:
                    write(_envelope(message, value))
                else:
                    write(value if isinstance(value, bytes) else value.encode())
                write(b"\n")
            count += len(batch)
            sys.stdout.buffer.flush()
    read = f"read {count} records from {client.topic(topic)}"
    if subscription.reached_end:
        read += ": the end of the topic as it was at the start (--follow waits for new ones)"
    console.print(f"[dim]{read}[/]")


def _envelope(message: object, value: bytes) -> bytes:
    from confluent_kafka import Message

    assert isinstance(message, Message)
    try:
        decoded: object = json.loads(value)
    except ValueError:
        decoded = {"base64": base64.b64encode(value).decode()}
    key = message.key()
    headers = {k: (v.decode(errors="replace") if isinstance(v, bytes) else v) for k, v in (message.headers() or [])}
    return json.dumps(
        {
            "topic": message.topic(),
            "partition": message.partition(),
            "offset": message.offset(),
            "timestamp": message.timestamp()[1],
            "key": key.decode(errors="replace") if isinstance(key, bytes) else key,
            "headers": headers,
            "value": decoded,
        },
        separators=(",", ":"),
    ).encode()


def _predictions_of(
    client: Client,
    topic: str,
    model: str,
    from_beginning: bool,
    max_records: int | None,
    group: str | None,
    timeout: float | None,
    stop_at_end: bool,
) -> None:
    logical = client.settings.topics.logical(client.topic(topic))
    if logical not in (client.settings.topics.predictions, client.settings.topics.predictions_shadow):
        raise typer.BadParameter("--model filters prediction topics (predictions, predictions-shadow)")
    count = 0
    stream = client.subscribe_predictions(
        model,
        shadow=logical == client.settings.topics.predictions_shadow,
        from_beginning=from_beginning,
        group=group,
        idle_timeout=timeout,
        stop_at_end=stop_at_end,
    )
    for prediction in stream:
        sys.stdout.write(prediction.model_dump_json() + "\n")
        sys.stdout.flush()
        count += 1
        if max_records is not None and count >= max_records:
            break
    console.print(f"[dim]{count} predictions of {model}[/]")
