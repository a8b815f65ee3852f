"""Event source mappings (SQS -> function): the rules, as AWS Lambda applies them. Pure: no I/O.

A mapping polls one queue for one function. Its configuration is validated here (Create and
Update, with Lambda's limits and words); its pollers, in actors/esm.py, receive through the queue
actor, so visibility, receive counts and the queue's redrive policy apply, and ask this module:
which received messages the filter criteria drop (deleted, as Lambda deletes them), what event
the function gets (AWS's SQS event, exactly), and, after the invocation, which messages to delete.

The rulings after an invocation (the Lambda developer guide, "Handling errors for an SQS event
source" and "Reporting batch item failures"):
- the function failed (an error, a timeout, a crash): nothing is deleted; the batch returns after
  the queue's visibility timeout and its receive count decides, under the redrive policy, whether
  it goes to the dead-letter queue;
- it succeeded, without ReportBatchItemFailures: the whole batch is deleted;
- with ReportBatchItemFailures, its answer names the failures. An empty or null answer, an empty or
  null `batchItemFailures`, is full success; an answer that is not JSON, or an item whose
  `itemIdentifier` is missing, empty, not a string or not a message of the batch, fails the whole
  batch. Otherwise every message not named is deleted;
- from a FIFO queue, a message kept also keeps every later message of its group in the batch, so
  the group's order holds (the queue hands a group to one consumer at a time, and a kept message
  keeps the group locked until it returns).
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import msgspec

from .errors import BrokerError
from .filter_policy import FilterPolicy, compile_event_pattern
from .function_core import MAX_SYNC_PAYLOAD_BYTES
from .json_depth import deeper_than
from .ops import MessageAttributeValue, ReceivedMessage

# Lambda's limits for an SQS event source (CreateEventSourceMapping's reference).
DEFAULT_BATCH_SIZE = 10
MAX_BATCH_SIZE = 10_000
MAX_FIFO_BATCH_SIZE = 10
MAX_BATCHING_WINDOW_S = 300
MIN_MAXIMUM_CONCURRENCY, MAX_MAXIMUM_CONCURRENCY = 2, 1000
DEFAULT_CONCURRENCY = 5  # Lambda starts polling a queue with five batches at once
MAX_FILTERS = 5
MAX_PATTERN_CHARS = 4096
RECEIVE_MAX = 10  # one ReceiveMessage takes at most ten
REPORT_BATCH_ITEM_FAILURES = "ReportBatchItemFailures"

# States (EventSourceMappingConfiguration.State). A change answers with its transition's state;
# the change is made at once, so a later Get reads the settled one.
CREATING, ENABLING, ENABLED, DISABLING, DISABLED, UPDATING, DELETING = (
    "Creating", "Enabling", "Enabled", "Disabling", "Disabled", "Updating", "Deleting",
)
USER_INITIATED = "USER_INITIATED"

# An SQS event's record attributes, in the order Lambda writes them.
_STANDARD_ATTRIBUTES = ("ApproximateReceiveCount", "AWSTraceHeader", "SentTimestamp", "SenderId", "ApproximateFirstReceiveTimestamp")
_FIFO_ATTRIBUTES = (
    "ApproximateReceiveCount", "AWSTraceHeader", "SentTimestamp", "SequenceNumber", "MessageGroupId", "SenderId",
    "MessageDeduplicationId", "ApproximateFirstReceiveTimestamp",
)


class PollerStatistics(NamedTuple):
    """A mapping's poller, as it reports itself (/actors)."""

    queue_arn: str
    function_arn: str
    state: str  # Enabled or Disabled
    invocations: int  # batches handed to the function
    messages: int  # messages in them
    function_errors: int  # invocations the function failed (their batches kept)
    kept: int  # messages kept after a failure (whole or reported), to come back
    filtered: int  # messages no filter matched, deleted unseen
    failures: int  # receives or invocations that could not be made (the queue or the function gone, ...)


def invalid_value(message: str) -> BrokerError:
    """Lambda's InvalidParameterValueException."""
    return BrokerError("InvalidParameterValueException", message)


class EventSourceMapping(msgspec.Struct, frozen=True, kw_only=True):
    """A mapping's configuration, as stored and as answered."""

    uuid: str
    function_arn: str
    queue_arn: str
    batch_size: int = DEFAULT_BATCH_SIZE
    batching_window_s: int = 0
    enabled: bool = True
    report_item_failures: bool = False
    maximum_concurrency: int = 0  # 0: not set (DEFAULT_CONCURRENCY batches at once)
    filter_patterns: tuple[str, ...] = ()
    last_modified_ms: int = 0

    @property
    def concurrency(self) -> int:
        return self.maximum_concurrency or DEFAULT_CONCURRENCY

    @property
    def fifo(self) -> bool:
        return self.queue_arn.endswith(".fifo")

    @property
    def region(self) -> str:
        return queue_arn_parts(self.queue_arn)[0]



def queue_arn_parts(arn: str) -> tuple[str, str]:
    """(region, queue name) of an SQS queue's ARN; raises InvalidParameterValueException."""
    parts = arn.split(":")
    if len(parts) != 6 or parts[0] != "arn" or parts[2] != "sqs" or not parts[3] or not parts[5]:
        raise invalid_value(f"Unrecognized event source, must be an SQS queue ARN: {arn}")
    return parts[3], parts[5]


def new_uuid() -> str:
    return str(uuid.uuid4())


# --- the API's parameters ---------------------------------------------------------------------------
_CREATE_KEYS = frozenset({
    "EventSourceArn", "FunctionName", "Enabled", "BatchSize", "MaximumBatchingWindowInSeconds", "FunctionResponseTypes",
    "ScalingConfig", "FilterCriteria",
})
_UPDATE_KEYS = frozenset({
    "FunctionName", "Enabled", "BatchSize", "MaximumBatchingWindowInSeconds", "FunctionResponseTypes", "ScalingConfig",
    "FilterCriteria",
})
# Parameters of other event sources (streams, Kafka, MQ): Lambda refuses them for a queue.
_NOT_FOR_SQS = frozenset({
    "StartingPosition", "StartingPositionTimestamp", "ParallelizationFactor", "DestinationConfig", "MaximumRecordAgeInSeconds",
    "BisectBatchOnFunctionError", "MaximumRetryAttempts", "TumblingWindowInSeconds", "Topics", "Queues",
    "SourceAccessConfigurations", "SelfManagedEventSource", "AmazonManagedKafkaEventSourceConfig",
    "SelfManagedKafkaEventSourceConfig", "DocumentDBEventSourceConfig",
})


def check_parameters(params: Mapping[str, Any], *, creating: bool) -> None:
    """Refuse what Lambda refuses for an SQS event source, before anything else is looked at."""
    for key in params:
        if key in _NOT_FOR_SQS:
            raise invalid_value(f"Unsupported {key} parameter for the SQS event source.")
        if key not in (_CREATE_KEYS if creating else _UPDATE_KEYS) and key not in ("UUID", "KMSKeyArn", "MetricsConfig", "Tags"):
            raise invalid_value(f"Unknown parameter {key}.")


def configure(base: EventSourceMapping, params: Mapping[str, Any], now_ms: int) -> EventSourceMapping:
    """The mapping `base` with what params set (Create's and Update's members), validated as Lambda
    validates them; raises InvalidParameterValueException. FunctionName is the caller's: resolved
    to an ARN before."""
    batch_size = _integer(params, "BatchSize", base.batch_size)
    window = _integer(params, "MaximumBatchingWindowInSeconds", base.batching_window_s)
    enabled = params.get("Enabled", base.enabled)
    if not isinstance(enabled, bool):
        raise invalid_value("Enabled must be true or false.")
    report = base.report_item_failures
    if "FunctionResponseTypes" in params:
        types = params["FunctionResponseTypes"]
        if not isinstance(types, list) or any(kind != REPORT_BATCH_ITEM_FAILURES for kind in types):
            raise invalid_value(f"FunctionResponseTypes: the only valid value is {REPORT_BATCH_ITEM_FAILURES}.")
        report = bool(types)
    concurrency = base.maximum_concurrency
    if "ScalingConfig" in params:
        scaling = params["ScalingConfig"]
        if not isinstance(scaling, dict):
            raise invalid_value("ScalingConfig must be an object.")
        value = scaling.get("MaximumConcurrency")
        if value is None:
            concurrency = 0
        elif isinstance(value, bool) or not isinstance(value, int) or not MIN_MAXIMUM_CONCURRENCY <= value <= MAX_MAXIMUM_CONCURRENCY:
            raise invalid_value(
                f"MaximumConcurrency must be between {MIN_MAXIMUM_CONCURRENCY} and {MAX_MAXIMUM_CONCURRENCY}."
            )
        else:
            concurrency = value
    patterns = base.filter_patterns
    if "FilterCriteria" in params:
        patterns = filter_patterns(params["FilterCriteria"])
    fifo = base.fifo
    if fifo and window:
        raise invalid_value("Batching window is not supported for FIFO queues.")
    largest = MAX_FIFO_BATCH_SIZE if fifo else MAX_BATCH_SIZE
    if not 1 <= batch_size <= largest:
        raise invalid_value(f"BatchSize must be between 1 and {largest} for this event source.")
    if not 0 <= window <= MAX_BATCHING_WINDOW_S:
        raise invalid_value(f"MaximumBatchingWindowInSeconds must be between 0 and {MAX_BATCHING_WINDOW_S}.")
    if batch_size > RECEIVE_MAX and not window:
        raise invalid_value(
            "Maximum batch window in seconds must be greater than 0 if maximum batch size is greater than 10"
        )
    return msgspec.structs.replace(
        base, batch_size=batch_size, batching_window_s=window, enabled=enabled, report_item_failures=report,
        maximum_concurrency=concurrency, filter_patterns=patterns, last_modified_ms=now_ms,
    )


def _integer(params: Mapping[str, Any], name: str, default: int) -> int:
    value = params.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid_value(f"{name} must be an integer.")
    return value


def filter_patterns(criteria: Any) -> tuple[str, ...]:
    """FilterCriteria's patterns, each checked; raises InvalidParameterValueException."""
    if not isinstance(criteria, dict):
        raise invalid_value("FilterCriteria must be an object.")
    filters = criteria.get("Filters") or []
    if not isinstance(filters, list) or len(filters) > MAX_FILTERS:
        raise invalid_value(f"FilterCriteria holds at most {MAX_FILTERS} filters.")
    patterns = []
    for item in filters:
        pattern = item.get("Pattern") if isinstance(item, dict) else None
        if not isinstance(pattern, str) or not pattern or len(pattern) > MAX_PATTERN_CHARS:
            raise invalid_value(f"Each filter has a Pattern, a JSON object of at most {MAX_PATTERN_CHARS} characters.")
        compile_filter(pattern)
        patterns.append(pattern)
    return tuple(patterns)


def compile_filter(pattern: str) -> FilterPolicy:
    try:
        return compile_event_pattern(pattern)
    except BrokerError:
        raise invalid_value(f"Invalid filter pattern definition: {pattern[:200]}") from None


def output(mapping: EventSourceMapping, state: str | None = None) -> dict[str, Any]:
    """EventSourceMappingConfiguration as the REST-JSON API answers it."""
    answer: dict[str, Any] = {
        "UUID": mapping.uuid,
        "BatchSize": mapping.batch_size,
        "MaximumBatchingWindowInSeconds": mapping.batching_window_s,
        "EventSourceArn": mapping.queue_arn,
        "FunctionArn": mapping.function_arn,
        "LastModified": mapping.last_modified_ms / 1000,
        "State": state or (ENABLED if mapping.enabled else DISABLED),
        "StateTransitionReason": USER_INITIATED,
        "FunctionResponseTypes": [REPORT_BATCH_ITEM_FAILURES] if mapping.report_item_failures else [],
        "EventSourceMappingArn": mapping_arn(mapping),
    }
    if mapping.filter_patterns:
        answer["FilterCriteria"] = {"Filters": [{"Pattern": pattern} for pattern in mapping.filter_patterns]}
    if mapping.maximum_concurrency:
        answer["ScalingConfig"] = {"MaximumConcurrency": mapping.maximum_concurrency}
    return answer


def mapping_arn(mapping: EventSourceMapping) -> str:
    """arn:aws:lambda:REGION:ACCOUNT:event-source-mapping:UUID, in its function's region and account."""
    region_and_account = ":".join(mapping.function_arn.split(":")[3:5])
    return f"arn:aws:lambda:{region_and_account}:event-source-mapping:{mapping.uuid}"


def duplicate(existing: EventSourceMapping) -> BrokerError:
    return BrokerError(
        "ResourceConflictException",
        f'An event source mapping with SQS arn (" {existing.queue_arn} ") and function (" {existing.function_arn} ") '
        f"already exists. Please update or delete the existing mapping with UUID {existing.uuid}",
    )


def not_found(mapping_uuid: str) -> BrokerError:
    return BrokerError("ResourceNotFoundException", f"The resource you requested does not exist. (Service: Lambda, UUID: {mapping_uuid})")


# --- the event ----------------------------------------------------------------------------------------
def sqs_record(message: ReceivedMessage, queue_arn: str, region: str, fifo: bool) -> dict[str, Any]:
    """One entry of an SQS event's Records, as Lambda builds it."""
    names = _FIFO_ATTRIBUTES if fifo else _STANDARD_ATTRIBUTES
    record: dict[str, Any] = {
        "messageId": message.message_id,
        "receiptHandle": message.receipt_handle,
        "body": message.body,
        "attributes": {name: message.attributes[name] for name in names if name in message.attributes},
        "messageAttributes": {name: lambda_attribute(value) for name, value in message.message_attributes.items()},
        "md5OfBody": message.md5_of_body,
    }
    if message.md5_of_message_attributes:
        record["md5OfMessageAttributes"] = message.md5_of_message_attributes
    record.update(eventSource="aws:sqs", eventSourceARN=queue_arn, awsRegion=region)
    return record


def lambda_attribute(value: MessageAttributeValue) -> dict[str, Any]:
    """A message attribute in the SQS event's shape (camel case, list members always present)."""
    shown: dict[str, Any] = {}
    if value.string_value is not None:
        shown["stringValue"] = value.string_value
    if value.binary_value is not None:
        shown["binaryValue"] = base64.b64encode(value.binary_value).decode()
    shown.update(stringListValues=[], binaryListValues=[], dataType=value.data_type)
    return shown


def event_payload(records: Sequence[dict[str, Any]]) -> bytes:
    return json.dumps({"Records": list(records)}, separators=(",", ":")).encode()


def records_that_fit(records: Sequence[dict[str, Any]], limit: int = MAX_SYNC_PAYLOAD_BYTES) -> int:
    """How many of the first records one event carries within Lambda's payload limit (at least
    one): as Lambda does, a batch is cut short rather than refused."""
    size = len(event_payload([]))
    for count, record in enumerate(records):
        size += len(json.dumps(record, separators=(",", ":"))) + (count > 0)  # and its comma (ASCII: characters are bytes)
        if size > limit and count > 0:
            return count
    return len(records)


# --- filtering ----------------------------------------------------------------------------------------
def filter_document(record: Mapping[str, Any]) -> dict[str, Any]:
    """The record as filter patterns see it: a body that is JSON is matched as the JSON it holds
    (a pattern on `body` with nested keys needs one; a plain-string body matches only plain
    values), as Lambda does."""
    document = dict(record)
    body = record["body"]
    if not deeper_than(body):
        try:
            document["body"] = json.loads(body)
        except ValueError:
            pass
    return document


def kept_by_filters(filters: Sequence[FilterPolicy], record: Mapping[str, Any]) -> bool:
    """Whether a record goes to the function: no filters, or any filter matches."""
    if not filters:
        return True
    document = filter_document(record)
    return any(policy.matches_document(document) for policy in filters)


# --- after the invocation -----------------------------------------------------------------------------
def failed_item_ids(answer: bytes, batch_ids: Sequence[str]) -> set[str] | None:
    """The message ids a ReportBatchItemFailures answer names as failed (an empty set: full
    success), or None when the answer fails the whole batch (see the module's rules)."""
    text = answer.strip()
    if not text:
        return set()
    try:
        document = json.loads(text)
    except ValueError:
        return None
    if document is None or document == {} or document == []:
        return set()
    if not isinstance(document, dict):
        return None
    failures = document.get("batchItemFailures")
    if failures is None:
        return set()
    if not isinstance(failures, list):
        return None
    known = set(batch_ids)
    failed = set()
    for item in failures:
        identifier = item.get("itemIdentifier") if isinstance(item, dict) else None
        if not isinstance(identifier, str) or identifier not in known:
            return None
        failed.add(identifier)
    return failed


def kept_ids(messages: Sequence[ReceivedMessage], failed: set[str], fifo: bool) -> set[str]:
    """The messages to leave in the queue: the failed ones and, from a FIFO queue, every later
    message of a failed one's group."""
    if not fifo:
        return set(failed)
    kept: set[str] = set()
    stopped_groups: set[str] = set()
    for message in messages:
        group = message.attributes.get("MessageGroupId", "")
        if message.message_id in failed or group in stopped_groups:
            kept.add(message.message_id)
            stopped_groups.add(group)
    return kept


def to_delete(
    messages: Sequence[ReceivedMessage], *, function_failed: bool, answer: bytes, report_item_failures: bool, fifo: bool
) -> list[ReceivedMessage]:
    """What an invocation's outcome deletes from the queue."""
    if function_failed:
        return []
    if not report_item_failures:
        return list(messages)
    failed = failed_item_ids(answer, [message.message_id for message in messages])
    if failed is None:
        return []
    kept = kept_ids(messages, failed, fifo)
    return [message for message in messages if message.message_id not in kept]
