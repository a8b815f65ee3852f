"""The broker's operation model: the requests the actors serve and the results they return.

The native protocol carries these structs as they are; the AWS gateway translates AWS shapes to and
from them. Queues are addressed by name. Formats evolve only by appending defaulted fields.
"""

from __future__ import annotations

import msgspec


class MessageAttributeValue(msgspec.Struct, array_like=True, gc=False, frozen=True):
    """A message attribute as the protocol carries it (the store keeps its own type, so either can
    change without the other). data_type is String, Number or Binary, optionally followed by a
    custom suffix (`Number.float`)."""

    data_type: str
    string_value: str | None = None
    binary_value: bytes | None = None


class Op(msgspec.Struct, array_like=True, omit_defaults=True, frozen=True):
    """An operation. Each kind names its tag on the wire explicitly (never taken from the class
    name), so renaming a class changes nothing the protocol carries."""


class QueueOp(Op):
    queue: str


# --- requests ---------------------------------------------------------------------------------
class CreateQueue(QueueOp, tag="CreateQueue"):
    attributes: dict[str, str] = {}
    tags: dict[str, str] = {}


class DeleteQueue(QueueOp, tag="DeleteQueue"):
    pass


class GetQueueUrl(QueueOp, tag="GetQueueUrl"):
    pass


class ListQueues(Op, tag="ListQueues"):
    prefix: str = ""
    max_results: int | None = None
    next_token: str | None = None


class PurgeQueue(QueueOp, tag="PurgeQueue"):
    pass


class GetQueueAttributes(QueueOp, tag="GetQueueAttributes"):
    attribute_names: list[str] = []


class SetQueueAttributes(QueueOp, tag="SetQueueAttributes"):
    attributes: dict[str, str] = {}


class SendEntry(msgspec.Struct, array_like=True, omit_defaults=True, frozen=True):
    id: str
    body: str
    delay_seconds: int | None = None
    message_attributes: dict[str, MessageAttributeValue] = {}
    message_system_attributes: dict[str, MessageAttributeValue] = {}
    message_group_id: str | None = None
    message_deduplication_id: str | None = None


class SendMessage(QueueOp, tag="SendMessage"):
    body: str
    delay_seconds: int | None = None
    message_attributes: dict[str, MessageAttributeValue] = {}
    sender_id: str = ""
    message_system_attributes: dict[str, MessageAttributeValue] = {}
    message_group_id: str | None = None
    message_deduplication_id: str | None = None


class SendMessageBatch(QueueOp, tag="SendMessageBatch"):
    entries: list[SendEntry]
    sender_id: str = ""


class ReceiveMessage(QueueOp, tag="ReceiveMessage"):
    max_number_of_messages: int = 1
    visibility_timeout: int | None = None
    wait_time_seconds: int | None = None
    attribute_names: list[str] = []
    message_attribute_names: list[str] = []
    receive_request_attempt_id: str | None = None


class DeleteMessage(QueueOp, tag="DeleteMessage"):
    receipt_handle: str


class DeleteEntry(msgspec.Struct, array_like=True, frozen=True):
    id: str
    receipt_handle: str


class DeleteMessageBatch(QueueOp, tag="DeleteMessageBatch"):
    entries: list[DeleteEntry]


class ChangeMessageVisibility(QueueOp, tag="ChangeMessageVisibility"):
    receipt_handle: str
    visibility_timeout: int


class VisibilityEntry(msgspec.Struct, array_like=True, frozen=True):
    id: str
    receipt_handle: str
    visibility_timeout: int


class ChangeMessageVisibilityBatch(QueueOp, tag="ChangeMessageVisibilityBatch"):
    entries: list[VisibilityEntry]


class TagQueue(QueueOp, tag="TagQueue"):
    tags: dict[str, str]


class UntagQueue(QueueOp, tag="UntagQueue"):
    tag_keys: list[str]


class ListQueueTags(QueueOp, tag="ListQueueTags"):
    pass


class AddPermission(QueueOp, tag="AddPermission"):
    label: str
    account_ids: list[str]
    actions: list[str]


class RemovePermission(QueueOp, tag="RemovePermission"):
    label: str


class PeekMessages(QueueOp, tag="PeekMessages"):
    """Browse without consuming: receive counts and visibility stay as they are."""

    max_messages: int = 10
    after_seq: int = 0  # paging: messages with a higher seq
    state: str = ""  # "", "visible", "in_flight" or "delayed"


class ListDeadLetterSourceQueues(QueueOp, tag="ListDeadLetterSourceQueues"):
    """The queues whose RedrivePolicy names this one."""

    max_results: int | None = None
    next_token: str | None = None


class StartMessageMoveTask(QueueOp, tag="StartMessageMoveTask"):
    """Move the messages of a dead-letter queue (`queue`) back to their sources, or to one
    destination queue."""

    destination_arn: str = ""
    max_number_of_messages_per_second: int | None = None


class ListMessageMoveTasks(QueueOp, tag="ListMessageMoveTasks"):
    max_results: int = 1


class CancelMessageMoveTask(QueueOp, tag="CancelMessageMoveTask"):
    task_handle: str


# --- SNS ---------------------------------------------------------------------------------------
class TopicOp(Op):
    topic: str  # the topic's name (a subscription's topic for subscription operations)


class CreateTopic(TopicOp, tag="CreateTopic"):
    attributes: dict[str, str] = {}
    tags: dict[str, str] = {}


class DeleteTopic(TopicOp, tag="DeleteTopic"):
    pass


class ListTopics(Op, tag="ListTopics"):
    next_token: str | None = None


class GetTopicAttributes(TopicOp, tag="GetTopicAttributes"):
    pass


class SetTopicAttributes(TopicOp, tag="SetTopicAttributes"):
    name: str
    value: str = ""


class Subscribe(TopicOp, tag="Subscribe"):
    protocol: str
    endpoint: str = ""
    attributes: dict[str, str] = {}
    return_subscription_arn: bool = False  # False: a pending subscription answers "pending confirmation"


class ConfirmSubscription(TopicOp, tag="ConfirmSubscription"):
    token: str


class Unsubscribe(TopicOp, tag="Unsubscribe"):
    subscription_arn: str


class UnsubscribeByUrl(TopicOp, tag="UnsubscribeByUrl"):
    """An Unsubscribe that proved no key, only that it knows the subscription's ARN (its random id
    is the token of the UnsubscribeURL it came by). As on AWS, allowed for HTTP/S and email
    subscriptions and refused (AuthorizationError) for queue subscriptions. Made by the AWS gateway
    alone: not an operation of the native protocol (AnyOp leaves it out)."""

    subscription_arn: str


class ListSubscriptions(Op, tag="ListSubscriptions"):
    next_token: str | None = None


class ListSubscriptionsByTopic(TopicOp, tag="ListSubscriptionsByTopic"):
    next_token: str | None = None


class GetSubscriptionAttributes(TopicOp, tag="GetSubscriptionAttributes"):
    subscription_arn: str


class SetSubscriptionAttributes(TopicOp, tag="SetSubscriptionAttributes"):
    subscription_arn: str
    name: str
    value: str = ""


class PublishEntry(msgspec.Struct, array_like=True, omit_defaults=True, frozen=True):
    id: str
    message: str
    subject: str | None = None
    message_structure: str | None = None
    message_attributes: dict[str, MessageAttributeValue] = {}
    message_group_id: str | None = None
    message_deduplication_id: str | None = None


class Publish(TopicOp, tag="Publish"):
    message: str
    subject: str | None = None
    message_structure: str | None = None
    message_attributes: dict[str, MessageAttributeValue] = {}
    message_group_id: str | None = None
    message_deduplication_id: str | None = None


class PublishBatch(TopicOp, tag="PublishBatch"):
    entries: list[PublishEntry]


class TagTopic(TopicOp, tag="TagTopic"):
    tags: dict[str, str]


class UntagTopic(TopicOp, tag="UntagTopic"):
    tag_keys: list[str]


class ListTopicTags(TopicOp, tag="ListTopicTags"):
    pass


class AddTopicPermission(TopicOp, tag="AddTopicPermission"):
    label: str
    account_ids: list[str]
    actions: list[str]


class RemoveTopicPermission(TopicOp, tag="RemoveTopicPermission"):
    label: str


class ExplainDelivery(TopicOp, tag="ExplainDelivery"):
    """Which subscriptions a message would reach, and for each it would not, why."""

    message: str
    message_attributes: dict[str, MessageAttributeValue] = {}


class SmsAccountOp(Op):
    """An operation on the account's SMS settings rather than on a queue or topic."""


class CheckIfPhoneNumberIsOptedOut(SmsAccountOp, tag="CheckIfPhoneNumberIsOptedOut"):
    phone_number: str


class ListPhoneNumbersOptedOut(SmsAccountOp, tag="ListPhoneNumbersOptedOut"):
    next_token: str | None = None


class OptInPhoneNumber(SmsAccountOp, tag="OptInPhoneNumber"):
    phone_number: str


class GetSMSSandboxAccountStatus(SmsAccountOp, tag="GetSMSSandboxAccountStatus"):
    pass


class ListOriginationNumbers(SmsAccountOp, tag="ListOriginationNumbers"):
    next_token: str | None = None


class PlatformOp(Op):
    """An operation on SNS's platform applications and endpoints (mobile push), served by the
    platform actor."""


class CreatePlatformApplication(PlatformOp, tag="CreatePlatformApplication"):
    name: str
    platform: str
    attributes: dict[str, str]


class GetPlatformApplicationAttributes(PlatformOp, tag="GetPlatformApplicationAttributes"):
    application_arn: str


class SetPlatformApplicationAttributes(PlatformOp, tag="SetPlatformApplicationAttributes"):
    application_arn: str
    attributes: dict[str, str]


class ListPlatformApplications(PlatformOp, tag="ListPlatformApplications"):
    next_token: str | None = None


class DeletePlatformApplication(PlatformOp, tag="DeletePlatformApplication"):
    application_arn: str


class CreatePlatformEndpoint(PlatformOp, tag="CreatePlatformEndpoint"):
    application_arn: str
    token: str
    custom_user_data: str | None = None
    attributes: dict[str, str] = {}


class GetEndpointAttributes(PlatformOp, tag="GetEndpointAttributes"):
    endpoint_arn: str


class SetEndpointAttributes(PlatformOp, tag="SetEndpointAttributes"):
    endpoint_arn: str
    attributes: dict[str, str]


class DeleteEndpoint(PlatformOp, tag="DeleteEndpoint"):
    endpoint_arn: str


class ListEndpointsByPlatformApplication(PlatformOp, tag="ListEndpointsByPlatformApplication"):
    application_arn: str
    next_token: str | None = None


class PublishToEndpoint(PlatformOp, tag="PublishToEndpoint"):
    """Publish with a TargetArn that names a platform endpoint: delivered to that device alone."""

    endpoint_arn: str
    message: str
    subject: str | None = None
    message_structure: str | None = None
    message_attributes: dict[str, MessageAttributeValue] = {}


class PublishToPhoneNumber(PlatformOp, tag="PublishToPhoneNumber"):
    """Publish with a PhoneNumber: one SMS, through the operator's sink."""

    phone_number: str
    message: str
    subject: str | None = None
    message_structure: str | None = None
    message_attributes: dict[str, MessageAttributeValue] = {}


class CreateSMSSandboxPhoneNumber(PlatformOp, tag="CreateSMSSandboxPhoneNumber"):
    """Adds a number to the SMS sandbox, Pending, and texts it a one-time password."""

    phone_number: str
    language_code: str | None = None


class VerifySMSSandboxPhoneNumber(PlatformOp, tag="VerifySMSSandboxPhoneNumber"):
    phone_number: str
    one_time_password: str


class DeleteSMSSandboxPhoneNumber(PlatformOp, tag="DeleteSMSSandboxPhoneNumber"):
    phone_number: str


class ListSMSSandboxPhoneNumbers(PlatformOp, tag="ListSMSSandboxPhoneNumbers"):
    next_token: str | None = None
    max_results: int | None = None


class GetSMSAttributes(PlatformOp, tag="GetSMSAttributes"):
    names: list[str] = []  # none: every attribute set


class SetSMSAttributes(PlatformOp, tag="SetSMSAttributes"):
    attributes: dict[str, str]


REGISTRY_OPS = (
    CreateQueue,
    DeleteQueue,
    GetQueueUrl,
    ListQueues,
    ListDeadLetterSourceQueues,
    StartMessageMoveTask,
    CreateTopic,
    DeleteTopic,
    ListTopics,
    ListSubscriptions,
)

# The operations the native protocol carries (UnsubscribeByUrl is the AWS gateway's alone).
AnyOp = (
    CreateQueue
    | DeleteQueue
    | GetQueueUrl
    | ListQueues
    | PurgeQueue
    | GetQueueAttributes
    | SetQueueAttributes
    | SendMessage
    | SendMessageBatch
    | ReceiveMessage
    | DeleteMessage
    | DeleteMessageBatch
    | ChangeMessageVisibility
    | ChangeMessageVisibilityBatch
    | TagQueue
    | UntagQueue
    | ListQueueTags
    | AddPermission
    | RemovePermission
    | PeekMessages
    | ListDeadLetterSourceQueues
    | StartMessageMoveTask
    | ListMessageMoveTasks
    | CancelMessageMoveTask
    | CreateTopic
    | DeleteTopic
    | ListTopics
    | GetTopicAttributes
    | SetTopicAttributes
    | Subscribe
    | ConfirmSubscription
    | Unsubscribe
    | ListSubscriptions
    | ListSubscriptionsByTopic
    | GetSubscriptionAttributes
    | SetSubscriptionAttributes
    | Publish
    | PublishBatch
    | TagTopic
    | UntagTopic
    | ListTopicTags
    | AddTopicPermission
    | RemoveTopicPermission
    | ExplainDelivery
    | CheckIfPhoneNumberIsOptedOut
    | ListPhoneNumbersOptedOut
    | OptInPhoneNumber
    | GetSMSSandboxAccountStatus
    | ListOriginationNumbers
    | CreatePlatformApplication
    | GetPlatformApplicationAttributes
    | SetPlatformApplicationAttributes
    | ListPlatformApplications
    | DeletePlatformApplication
    | CreatePlatformEndpoint
    | GetEndpointAttributes
    | SetEndpointAttributes
    | DeleteEndpoint
    | ListEndpointsByPlatformApplication
    | PublishToEndpoint
    | GetSMSAttributes
    | SetSMSAttributes
    | PublishToPhoneNumber
    | CreateSMSSandboxPhoneNumber
    | VerifySMSSandboxPhoneNumber
    | DeleteSMSSandboxPhoneNumber
    | ListSMSSandboxPhoneNumbers
)


# --- results ----------------------------------------------------------------------------------
class Result(msgspec.Struct, array_like=True, omit_defaults=True, frozen=True):
    """An answer; each kind names its tag explicitly, as operations do."""


class Done(Result, tag="Done"):
    pass


class QueueName(Result, tag="QueueName"):
    queue: str


class QueueNames(Result, tag="QueueNames"):
    queues: list[str]
    next_token: str | None = None


class Attributes(Result, tag="Attributes"):
    attributes: dict[str, str]


class Tags(Result, tag="Tags"):
    tags: dict[str, str]


class Sent(Result, tag="Sent"):
    message_id: str
    md5_of_message_body: str
    md5_of_message_attributes: str | None = None
    md5_of_message_system_attributes: str | None = None
    sequence_number: str | None = None  # FIFO queues


class SentEntry(msgspec.Struct, array_like=True, omit_defaults=True, frozen=True):
    id: str
    message_id: str
    md5_of_message_body: str
    md5_of_message_attributes: str | None = None
    md5_of_message_system_attributes: str | None = None
    sequence_number: str | None = None


class BatchFailure(msgspec.Struct, array_like=True, frozen=True):
    id: str
    code: str
    message: str
    sender_fault: bool


class SendBatchResult(Result, tag="SendBatchResult"):
    successful: list[SentEntry]
    failed: list[BatchFailure]


class BatchResult(Result, tag="BatchResult"):
    successful: list[str]  # entry ids
    failed: list[BatchFailure]


class ReceivedMessage(msgspec.Struct, array_like=True, omit_defaults=True, frozen=True):
    message_id: str
    receipt_handle: str
    body: str
    md5_of_body: str
    md5_of_message_attributes: str | None = None
    attributes: dict[str, str] = {}
    message_attributes: dict[str, MessageAttributeValue] = {}


class Received(Result, tag="Received"):
    messages: list[ReceivedMessage]


class PeekedMessage(msgspec.Struct, array_like=True, omit_defaults=True, frozen=True):
    seq: int
    message_id: str
    state: str  # visible, in_flight or delayed
    receive_count: int
    sent_timestamp: int
    visible_at_ms: int  # when it becomes (or became) visible
    body: str
    message_attributes: dict[str, MessageAttributeValue] = {}


class Peeked(Result, tag="Peeked"):
    messages: list[PeekedMessage]
    next_after_seq: int | None = None


class MoveTask(msgspec.Struct, array_like=True, omit_defaults=True, frozen=True):
    task_handle: str
    status: str  # RUNNING, CANCELLING, CANCELLED, COMPLETED or FAILED
    source_arn: str
    destination_arn: str = ""
    max_number_of_messages_per_second: int | None = None
    approximate_number_of_messages_moved: int = 0
    approximate_number_of_messages_to_move: int | None = None
    failure_reason: str = ""
    started_timestamp: int = 0


class MoveTasks(Result, tag="MoveTasks"):
    tasks: list[MoveTask]


class TaskHandle(Result, tag="TaskHandle"):
    task_handle: str


class MovedCount(Result, tag="MovedCount"):
    """CancelMessageMoveTask: how many messages the task had moved."""

    moved: int


class Arn(Result, tag="Arn"):
    """A topic's or a subscription's ARN."""

    arn: str


class Arns(Result, tag="Arns"):
    arns: list[str]
    next_token: str | None = None


class SubscriptionInfo(msgspec.Struct, array_like=True, frozen=True):
    subscription_arn: str  # "PendingConfirmation" while pending, as AWS lists it
    owner: str
    protocol: str
    endpoint: str
    topic_arn: str


class SubscriptionList(Result, tag="SubscriptionList"):
    subscriptions: list[SubscriptionInfo]
    next_token: str | None = None


class PublishedMessage(Result, tag="PublishedMessage"):
    message_id: str
    sequence_number: str | None = None


class PublishedEntry(msgspec.Struct, array_like=True, omit_defaults=True, frozen=True):
    id: str
    message_id: str
    sequence_number: str | None = None


class PublishBatchResult(Result, tag="PublishBatchResult"):
    successful: list[PublishedEntry]
    failed: list[BatchFailure]


class Verdict(msgspec.Struct, array_like=True, omit_defaults=True, frozen=True):
    subscription_arn: str
    protocol: str
    endpoint: str
    delivered: bool
    reason: str = ""  # why not: the policy key that failed, or the subscription's state


class Explanation(Result, tag="Explanation"):
    verdicts: list[Verdict]


class OptedOut(Result, tag="OptedOut"):
    opted_out: bool


class PhoneNumbers(Result, tag="PhoneNumbers"):
    phone_numbers: list[str]
    next_token: str | None = None


class SandboxStatus(Result, tag="SandboxStatus"):
    in_sandbox: bool


class SandboxPhoneNumber(msgspec.Struct, array_like=True, frozen=True):
    phone_number: str
    status: str  # Pending or Verified


class SandboxPhoneNumbers(Result, tag="SandboxPhoneNumbers"):
    phone_numbers: list[SandboxPhoneNumber]
    next_token: str | None = None


class PlatformResource(msgspec.Struct, array_like=True, omit_defaults=True, frozen=True):
    """A platform application or endpoint in a listing."""

    arn: str
    attributes: dict[str, str]


class PlatformResources(Result, tag="PlatformResources"):
    resources: list[PlatformResource]
    next_token: str | None = None


class Failure(Result, tag="Failure"):
    """An operation that failed as a whole: an error-table code and a message."""

    code: str
    message: str


AnyResult = (
    Done
    | QueueName
    | QueueNames
    | Attributes
    | Tags
    | Sent
    | SendBatchResult
    | BatchResult
    | Received
    | Peeked
    | MoveTasks
    | TaskHandle
    | MovedCount
    | Arn
    | Arns
    | SubscriptionList
    | PublishedMessage
    | PublishBatchResult
    | Explanation
    | OptedOut
    | PhoneNumbers
    | SandboxStatus
    | PlatformResources
    | SandboxPhoneNumbers
    | Failure
)
