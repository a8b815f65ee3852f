"""SQS's AWS wire shapes, translated to the broker's operations and back. Pure: no I/O.

Requests are decoded into msgspec structs named and shaped as botocore's SQS service model has them
(so type errors and missing parameters come out of the decoder with the parameter's name), then
turned into the broker's ops; results are turned into the model's output shapes as plain dicts,
which the JSON protocol encodes as they are. No queue semantics live here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import msgspec

from dovecote.actors.errors import BrokerError, missing_parameter, no_such_queue, unknown_action
from dovecote.actors.ids import decode_task_handle
from dovecote.actors.validation import parse_queue_arn, with_trace_header
from dovecote.actors.ops import (
    MessageAttributeValue,
    AddPermission,
    Attributes,
    BatchResult,
    ChangeMessageVisibility,
    ChangeMessageVisibilityBatch,
    CancelMessageMoveTask,
    CreateQueue,
    DeleteEntry,
    DeleteMessage,
    DeleteMessageBatch,
    DeleteQueue,
    Done,
    GetQueueAttributes,
    GetQueueUrl,
    ListDeadLetterSourceQueues,
    ListMessageMoveTasks,
    ListQueues,
    ListQueueTags,
    MovedCount,
    MoveTasks,
    Op,
    PurgeQueue,
    QueueName,
    QueueNames,
    ReceiveMessage,
    Received,
    RemovePermission,
    Result,
    SendBatchResult,
    SendEntry,
    SendMessage,
    SendMessageBatch,
    Sent,
    SetQueueAttributes,
    StartMessageMoveTask,
    TagQueue,
    TaskHandle,
    Tags,
    UntagQueue,
    VisibilityEntry,
)


class _Shape(msgspec.Struct, rename="pascal", forbid_unknown_fields=False):
    pass


class AttributeValue(_Shape):
    data_type: str
    string_value: str | None = None
    binary_value: bytes | None = None
    string_list_values: list[str] = []
    binary_list_values: list[bytes] = []


class _QueueUrlShape(_Shape):
    queue_url: str


class CreateQueueRequest(_Shape):
    queue_name: str
    attributes: dict[str, str] = {}
    tags: dict[str, str] = msgspec.field(default_factory=dict, name="tags")


class GetQueueUrlRequest(_Shape):
    queue_name: str
    queue_owner: str | None = msgspec.field(default=None, name="QueueOwnerAWSAccountId")


class ListQueuesRequest(_Shape):
    queue_name_prefix: str = ""
    next_token: str | None = None
    max_results: int | None = None


class QueueUrlRequest(_QueueUrlShape):
    pass


class GetQueueAttributesRequest(_QueueUrlShape):
    attribute_names: list[str] = []


class SetQueueAttributesRequest(_QueueUrlShape):
    attributes: dict[str, str]


class SendMessageRequest(_QueueUrlShape):
    message_body: str
    delay_seconds: int | None = None
    message_attributes: dict[str, AttributeValue] = {}
    message_system_attributes: dict[str, AttributeValue] = {}
    message_group_id: str | None = None
    message_deduplication_id: str | None = None


class SendMessageBatchEntry(_Shape):
    id: str
    message_body: str
    delay_seconds: int | None = None
    message_attributes: dict[str, AttributeValue] = {}
    message_system_attributes: dict[str, AttributeValue] = {}
    message_group_id: str | None = None
    message_deduplication_id: str | None = None


class SendMessageBatchRequest(_QueueUrlShape):
    entries: list[SendMessageBatchEntry]


class ReceiveMessageRequest(_QueueUrlShape):
    attribute_names: list[str] = []
    message_system_attribute_names: list[str] = []
    message_attribute_names: list[str] = []
    max_number_of_messages: int = 1
    visibility_timeout: int | None = None
    wait_time_seconds: int | None = None
    receive_request_attempt_id: str | None = None


class DeleteMessageRequest(_QueueUrlShape):
    receipt_handle: str


class TagQueueRequest(_QueueUrlShape):
    tags: dict[str, str]


class UntagQueueRequest(_QueueUrlShape):
    tag_keys: list[str]


class AddPermissionRequest(_QueueUrlShape):
    label: str
    account_ids: list[str] = msgspec.field(name="AWSAccountIds")
    actions: list[str]


class RemovePermissionRequest(_QueueUrlShape):
    label: str


class DeleteMessageBatchEntry(_Shape):
    id: str
    receipt_handle: str


class DeleteMessageBatchRequest(_QueueUrlShape):
    entries: list[DeleteMessageBatchEntry]


class ChangeMessageVisibilityRequest(_QueueUrlShape):
    receipt_handle: str
    visibility_timeout: int


class ChangeMessageVisibilityBatchEntry(_Shape):
    id: str
    receipt_handle: str
    visibility_timeout: int


class ChangeMessageVisibilityBatchRequest(_QueueUrlShape):
    entries: list[ChangeMessageVisibilityBatchEntry]


class ListDeadLetterSourceQueuesRequest(_QueueUrlShape):
    next_token: str | None = None
    max_results: int | None = None


class StartMessageMoveTaskRequest(_Shape):
    source_arn: str
    destination_arn: str = ""
    max_number_of_messages_per_second: int | None = None


class ListMessageMoveTasksRequest(_Shape):
    source_arn: str
    max_results: int = 1


class CancelMessageMoveTaskRequest(_Shape):
    task_handle: str


def _queue_of_arn(arn: str) -> str:
    """The queue an ARN names; move tasks name queues by ARN."""
    try:
        return parse_queue_arn(arn)[2]
    except BrokerError:
        raise BrokerError("ResourceNotFoundException", f"The queue {arn[:200]} does not exist.") from None


class Context(msgspec.Struct, frozen=True):
    """What a translation needs to know about where it runs: the account, and the base of the
    queue URLs it returns (from the request's Host header, or a configured public address)."""

    account_id: str
    url_base: str
    trace_header: str | None = None  # the request's X-Amzn-Trace-Id: its sends' AWSTraceHeader

    def queue_url(self, name: str) -> str:
        return f"{self.url_base.rstrip('/')}/{self.account_id}/{name}"

    def queue_from_url(self, url: str) -> str:
        """The queue name in a queue URL, a bare path /ACCOUNT/NAME, or a bare queue name (AWS takes
        a queue's name for its URL too). This broker hosts one account, so the account and host in
        the URL are not checked: a URL copied from AWS works."""
        try:
            split = urlsplit(url)
        except ValueError:  # urlsplit refuses some hosts (`http://[x/`)
            split = None
        if split is not None and not split.scheme and not split.netloc and url and "/" not in url:
            return url
        parts = [part for part in split.path.split("/") if part] if split is not None else []
        if len(parts) != 2:
            raise BrokerError("InvalidAddress", f"The address {url} is not valid for this endpoint.")
        return parts[1]


def _attributes(values: dict[str, AttributeValue]) -> dict[str, MessageAttributeValue]:
    converted = {}
    for name, value in values.items():
        if value.string_list_values or value.binary_list_values:
            raise BrokerError("InvalidParameterValue", f"Message attribute '{name}': list values are not supported.")
        converted[name] = MessageAttributeValue(value.data_type, value.string_value, value.binary_value)
    return converted


def _receive_names(request: ReceiveMessageRequest) -> list[str]:
    return list(dict.fromkeys([*request.attribute_names, *request.message_system_attribute_names]))


# action -> (request shape, request -> op)
_REQUESTS: dict[str, tuple[type[_Shape], Callable[[Any, Context], Op]]] = {
    "CreateQueue": (CreateQueueRequest, lambda r, c: CreateQueue(r.queue_name, r.attributes, r.tags)),
    "DeleteQueue": (QueueUrlRequest, lambda r, c: DeleteQueue(c.queue_from_url(r.queue_url))),
    "GetQueueUrl": (GetQueueUrlRequest, lambda r, c: _get_queue_url(r, c)),
    "ListQueues": (ListQueuesRequest, lambda r, c: ListQueues(r.queue_name_prefix, r.max_results, r.next_token)),
    "PurgeQueue": (QueueUrlRequest, lambda r, c: PurgeQueue(c.queue_from_url(r.queue_url))),
    "GetQueueAttributes": (
        GetQueueAttributesRequest,
        lambda r, c: GetQueueAttributes(c.queue_from_url(r.queue_url), r.attribute_names),
    ),
    "SetQueueAttributes": (
        SetQueueAttributesRequest,
        lambda r, c: SetQueueAttributes(c.queue_from_url(r.queue_url), r.attributes),
    ),
    "SendMessage": (
        SendMessageRequest,
        lambda r, c: SendMessage(
            c.queue_from_url(r.queue_url),
            r.message_body,
            r.delay_seconds,
            _attributes(r.message_attributes),
            message_system_attributes=with_trace_header(_attributes(r.message_system_attributes), c.trace_header),
            message_group_id=r.message_group_id,
            message_deduplication_id=r.message_deduplication_id,
        ),
    ),
    "SendMessageBatch": (
        SendMessageBatchRequest,
        lambda r, c: SendMessageBatch(
            c.queue_from_url(r.queue_url),
            [
                SendEntry(
                    e.id,
                    e.message_body,
                    e.delay_seconds,
                    _attributes(e.message_attributes),
                    with_trace_header(_attributes(e.message_system_attributes), c.trace_header),
                    e.message_group_id,
                    e.message_deduplication_id,
                )
                for e in r.entries
            ],
        ),
    ),
    "ReceiveMessage": (
        ReceiveMessageRequest,
        lambda r, c: ReceiveMessage(
            c.queue_from_url(r.queue_url),
            r.max_number_of_messages,
            r.visibility_timeout,
            r.wait_time_seconds,
            _receive_names(r),
            r.message_attribute_names,
            r.receive_request_attempt_id,
        ),
    ),
    "DeleteMessage": (
        DeleteMessageRequest,
        lambda r, c: DeleteMessage(c.queue_from_url(r.queue_url), r.receipt_handle),
    ),
    "DeleteMessageBatch": (
        DeleteMessageBatchRequest,
        lambda r, c: DeleteMessageBatch(
            c.queue_from_url(r.queue_url), [DeleteEntry(e.id, e.receipt_handle) for e in r.entries]
        ),
    ),
    "ChangeMessageVisibility": (
        ChangeMessageVisibilityRequest,
        lambda r, c: ChangeMessageVisibility(c.queue_from_url(r.queue_url), r.receipt_handle, r.visibility_timeout),
    ),
    "ChangeMessageVisibilityBatch": (
        ChangeMessageVisibilityBatchRequest,
        lambda r, c: ChangeMessageVisibilityBatch(
            c.queue_from_url(r.queue_url),
            [VisibilityEntry(e.id, e.receipt_handle, e.visibility_timeout) for e in r.entries],
        ),
    ),
    "TagQueue": (TagQueueRequest, lambda r, c: _tag_queue(r, c)),
    "UntagQueue": (UntagQueueRequest, lambda r, c: UntagQueue(c.queue_from_url(r.queue_url), r.tag_keys)),
    "ListQueueTags": (QueueUrlRequest, lambda r, c: ListQueueTags(c.queue_from_url(r.queue_url))),
    "AddPermission": (
        AddPermissionRequest,
        lambda r, c: AddPermission(c.queue_from_url(r.queue_url), r.label, r.account_ids, r.actions),
    ),
    "RemovePermission": (
        RemovePermissionRequest,
        lambda r, c: RemovePermission(c.queue_from_url(r.queue_url), r.label),
    ),
    "ListDeadLetterSourceQueues": (
        ListDeadLetterSourceQueuesRequest,
        lambda r, c: ListDeadLetterSourceQueues(c.queue_from_url(r.queue_url), r.max_results, r.next_token),
    ),
    "StartMessageMoveTask": (
        StartMessageMoveTaskRequest,
        lambda r, c: StartMessageMoveTask(_queue_of_arn(r.source_arn), r.destination_arn, r.max_number_of_messages_per_second),
    ),
    "ListMessageMoveTasks": (
        ListMessageMoveTasksRequest,
        lambda r, c: ListMessageMoveTasks(_queue_of_arn(r.source_arn), r.max_results),
    ),
    "CancelMessageMoveTask": (
        CancelMessageMoveTaskRequest,
        lambda r, c: CancelMessageMoveTask(_queue_of_arn(decode_task_handle(r.task_handle)[0]), r.task_handle),
    ),
}

# Results whose output member names differ by action.
_QUEUE_LIST_MEMBER = {"ListDeadLetterSourceQueues": "queueUrls"}


def _tag_queue(request: TagQueueRequest, context: Context) -> Op:
    if not request.tags:  # an empty map is no tags at all, as the Query protocol can only say it
        raise missing_parameter("Tags")
    return TagQueue(context.queue_from_url(request.queue_url), request.tags)


def _get_queue_url(request: GetQueueUrlRequest, context: Context) -> Op:
    owner = request.queue_owner
    if owner is not None and owner != context.account_id:
        raise no_such_queue()
    return GetQueueUrl(request.queue_name)


def addresses_queue(action: str) -> bool:
    """Whether an action names one queue by its URL (an unknown one is refused later as unknown)."""
    return action not in _REQUESTS or issubclass(_REQUESTS[action][0], _QueueUrlShape)


def to_op(action: str, params: dict[str, Any], context: Context) -> Op:
    """The broker op for an action and its parameters (a JSON object, or Query parameters already
    nested into the same shape). Raises BrokerError in AWS's terms."""
    if action not in _REQUESTS:
        raise unknown_action(action)
    shape, build = _REQUESTS[action]
    request = decode_shape(
        params,
        shape,
        missing=missing_parameter,
        invalid=lambda text: BrokerError("InvalidParameterValue", f"Invalid parameter: {text}"),
    )
    return build(request, context)


def decode_shape(
    params: dict[str, Any],
    shape: type[msgspec.Struct],
    missing: Callable[[str], BrokerError],
    invalid: Callable[[str], BrokerError],
) -> Any:
    """Parameters as a request shape; a missing or mistyped parameter is reported by name, in the
    words of the protocol (missing/invalid make its errors)."""
    try:
        return msgspec.convert(params, shape, strict=False)
    except msgspec.ValidationError as error:
        text = str(error)
        if text.startswith("Object missing required field"):
            raise missing(text.split("`")[1] if "`" in text else "a parameter") from None
        raise invalid(text) from None


def to_output(result: Result, context: Context, action: str = "") -> dict[str, Any]:
    """A successful result as the model's output shape."""
    match result:
        case Done():
            return {}
        case QueueName(queue=name):
            return {"QueueUrl": context.queue_url(name)}
        case QueueNames(queues=names, next_token=token):
            output: dict[str, Any] = {}
            if names or action in _QUEUE_LIST_MEMBER:
                output[_QUEUE_LIST_MEMBER.get(action, "QueueUrls")] = [context.queue_url(name) for name in names]
            if token:
                output["NextToken"] = token
            return output
        case Attributes(attributes=attributes):
            return {"Attributes": attributes} if attributes else {}
        case Tags(tags=tags):
            return {"Tags": tags} if tags else {}
        case Sent():
            return _without_none(
                {
                    "MessageId": result.message_id,
                    "MD5OfMessageBody": result.md5_of_message_body,
                    "MD5OfMessageAttributes": result.md5_of_message_attributes,
                    "MD5OfMessageSystemAttributes": result.md5_of_message_system_attributes,
                    "SequenceNumber": result.sequence_number,
                }
            )
        case SendBatchResult(successful=successful, failed=failed):
            return _batch_output(
                [
                    _without_none(
                        {
                            "Id": e.id,
                            "MessageId": e.message_id,
                            "MD5OfMessageBody": e.md5_of_message_body,
                            "MD5OfMessageAttributes": e.md5_of_message_attributes,
                            "MD5OfMessageSystemAttributes": e.md5_of_message_system_attributes,
                            "SequenceNumber": e.sequence_number,
                        }
                    )
                    for e in successful
                ],
                failed,
            )
        case BatchResult(successful=successful, failed=failed):
            return _batch_output([{"Id": i} for i in successful], failed)
        case Received(messages=messages):
            if not messages:
                return {}
            return {"Messages": [_message(m) for m in messages]}
        case TaskHandle(task_handle=handle):
            return {"TaskHandle": handle}
        case MovedCount(moved=moved):
            return {"ApproximateNumberOfMessagesMoved": moved}
        case MoveTasks(tasks=tasks):
            return {
                "Results": [
                    _without_none(
                        {
                            "TaskHandle": t.task_handle if t.status == "RUNNING" else None,
                            "Status": t.status,
                            "SourceArn": t.source_arn,
                            "DestinationArn": t.destination_arn or None,
                            "MaxNumberOfMessagesPerSecond": t.max_number_of_messages_per_second,
                            "ApproximateNumberOfMessagesMoved": t.approximate_number_of_messages_moved,
                            "ApproximateNumberOfMessagesToMove": t.approximate_number_of_messages_to_move,
                            "FailureReason": t.failure_reason or None,
                            "StartedTimestamp": t.started_timestamp,
                        }
                    )
                    for t in tasks
                ]
            }
    raise TypeError(f"no output shape for {type(result).__name__}")


def _batch_output(successful: list[dict[str, Any]], failed: list) -> dict[str, Any]:
    """A batch answer without its empty lists: AWS's JSON protocol leaves them out, and SDKs read
    a `"Failed": []` as failures present (aws-sdk-java-v2's hasFailed(); the change AWS made is
    noted in localstack PR 9710 and elasticmq PR 953). The Query protocol renders nothing for them
    either way."""
    output: dict[str, Any] = {}
    if successful:
        output["Successful"] = successful
    if failed:
        output["Failed"] = [_failure(f) for f in failed]
    return output


def _failure(failure) -> dict[str, Any]:
    return {"Id": failure.id, "SenderFault": failure.sender_fault, "Code": failure.code, "Message": failure.message}


def _message(message) -> dict[str, Any]:
    output: dict[str, Any] = {
        "MessageId": message.message_id,
        "ReceiptHandle": message.receipt_handle,
        "MD5OfBody": message.md5_of_body,
        "Body": message.body,
    }
    if message.attributes:
        output["Attributes"] = message.attributes
    if message.message_attributes:
        output["MD5OfMessageAttributes"] = message.md5_of_message_attributes
        output["MessageAttributes"] = {
            name: _without_none(
                {"DataType": value.data_type, "StringValue": value.string_value, "BinaryValue": value.binary_value}
            )
            for name, value in message.message_attributes.items()
        }
    return output


def _without_none(values: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}
