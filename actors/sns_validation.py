"""What SNS accepts, checked as AWS checks it: topic names and attributes, subscriptions (their
protocols, endpoints and attributes), publishes and publish batches. Pure; each check raises
BrokerError with the code and wording SNS uses.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit


from .attributes import AnyAttribute
from . import authorization, delivery_policy, mobile, validation
from .errors import BrokerError, invalid_parameter, parameter_value_invalid
from .filter_policy import ATTRIBUTES, compile_policy
from .function_core import is_function_arn
from .limits import SNS_MAX_ARCHIVE_DAYS, SNS_MAX_BATCH_BYTES, SNS_MAX_BATCH_ENTRIES, SNS_MAX_MESSAGE_BYTES
from .ops import PublishEntry
from .push_types import FUNCTION_PROTOCOL, MOBILE_PROTOCOLS, PUSH_PROTOCOLS

UNREACHABLE_PROTOCOLS = {"firehose"}  # need services outside this broker
MAIL_ADDRESS = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
TOPIC_ATTRIBUTES = {
    "DisplayName",
    "Policy",
    "DeliveryPolicy",
    "KmsMasterKeyId",
    "SignatureVersion",
    "TracingConfig",
    "ArchivePolicy",
    "ContentBasedDeduplication",
    "DataProtectionPolicy",
    "FifoThroughputScope",
}
FIFO_THROUGHPUT_SCOPES = ("Topic", "MessageGroup")
# SNS's reserved message attributes (SMS: sender id, type, price, origination; mobile push:
# APNS/FCM settings), which a publish may carry though user attributes may not start with "AWS.".
RESERVED_ATTRIBUTE_PREFIXES = ("AWS.SNS.SMS.", "AWS.MM.SMS.", "AWS.SNS.MOBILE.")
SUBSCRIPTION_ATTRIBUTES = {
    "DeliveryPolicy",
    "FilterPolicy",
    "FilterPolicyScope",
    "RawMessageDelivery",
    "RedrivePolicy",
    "SubscriptionRoleArn",
    "ReplayPolicy",
}


def validate_topic_name(name: str, fifo: bool) -> None:
    base = name[:-5] if fifo and name.endswith(".fifo") else name
    if not 1 <= len(name) <= 256 or not all(c.isascii() and (c.isalnum() or c in "-_") for c in base) or fifo != name.endswith(".fifo"):
        raise invalid_parameter(
            "Topic Name" if not fifo else "Fifo Topic names must end with .fifo and must be made up of only "
            "uppercase and lowercase ASCII letters, numbers, underscores, and hyphens, and must be between 1 and 256 characters long."
        )


def validate_topic_attributes(attributes: Mapping[str, str], *, fifo: bool, creating: bool = False) -> dict[str, str]:
    checked: dict[str, str] = {}
    for name, value in attributes.items():
        if name == "FifoTopic" and creating:
            if value.lower() not in ("true", "false"):
                raise invalid_parameter("Attributes Reason: FifoTopic must be true or false")
            if fifo:
                checked[name] = "true"
            continue
        if name not in TOPIC_ATTRIBUTES:
            raise invalid_parameter(f"AttributeName: {name[:60]}")
        if name == "ContentBasedDeduplication":
            if not fifo:
                raise invalid_parameter("Attributes Reason: Content-based deduplication can only be set for FIFO topics")
            if value.lower() not in ("true", "false"):
                raise invalid_parameter("Attributes Reason: ContentBasedDeduplication must be true or false")
            value = value.lower()
        elif name == "SignatureVersion" and value not in ("1", "2"):
            raise invalid_parameter("Attributes Reason: SignatureVersion must be 1 or 2")
        elif name == "TracingConfig" and value not in ("PassThrough", "Active"):
            raise invalid_parameter("Attributes Reason: TracingConfig must be PassThrough or Active")
        elif name == "FifoThroughputScope":
            if not fifo:
                raise invalid_parameter("Attributes Reason: FifoThroughputScope can only be set for FIFO topics")
            if value not in FIFO_THROUGHPUT_SCOPES:
                raise invalid_parameter(f"Attributes Reason: FifoThroughputScope: Invalid value [{value[:40]}]. Please use either Topic or MessageGroup")
        elif name == "DisplayName" and len(value) > 100:
            raise invalid_parameter("DisplayName: at most 100 characters")
        elif name == "ArchivePolicy" and value:
            if not fifo:
                raise invalid_parameter("Attributes Reason: ArchivePolicy is supported only for FIFO topics")
            document = json_object(name, value)
            days = document.get("MessageRetentionPeriod")
            if document and (isinstance(days, bool) or not str(days).isdigit() or not 1 <= int(str(days)) <= SNS_MAX_ARCHIVE_DAYS):
                raise invalid_parameter(f"ArchivePolicy: MessageRetentionPeriod must be 1 to {SNS_MAX_ARCHIVE_DAYS} days")
        elif name == "DeliveryPolicy" and value:
            delivery_policy.validate_topic_policy(value)
        elif name == "Policy" and value:
            try:
                authorization.parse_policy(value)
            except authorization.PolicyError as error:
                raise invalid_parameter(f"Policy Error: {error}") from None
        elif name == "DataProtectionPolicy" and value:
            json_object(name, value)
        checked[name] = value
    return checked


def validate_subscription_attributes(
    attributes: Mapping[str, str], current: Mapping[str, str] | None = None, *, subscribing: bool = False
) -> dict[str, str]:
    """Check subscription attributes being set (beside the `current` ones, whose scope a new
    FilterPolicy is compiled for). AWS words a refusal "Invalid parameter: Attributes Reason: ..."
    in a Subscribe (`subscribing`) and "Invalid parameter: ..." in a SetSubscriptionAttributes."""
    try:
        return _subscription_attributes(attributes, current)
    except BrokerError as error:
        prefix = "Invalid parameter: "
        if subscribing and error.code == "InvalidParameter" and error.message.startswith(prefix):
            raise invalid_parameter("Attributes Reason: " + error.message[len(prefix):]) from None
        raise


def _subscription_attributes(attributes: Mapping[str, str], current: Mapping[str, str] | None) -> dict[str, str]:
    scope = attributes.get("FilterPolicyScope", (current or {}).get("FilterPolicyScope", ATTRIBUTES))
    checked: dict[str, str] = {}
    for name, value in attributes.items():
        if name not in SUBSCRIPTION_ATTRIBUTES:
            raise invalid_parameter("AttributeName")
        if name == "RawMessageDelivery":
            if value.lower() not in ("true", "false"):
                raise invalid_parameter("RawMessageDelivery: Invalid value [" + value[:20] + "]. Must be true or false.")
            value = value.lower()
        elif name == "FilterPolicyScope" and value not in ("MessageAttributes", "MessageBody"):
            raise invalid_parameter(
                f"FilterPolicyScope: Invalid value [{value[:40]}]. Please use either MessageBody or MessageAttributes"
            )
        elif name == "FilterPolicy" and value:
            compile_policy(value, scope)
        elif name == "RedrivePolicy" and value:
            document = validation.json_object(value)
            if document is None:
                raise invalid_parameter("RedrivePolicy: failed to parse JSON.")
            target = document.get("deadLetterTargetArn")
            try:
                validation.parse_queue_arn(target if isinstance(target, str) else "")
            except BrokerError:
                raise invalid_parameter("RedrivePolicy: deadLetterTargetArn is an invalid arn") from None
        elif name == "ReplayPolicy" and value:
            policy = json_object(name, value)
            if policy.get("PointType") != "Timestamp" or "StartingPoint" not in policy:
                raise invalid_parameter("ReplayPolicy: PointType must be Timestamp, with a StartingPoint")
            for point in ("StartingPoint", "EndingPoint"):
                if point in policy:
                    replay_time(policy[point])
        elif name == "DeliveryPolicy" and value:
            delivery_policy.validate_subscription_policy(value)
        checked[name] = value
    return checked


def validate_publish(
    message: str, subject: str | None, message_structure: str | None, attributes: Mapping[str, AnyAttribute]
) -> dict[str, str]:
    """Check a publish; returns its payloads by protocol (with `default`)."""
    if not message:
        raise invalid_parameter("Empty message")
    # AWS: ASCII text beginning with a letter, number or punctuation mark, no line breaks or
    # control characters, less than 100 characters; refused as "Invalid parameter: Subject"
    if subject is not None and (
        not subject or len(subject) >= 100 or not subject.isascii() or not subject.isprintable() or subject[0] == " "
    ):
        raise invalid_parameter("Subject")
    if len(message.encode()) + validate_publish_attributes(attributes) > SNS_MAX_MESSAGE_BYTES:
        raise invalid_parameter("Message too long")
    if message_structure is None:
        return {"default": message}
    if message_structure != "json":
        raise invalid_parameter("MessageStructure: the only valid value is json")
    try:
        payloads = json.loads(message)
    except ValueError:
        raise invalid_parameter("Message Structure - JSON message body failed to parse") from None
    if not isinstance(payloads, dict) or not isinstance(payloads.get("default"), str):
        raise invalid_parameter("Message Structure - No default entry in JSON message body")
    return {protocol: text for protocol, text in payloads.items() if isinstance(text, str)}


def validate_publish_attributes(attributes: Mapping[str, AnyAttribute]) -> int:
    """A publish's message attributes, refused as AWS refuses them: ParameterValueInvalid, in
    SNS's words for the cases SNS words itself (else the shared check's). Returns the bytes they
    count towards the publish's size (names, types and values)."""
    if not attributes:
        return 0
    for name, value in attributes.items():
        data_type = value.data_type
        if not validation.DATA_TYPE.fullmatch(data_type):
            raise parameter_value_invalid(
                f"The message attribute '{name}' has an invalid message attribute type, the set of supported type "
                "prefixes is Binary, Number, and String."
            )
        field = "Binary" if data_type.startswith("Binary") else "String"
        given = value.binary_value if field == "Binary" else value.string_value
        other = value.string_value if field == "Binary" else value.binary_value
        if given is None and other is not None:
            raise parameter_value_invalid(f"The message attribute '{name}' with type '{data_type}' must use field '{field}'.")
        if not given:
            raise parameter_value_invalid(
                f"The message attribute '{name}' must contain non-empty message attribute value for message attribute type '{data_type}'."
            )
        if data_type == "String.Array":
            try:
                items = json.loads(value.string_value or "")
            except ValueError:
                items = None
            if not isinstance(items, list):
                raise parameter_value_invalid(f"The message attribute '{name}' of type 'String.Array' must be a JSON array.")
    try:
        return validation.validate_message_attributes(attributes, RESERVED_ATTRIBUTE_PREFIXES)
    except BrokerError as error:
        raise parameter_value_invalid(error.message) from None


def replay_time(value: object) -> int:
    """A ReplayPolicy point (ISO 8601, or epoch milliseconds) in wall-clock milliseconds."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    try:
        moment = datetime.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise invalid_parameter(f"ReplayPolicy: {str(value)[:40]!r} is not a timestamp") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return int(moment.timestamp() * 1000)


def check_endpoint(protocol: str, endpoint: str, *, fifo: bool, push_protocols: frozenset[str]) -> None:
    """A subscription's endpoint must suit its protocol, and the protocol the topic and this broker."""
    if protocol in UNREACHABLE_PROTOCOLS:
        raise invalid_parameter(
            f"Protocol {protocol}: this broker cannot reach that service; use sqs, http, https, email, sms, application or lambda"
        )
    if protocol in PUSH_PROTOCOLS:
        if fifo:
            raise invalid_parameter(f"Invalid protocol type: {protocol} is not supported for FIFO topics; use sqs")
        if protocol in MOBILE_PROTOCOLS:
            mobile.check_endpoint(protocol, endpoint, push_protocols)
            return
        if protocol == FUNCTION_PROTOCOL:
            if not is_function_arn(endpoint):
                raise invalid_parameter("Lambda endpoint ARN")  # AWS's words
            return
        if protocol not in push_protocols:
            raise invalid_parameter(
                f"Protocol {protocol}: this broker has no SMTP relay configured (dovecote serve --smtp-host)"
                if protocol.startswith("email")
                else f"Protocol {protocol}: this broker delivers no HTTP pushes"
            )
        if protocol.startswith("email"):
            if not MAIL_ADDRESS.fullmatch(endpoint):
                raise invalid_parameter("Invalid SMTP endpoint: " + endpoint[:80])
            return
        url = urlsplit(endpoint)
        if url.scheme != protocol or not url.hostname:
            raise invalid_parameter(f"Invalid {protocol} endpoint: must be an {protocol}:// URL, got {endpoint[:80]!r}")
        return
    if protocol != "sqs":
        raise invalid_parameter(f"Invalid protocol type: {protocol[:40]}")
    try:
        _, _, queue = validation.parse_queue_arn(endpoint)
    except BrokerError:
        raise invalid_parameter("SQS endpoint ARN") from None
    # A FIFO topic delivers to standard queues too (AWS allows it since 2023), without ordering.
    if queue.endswith(".fifo") and not fifo:
        # AWS's answer repeats its prefix (recorded in LocalStack's snapshot of it)
        raise invalid_parameter("Invalid parameter: Endpoint Reason: FIFO SQS Queues can not be subscribed to standard SNS topics")


def validate_publish_batch(entries: Sequence[PublishEntry], *, fifo: bool, content_based: bool) -> None:
    """The checks of a PublishBatch as a whole; each entry is then checked as a publish. As on AWS,
    some faults of one entry fail the whole request rather than that entry: invalid message
    attributes, a FIFO entry without MessageGroupId (or without a deduplication id where the topic
    does not make one), and the total size with the attributes."""
    if not entries:
        raise BrokerError("EmptyBatchRequestException", "The batch request doesn't contain any entries")
    if len(entries) > SNS_MAX_BATCH_ENTRIES:
        raise BrokerError("TooManyEntriesInBatchRequestException", "The batch request contains more entries than permissible.")
    ids = [entry.id for entry in entries]
    if len(set(ids)) != len(ids):
        raise BrokerError("BatchEntryIdsNotDistinctException", "Two or more batch entries in the request have the same Id.")
    for entry_id in ids:
        if len(entry_id) > 80:
            raise BrokerError("InvalidBatchEntryIdException", f"The Id of a batch entry in the batch request is too long: {entry_id[:100]}")
        if not entry_id or not all(c.isascii() and (c.isalnum() or c in "-_") for c in entry_id):
            raise BrokerError(
                "InvalidBatchEntryIdException", f"The Id of a batch entry in the batch request contains an impermissible character: {entry_id}"
            )
    size = 0
    for entry in entries:
        size += len(entry.message.encode()) + validate_publish_attributes(entry.message_attributes)
        if fifo:
            _check_fifo_ids(content_based, entry.message_group_id, entry.message_deduplication_id)
    if size > SNS_MAX_BATCH_BYTES:
        raise BrokerError("BatchRequestTooLongException", "The length of all the messages put together is more than the limit.")


def fifo_publish_parameters(fifo: bool, content_based: bool, message: str, group_id: str | None, dedup_id: str | None) -> str:
    """Check a publish's FIFO parameters; returns its deduplication id ("" on a standard topic):
    the one given, or the message's SHA-256 with ContentBasedDeduplication."""
    if not fifo:
        # a standard topic takes a MessageGroupId (for SQS fair queues), not a deduplication id
        if dedup_id is not None:
            raise invalid_parameter(
                "MessageDeduplicationId Reason: The request includes MessageDeduplicationId parameter that is not valid for this topic type"
            )
        if group_id is not None:
            validation.validate_group_id(group_id)
        return ""
    _check_fifo_ids(content_based, group_id, dedup_id)
    return dedup_id if dedup_id is not None else hashlib.sha256(message.encode()).hexdigest()


def _check_fifo_ids(content_based: bool, group_id: str | None, dedup_id: str | None) -> None:
    """A FIFO topic's publish has a MessageGroupId, and a MessageDeduplicationId unless the topic
    makes one from the content."""
    if group_id is None:
        raise invalid_parameter("The MessageGroupId parameter is required for FIFO topics")
    validation.validate_group_id(group_id)
    if dedup_id is not None:
        validation.validate_group_id(dedup_id, "MessageDeduplicationId")
    elif not content_based:
        raise invalid_parameter(
            "The topic should either have ContentBasedDeduplication enabled or MessageDeduplicationId provided explicitly"
        )


def json_object(name: str, value: str) -> dict:
    document = validation.json_object(value)
    if document is None:
        raise invalid_parameter(f"{name}: must be a JSON object")
    return document
