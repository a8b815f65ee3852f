"""Shovels: the rules of the links that carry messages between a local queue and a remote SQS queue
or SNS topic (Amazon's, or any endpoint speaking their API, another dovecote included). Pure: no I/O.

A shovel consumes from one side and produces to the other, and acknowledges where it consumed only
after the other side confirmed (RabbitMQ's Shovel): up, a local message is deleted only after the
remote accepted it; down, a remote message is deleted remotely only after the local commit. So a
crash or an outage can repeat a message, never lose one. Repeats are kept out where the destination
can recognise them: a message bound for a FIFO destination carries a deduplication id derived from
where it came from (the local message id up, the remote message id down), the same at every retry,
so within the 5-minute deduplication window a resend is dropped by the destination.

The addresses of the configuration file: a local queue is its name; a remote one is
`REMOTE:QUEUE_URL` or `REMOTE:TOPIC_ARN`, REMOTE naming a `[remote.REMOTE]` table.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import msgspec

from .ops import MessageAttributeValue, ReceivedMessage, SendEntry

MAX_BATCH = 10  # SQS SendMessageBatch, ReceiveMessage and SNS PublishBatch take at most ten
FIFO_SUFFIX = ".fifo"
SNS_VERSION = "2010-03-31"
# A remote's answers that say "not now" rather than "never": retried like an unreachable remote.
THROTTLING_CODES = frozenset({
    "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottled", "RequestThrottledException",
    "TooManyRequestsException", "ProvisionedThroughputExceededException", "RequestLimitExceeded",
    "SlowDown", "ServiceUnavailable", "InternalError", "InternalFailure", "KMSThrottlingException",
})


UP, DOWN = "up", "down"


class ShovelStatistics(NamedTuple):
    name: str
    direction: str
    source: str
    destination: str
    link_up: bool  # the remote's last answer was one (False until the first, and after a failure)
    forwarded: int  # messages the other side confirmed
    rejected: int  # messages the remote refused for good (let go, to the queue's redrive policy)
    failures: int  # requests to the remote or the local queue that failed
    in_hand: int  # messages received and not yet confirmed by the other side
    oldest_in_hand_ms: int  # wall-clock SentTimestamp of the oldest of them (0: none)
    last_error: str
    last_error_ms: int  # wall-clock milliseconds (0: none yet)


class ShovelConfigError(ValueError):
    """A remote or a shovel that cannot be used, in one line."""


class RemoteConfig(msgspec.Struct, frozen=True):
    """An SQS/SNS endpoint and the key its requests are signed with."""

    name: str
    endpoint_url: str
    region: str
    access_key_id: str
    secret_access_key: str  # read from the file or variable the configuration names, at start
    verify: bool | str = True  # an https endpoint's certificate: certifi's CAs, a CA bundle file, or unchecked
    timeout_s: float = 30.0  # one request, long polls excepted (they add their wait)


class ShovelConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str
    source: str  # the configuration file's `from`
    destination: str  # its `to`
    batch_size: int = MAX_BATCH
    concurrency: int = 8  # batches in hand at once: a remote across the internet answers in tens of milliseconds
    max_rate: float = 0.0  # messages a second at most; 0: as fast as the destination takes them
    visibility_timeout_s: int = 60  # how long a message in hand stays hidden where it was received
    wait_time_s: int = 20  # long polling of the source
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 60.0
    group_id: str = ""  # MessageGroupId for a FIFO destination when the message has none ("": the shovel's name)


class LocalQueue(NamedTuple):
    name: str

    @property
    def fifo(self) -> bool:
        return self.name.endswith(FIFO_SUFFIX)


class RemoteQueue(NamedTuple):
    remote: str
    url: str
    name: str

    @property
    def fifo(self) -> bool:
        return self.name.endswith(FIFO_SUFFIX)


class RemoteTopic(NamedTuple):
    remote: str
    arn: str
    name: str

    @property
    def fifo(self) -> bool:
        return self.name.endswith(FIFO_SUFFIX)


Address = LocalQueue | RemoteQueue | RemoteTopic


class Route(NamedTuple):
    """A shovel's two ends, checked: one local queue and one remote queue or topic."""

    source: Address
    destination: Address

    @property
    def up(self) -> bool:
        return isinstance(self.source, LocalQueue)

    @property
    def remote(self) -> RemoteQueue | RemoteTopic:
        return self.destination if self.up else self.source  # type: ignore[return-value]

    @property
    def local(self) -> LocalQueue:
        return self.source if self.up else self.destination  # type: ignore[return-value]


def parse_address(text: str, remotes: Mapping[str, object]) -> Address:
    """A configuration file's address. Raises ShovelConfigError saying what is wrong with it."""
    remote, colon, rest = text.partition(":")
    if not colon:
        if not text or len(text) > 80 or not all(c.isalnum() or c in "-_." for c in text):
            raise ShovelConfigError(f"{text!r} is not a local queue's name")
        return LocalQueue(text)
    if remote not in remotes:
        known = ", ".join(sorted(remotes)) or "none is configured"
        raise ShovelConfigError(f"{text!r} names the remote {remote!r}, which is not a [remote.NAME] table ({known})")
    if rest.startswith("arn:"):
        parts = rest.split(":")
        if len(parts) != 6 or parts[2] != "sns" or not parts[5]:
            raise ShovelConfigError(f"{rest!r} is not an SNS topic ARN (arn:aws:sns:REGION:ACCOUNT:NAME)")
        return RemoteTopic(remote, rest, parts[5])
    url = urlsplit(rest)
    path = [segment for segment in url.path.split("/") if segment]
    if url.scheme not in ("http", "https") or not url.netloc or len(path) != 2 or not path[0].isdigit():
        raise ShovelConfigError(f"{rest!r} is not an SQS queue URL (https://HOST/ACCOUNT/QUEUE) nor an SNS topic ARN")
    return RemoteQueue(remote, rest, path[1])


def route_of(shovel: ShovelConfig, remotes: Mapping[str, object]) -> Route:
    """The shovel's two ends, or ShovelConfigError naming the shovel and what is wrong."""
    try:
        source = parse_address(shovel.source, remotes)
        destination = parse_address(shovel.destination, remotes)
        if isinstance(source, RemoteTopic):
            raise ShovelConfigError("a topic cannot be shoveled from: subscribe a remote queue to it and shovel that")
        if isinstance(source, LocalQueue) == isinstance(destination, LocalQueue):
            raise ShovelConfigError("one end must be a local queue and the other a remote queue or topic")
        if isinstance(source, RemoteQueue) and destination.fifo != source.fifo:
            raise ShovelConfigError("a remote FIFO queue is shoveled into a local FIFO queue, a standard one into a standard one")
        if not 1 <= shovel.batch_size <= MAX_BATCH:
            raise ShovelConfigError(f"batch_size must be 1 to {MAX_BATCH}")
        if not 1 <= shovel.concurrency <= 32:
            raise ShovelConfigError("concurrency must be 1 to 32")
        if not 0 <= shovel.wait_time_s <= 20:
            raise ShovelConfigError("wait_time_s must be 0 to 20")
        if not 1 <= shovel.visibility_timeout_s <= 43_200:
            raise ShovelConfigError("visibility_timeout_s must be 1 to 43200")
        if shovel.max_rate < 0 or shovel.backoff_initial_s <= 0 or shovel.backoff_max_s < shovel.backoff_initial_s:
            raise ShovelConfigError("max_rate must be ≥ 0, and 0 < backoff_initial_s ≤ backoff_max_s")
    except ShovelConfigError as error:
        raise ShovelConfigError(f"shovel {shovel.name!r}: {error}") from None
    return Route(source, destination)


def check_shovels(shovels: Sequence[ShovelConfig], remotes: Mapping[str, object]) -> list[Route]:
    """Every shovel's route; names are unique, and no two shovels consume the same local queue
    (they would take each other's messages)."""
    routes, names, consumed = [], set(), set()
    for shovel in shovels:
        if shovel.name in names or not shovel.name:
            raise ShovelConfigError(f"shovel names must be given and unique: {shovel.name!r}")
        names.add(shovel.name)
        route = route_of(shovel, remotes)
        if route.up:
            if route.local.name in consumed:
                raise ShovelConfigError(f"shovel {shovel.name!r}: another shovel already consumes {route.local.name!r}")
            consumed.add(route.local.name)
        routes.append(route)
    return routes


def backoff_s(failures: int, initial_s: float, max_s: float, draw: float) -> float:
    """How long to wait after `failures` failures in a row (≥ 1): doubling from initial_s up to max_s,
    with "equal jitter" (half fixed, half drawn; draw in [0, 1)) so that links cut together do not
    come back in step, and never less than half the step."""
    step = min(max_s, initial_s * 2 ** min(failures - 1, 32))
    return step / 2 + draw * step / 2


class RateCap:
    """At most `rate` messages a second (0: no cap), as a token bucket holding one second's worth:
    an idle link may send one second's worth at once, then keeps to the rate."""

    def __init__(self, rate: float, now_s: float) -> None:
        self._rate = rate
        self._tokens = rate
        self._at_s = now_s

    def wait_s(self, count: int, now_s: float) -> float:
        """How long to wait before sending `count` messages; takes them from the bucket."""
        if self._rate <= 0:
            return 0.0
        self._tokens = min(self._rate, self._tokens + (now_s - self._at_s) * self._rate)
        self._at_s = now_s
        self._tokens -= count
        return 0.0 if self._tokens >= 0 else -self._tokens / self._rate


def retryable(status: int, code: str) -> bool:
    """Whether a remote's refusal of a whole request may pass by itself (throttling, its own fault).
    A refusal that will not (a wrong key, a queue that does not exist) is retried all the same, with
    back-off and a logged line, so a fixed remote is picked up without a restart; this only says
    which of the two the link's error reports."""
    return status >= 500 or status == 429 or code in THROTTLING_CODES


# --- up: a local message, as the remote's SendMessageBatch or PublishBatch entry ---------------------


def _group_and_dedup(message: ReceivedMessage, fifo: bool, default_group: str) -> tuple[str | None, str | None]:
    group = message.attributes.get("MessageGroupId") or None
    if not fifo:
        return group, None
    # The local message id is the same at every resend of this message and differs from every other
    # message's: the remote drops a resend within its deduplication window, and nothing else.
    return group or default_group, message.message_id


def sqs_send_entry(index: int, message: ReceivedMessage, fifo: bool, default_group: str) -> dict[str, object]:
    """An SQS JSON SendMessageBatch entry carrying the message."""
    entry: dict[str, object] = {"Id": str(index), "MessageBody": message.body}
    if message.message_attributes:
        entry["MessageAttributes"] = {name: _json_attribute(value) for name, value in message.message_attributes.items()}
    group, dedup = _group_and_dedup(message, fifo, default_group)
    if group is not None:
        entry["MessageGroupId"] = group
    if dedup is not None:
        entry["MessageDeduplicationId"] = dedup
    return entry


def _json_attribute(value: MessageAttributeValue) -> dict[str, str]:
    out = {"DataType": value.data_type}
    if value.binary_value is not None:
        out["BinaryValue"] = base64.b64encode(value.binary_value).decode()
    else:
        out["StringValue"] = value.string_value or ""
    return out


def sns_publish_pairs(topic_arn: str, messages: Sequence[ReceivedMessage], fifo: bool, default_group: str) -> list[tuple[str, str]]:
    """An SNS Query PublishBatch request's parameters carrying the messages."""
    pairs = [("Action", "PublishBatch"), ("Version", SNS_VERSION), ("TopicArn", topic_arn)]
    for index, message in enumerate(messages, 1):
        prefix = f"PublishBatchRequestEntries.member.{index}."
        pairs += [(prefix + "Id", str(index - 1)), (prefix + "Message", message.body)]
        for number, (name, value) in enumerate(message.message_attributes.items(), 1):
            attribute = f"{prefix}MessageAttributes.entry.{number}."
            pairs += [(attribute + "Name", name), (attribute + "Value.DataType", value.data_type)]
            if value.binary_value is not None:
                pairs.append((attribute + "Value.BinaryValue", base64.b64encode(value.binary_value).decode()))
            else:
                pairs.append((attribute + "Value.StringValue", value.string_value or ""))
        group, dedup = _group_and_dedup(message, fifo, default_group)
        if group is not None and fifo:  # a standard topic's MessageGroupId reaches only fair queues; not asked for here
            pairs.append((prefix + "MessageGroupId", group))
        if dedup is not None:
            pairs.append((prefix + "MessageDeduplicationId", dedup))
    return pairs


# --- down: a remote message, as a local SendMessageBatch entry ---------------------------------------


def in_sequence(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A FIFO queue's messages in the order they were sent (by SequenceNumber), whatever order the
    remote answered them in: a remote's receive may answer a group's message that became visible
    again after a later one (moto's does), and stored in that order the group's order would break."""
    def sequence(message: dict[str, Any]) -> int:
        number = str((message.get("Attributes") or {}).get("SequenceNumber", ""))
        return int(number) if number.isdigit() else 0

    return sorted(messages, key=sequence)  # stable: a standard queue's (no SequenceNumber) keep their order


def local_send_entry(index: int, message: Mapping[str, object], fifo: bool) -> SendEntry:
    """A local SendMessageBatch entry carrying a message of an SQS JSON ReceiveMessage answer.
    Raises ValueError when the message does not have an SQS message's shape."""
    body, message_id = message.get("Body"), message.get("MessageId")
    if not isinstance(body, str) or not isinstance(message_id, str):
        raise ValueError("a received message without Body or MessageId")
    attributes = message.get("Attributes") or {}
    raw_attributes = message.get("MessageAttributes") or {}
    if not isinstance(attributes, dict) or not isinstance(raw_attributes, dict):
        raise ValueError("a received message whose attributes are not objects")
    message_attributes = {name: _local_attribute(value) for name, value in raw_attributes.items()}
    group = attributes.get("MessageGroupId") or None
    return SendEntry(
        str(index), body, message_attributes=message_attributes, message_group_id=group,
        # The remote message id is the same at every redelivery of that message (see the module's story).
        message_deduplication_id=message_id if fifo else None,
    )


def _local_attribute(value: object) -> MessageAttributeValue:
    if not isinstance(value, dict) or not isinstance(value.get("DataType"), str):
        raise ValueError("a message attribute without DataType")
    if "BinaryValue" in value:
        return MessageAttributeValue(value["DataType"], binary_value=base64.b64decode(value["BinaryValue"]))
    return MessageAttributeValue(value["DataType"], string_value=str(value.get("StringValue", "")))
