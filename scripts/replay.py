"""Replaying history into queues: `dovecote replay`, `dovecote rewind` and `dovecote import`.

The messages come from the log (read-only, beside a running broker if there is one) or from a
JSON-lines export (`dovecote log --json`), and go to a broker as new messages through the native
client, several batches in flight. Each replayed message keeps its body and attributes and, where
the ten-attribute limit leaves room, gains `dovecote.OriginalMessageId` and
`dovecote.OriginalSentTimestamp`.
"""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import trio

from .actors.limits import SQS_MAX_MESSAGE_ATTRIBUTES
from .actors.attributes import to_wire
from .net.client import BrokerError, MessageAttributeValue, SendEntry, open_client
from .storage.records import MessageAttribute, MessageSent, Published

ORIGINAL_ID = "dovecote.OriginalMessageId"
ORIGINAL_SENT = "dovecote.OriginalSentTimestamp"
BATCH = 10
BATCHES_IN_FLIGHT = 8


def replay_entry(index: int, record: MessageSent) -> SendEntry:
    attributes = to_wire(record.attributes)
    if len(attributes) <= SQS_MAX_MESSAGE_ATTRIBUTES - 2:
        attributes[ORIGINAL_ID] = MessageAttributeValue("String", record.message_id)
        attributes[ORIGINAL_SENT] = MessageAttributeValue("Number", str(record.at_ms))
    return SendEntry(str(index), record.body, 0, attributes)


def as_message(record: MessageSent | Published) -> MessageSent:
    """A topic's publish as the message it replays as: its text, attributes, id and time. Raises
    ValueError for one stored encrypted that was not opened (no master key file)."""
    sealed = record.sealed
    if sealed is not None and sealed.ciphertext:
        raise ValueError(
            f"message {record.message_id} is stored encrypted: give the master key file (--sse-master-key-file) to replay it"
        )
    if isinstance(record, MessageSent):
        return record
    return MessageSent(record.at_ms, 0, record.topic, record.seq, 0, record.message_id, "", record.message, record.attributes)


def records_from_export(lines: Iterable[str]) -> Iterator[tuple[str, object]]:
    """(kind, record) pairs from `dovecote log --json` lines: MessageSent records and the
    QueueCreated records that say how to create their queues."""
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            document = json.loads(line)
            kind = document["kind"]
            if kind == "MessageSent" and not document.get("encrypted", {}).get("opened", True):
                raise ValueError(f"message {document['message_id']} was exported encrypted (without the master key file)")
            if kind == "MessageSent":
                attributes = {
                    name: MessageAttribute(
                        value["data_type"],
                        value.get("string_value"),
                        base64.b64decode(value["binary_value"]) if value.get("binary_value") else None,
                    )
                    for name, value in document["attributes"].items()
                }
                yield kind, MessageSent(
                    document["at_ms"], document["queue_id"], document["queue"], document["seq"],
                    document["delay_seconds"], document["message_id"], document["sender_id"],
                    document["body"], attributes,
                )
            elif kind == "QueueCreated":
                yield kind, (document["queue"], document["attributes"])
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"line {number} is not a dovecote log record: {error}") from None


async def send_all(
    host: str,
    port: int,
    messages: Iterable[MessageSent],
    into: str | None,
    progress: Callable[[int], None],
    queues_to_create: dict[str, dict[str, str]] | None = None,
    connection: Mapping[str, Any] | None = None,
) -> int:
    """Send every message (to `into`, or back to its own queue) in batches; returns how many.
    connection: open_client's tls and access_key."""
    sent = 0
    async with open_client(host, port, **(connection or {})) as client:
        for name, attributes in (queues_to_create or {}).items():
            await client.create_queue(name, _writable(attributes))
        batches_send, batches_receive = trio.open_memory_channel[tuple[str, list[SendEntry]]](BATCHES_IN_FLIGHT)

        async def sender() -> None:
            nonlocal sent
            async for queue, entries in batches_receive:
                result = await client.send_message_batch(queue, entries)
                if result.failed:
                    failure = result.failed[0]
                    raise BrokerError(failure.code, f"replaying into {queue}: {failure.message}")
                sent += len(entries)
                progress(sent)

        async with trio.open_nursery() as nursery:
            for _ in range(BATCHES_IN_FLIGHT):
                nursery.start_soon(sender)
            async with batches_send:
                pending: dict[str, list[SendEntry]] = {}
                for record in messages:
                    queue = into or record.queue
                    batch = pending.setdefault(queue, [])
                    batch.append(replay_entry(len(batch), record))
                    if len(batch) == BATCH:
                        await batches_send.send((queue, pending.pop(queue)))
                for queue, batch in pending.items():
                    await batches_send.send((queue, batch))
    return sent


def _writable(attributes: dict[str, str]) -> dict[str, str]:
    read_only = {"CreatedTimestamp", "LastModifiedTimestamp"}
    return {name: value for name, value in attributes.items() if name not in read_only}


def progress_bar(total: int | None) -> Callable[[int], None]:
    """A progress line on stderr (when it is a terminal, or always with a known total)."""

    def show(done: int) -> None:
        if done % 1000 and done != total:
            return
        if total:
            filled = int(30 * done / total)
            sys.stderr.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {done:,}/{total:,}")
        else:
            sys.stderr.write(f"\r{done:,} messages")
        sys.stderr.flush()

    return show
