"""What SQS answers, rendered: received messages with their receipt handles, system attributes and
checksums, and the result of a send. Pure.

The checksums are AWS's: MD5OfMessageBody is the MD5 of the body's UTF-8; MD5OfMessageAttributes is
over each attribute in name order, its length-prefixed name, data type, a transport byte (1 string,
2 binary) and its value.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping, Sequence

from dovecote.storage.records import MessageAttribute, MessageReceived, MessageSent

from .attributes import AnyAttribute, to_wire
from .ids import ReceiptHandle, encode_receipt_handle
from .ops import ReceivedMessage, Sent


def md5_of_body(body: str) -> str:
    return hashlib.md5(body.encode()).hexdigest()


_LENGTH = struct.Struct(">I")


def md5_of_message_attributes(attributes: Mapping[str, AnyAttribute]) -> str | None:
    if not attributes:
        return None
    digest = hashlib.md5()
    for name in sorted(attributes):
        value = attributes[name]
        for part in (name.encode(), value.data_type.encode()):
            digest.update(_LENGTH.pack(len(part)) + part)
        if value.binary_value is not None and value.data_type.startswith("Binary"):
            digest.update(b"\x02" + _LENGTH.pack(len(value.binary_value)) + value.binary_value)
        else:
            encoded = (value.string_value or "").encode()
            digest.update(b"\x01" + _LENGTH.pack(len(encoded)) + encoded)
    return digest.hexdigest()


def sequence_number(seq: int) -> str:
    """A FIFO message's SequenceNumber: its LSN, as the 20-digit string AWS uses."""
    return f"{seq:020d}"


def sent(
    message_id: str,
    body: str,
    attributes: Mapping[str, MessageAttribute],
    system_attributes: Mapping[str, MessageAttribute],
    seq: int | None,
) -> Sent:
    """A send's result: its MessageId, the checksums of what was sent, and (FIFO) its
    SequenceNumber."""
    return Sent(
        message_id,
        md5_of_body(body),
        md5_of_message_attributes(attributes),
        md5_of_message_attributes(system_attributes),
        sequence_number(seq) if seq is not None else None,
    )


def received_message(
    record: MessageReceived,
    row: MessageSent,
    attribute_names: Sequence[str],
    message_attribute_names: Sequence[str],
    *,
    fifo: bool,
    account_id: str,
) -> ReceivedMessage:
    """One message of a ReceiveMessage answer: the receive `record` names the delivery (its receipt
    handle carries the receive count), `row` is the message as stored."""
    handle = encode_receipt_handle(ReceiptHandle(record.queue_id, record.seq, record.receive_count, record.message_id))
    message_attributes = select_message_attributes(row.attributes, message_attribute_names)
    return ReceivedMessage(
        message_id=row.message_id,
        receipt_handle=handle,
        body=row.body,
        md5_of_body=md5_of_body(row.body),
        md5_of_message_attributes=md5_of_message_attributes(message_attributes),
        attributes=system_attributes(row, record, attribute_names, fifo, account_id),
        message_attributes=to_wire(message_attributes) if message_attributes else {},
    )


def system_attributes(
    row: MessageSent, record: MessageReceived, names: Sequence[str], fifo: bool, account_id: str
) -> dict[str, str]:
    if not names:
        return {}
    everything = {
        "SenderId": row.sender_id or account_id,
        "SentTimestamp": str(row.first_sent_ms or row.at_ms),
        "ApproximateReceiveCount": str(record.receive_count),
        "ApproximateFirstReceiveTimestamp": str(record.first_receive_ms),
    }
    if "AWSTraceHeader" in row.system_attributes:
        everything["AWSTraceHeader"] = row.system_attributes["AWSTraceHeader"].string_value or ""
    if row.group_id:
        everything["MessageGroupId"] = row.group_id
    if row.dedup_id:
        everything["MessageDeduplicationId"] = row.dedup_id
    if fifo:
        everything["SequenceNumber"] = sequence_number(row.seq)
    if row.dead_letter_source_arn:
        everything["DeadLetterQueueSourceArn"] = row.dead_letter_source_arn
    return select_named(everything, names)


def select_named(everything: dict[str, str], names: Sequence[str]) -> dict[str, str]:
    """The entries a request named, or all of them for `All` (as SQS attribute names work). An
    attribute set to nothing (Policy="", KmsMasterKeyId="") is left out, named or not, as AWS
    leaves unset attributes out (recorded: localstack's test_sqs_permission_lifecycle, a Policy
    after its last permission is removed)."""
    chosen = everything if "All" in names else {name: everything[name] for name in names if name in everything}
    return {name: value for name, value in chosen.items() if value != ""}


def select_message_attributes(
    attributes: Mapping[str, MessageAttribute], names: Sequence[str]
) -> dict[str, MessageAttribute]:
    """The message attributes a receive asked for: `All`, `*` or `.*` for every one (AWS takes all
    three: localstack's recordings, test_receive_message_message_attribute_names_filters), a name,
    or a prefix such as `bar.*`."""
    if not attributes or not names:
        return {}
    if "All" in names or "*" in names or ".*" in names:
        return dict(attributes)
    prefixes = tuple(name[:-1] for name in names if name.endswith(".*"))
    exact = set(names)
    return {
        name: value
        for name, value in attributes.items()
        if name in exact or (prefixes and name.startswith(prefixes))
    }
