"""SNS's AWS wire shapes (the Query protocol: form-encoded `Action=...`, XML answers), translated to
the broker's operations and back. Pure: no I/O.

Flattened parameters are nested first (`Attributes.entry.1.key`, `Tags.member.2.Value`,
`MessageAttributes.entry.1.Value.StringValue`), then decoded into msgspec structs named as in
botocore's SNS model, so missing and mistyped parameters are reported by name. Topics and
subscriptions are addressed by ARN; the operations name the topic.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable
from typing import Any
from xml.etree import ElementTree

import msgspec

from dovecote.actors.errors import BrokerError, invalid_parameter
from dovecote.actors.mobile import is_endpoint_arn
from dovecote.actors.ops import (
    MessageAttributeValue,
    AddTopicPermission,
    Arn,
    CheckIfPhoneNumberIsOptedOut,
    CreatePlatformApplication,
    CreatePlatformEndpoint,
    DeleteEndpoint,
    DeletePlatformApplication,
    GetEndpointAttributes,
    GetPlatformApplicationAttributes,
    GetSMSAttributes,
    SetSMSAttributes,
    ListEndpointsByPlatformApplication,
    ListPlatformApplications,
    PlatformResources,
    PublishToEndpoint,
    PublishToPhoneNumber,
    CreateSMSSandboxPhoneNumber,
    VerifySMSSandboxPhoneNumber,
    DeleteSMSSandboxPhoneNumber,
    ListSMSSandboxPhoneNumbers,
    SandboxPhoneNumbers,
    SetEndpointAttributes,
    SetPlatformApplicationAttributes,
    GetSMSSandboxAccountStatus,
    ListOriginationNumbers,
    ListPhoneNumbersOptedOut,
    OptedOut,
    OptInPhoneNumber,
    PhoneNumbers,
    SandboxStatus,
    Arns,
    Attributes,
    ConfirmSubscription,
    CreateTopic,
    DeleteTopic,
    Done,
    GetSubscriptionAttributes,
    GetTopicAttributes,
    ListSubscriptions,
    ListSubscriptionsByTopic,
    ListTopicTags,
    ListTopics,
    Op,
    Publish,
    PublishBatch,
    PublishBatchResult,
    PublishEntry,
    PublishedMessage,
    RemoveTopicPermission,
    Result,
    SetSubscriptionAttributes,
    SetTopicAttributes,
    Subscribe,
    SubscriptionList,
    TagTopic,
    Tags,
    Unsubscribe,
    UnsubscribeByUrl,
    UntagTopic,
)

from .sqs_api import decode_shape
from .sqs_query import indexed, query_tree

NAMESPACE = "http://sns.amazonaws.com/doc/2010-03-31/"
SMS_ACCOUNT_ACTIONS = (
    "CheckIfPhoneNumberIsOptedOut", "ListPhoneNumbersOptedOut", "OptInPhoneNumber", "GetSMSSandboxAccountStatus",
    "ListOriginationNumbers",
)
PLATFORM_ACTIONS = (
    "CreatePlatformApplication", "GetPlatformApplicationAttributes", "SetPlatformApplicationAttributes",
    "ListPlatformApplications", "DeletePlatformApplication", "CreatePlatformEndpoint", "GetEndpointAttributes",
    "SetEndpointAttributes", "DeleteEndpoint", "ListEndpointsByPlatformApplication", "GetSMSAttributes", "SetSMSAttributes",
    "CreateSMSSandboxPhoneNumber", "VerifySMSSandboxPhoneNumber", "DeleteSMSSandboxPhoneNumber", "ListSMSSandboxPhoneNumbers",
)
ACTIONS_ONLY_SNS = {
    "CreateTopic", "DeleteTopic", "ListTopics", "GetTopicAttributes", "SetTopicAttributes", "Subscribe",
    "ConfirmSubscription", "Unsubscribe", "ListSubscriptions", "ListSubscriptionsByTopic",
    "GetSubscriptionAttributes", "SetSubscriptionAttributes", "Publish", "PublishBatch", "TagResource",
    "UntagResource", "ListTagsForResource", "PutDataProtectionPolicy", "GetDataProtectionPolicy", *SMS_ACCOUNT_ACTIONS,
    *PLATFORM_ACTIONS,
}
# SQS-worded codes of shared validation, in SNS's words
_SNS_CODES = {"InvalidParameterValue": "InvalidParameter", "MissingParameter": "InvalidParameter", "InvalidAttributeName": "InvalidParameter"}


class _Shape(msgspec.Struct, rename="pascal", forbid_unknown_fields=False):
    pass


class AttributeValue(_Shape):
    data_type: str
    string_value: str | None = None
    binary_value: bytes | None = None


class Tag(_Shape):
    key: str
    value: str = ""


class CreateTopicRequest(_Shape):
    name: str
    attributes: dict[str, str] = {}
    tags: list[Tag] = []


class TopicArnRequest(_Shape):
    topic_arn: str


class NextTokenRequest(_Shape):
    next_token: str | None = None


class ListSubscriptionsByTopicRequest(_Shape):
    topic_arn: str
    next_token: str | None = None


class SetTopicAttributesRequest(_Shape):
    topic_arn: str
    attribute_name: str
    attribute_value: str = ""


class SubscribeRequest(_Shape):
    topic_arn: str
    protocol: str
    endpoint: str = ""
    attributes: dict[str, str] = {}
    return_subscription_arn: bool = False


class ConfirmSubscriptionRequest(_Shape):
    topic_arn: str
    token: str
    authenticate_on_unsubscribe: str | None = None


class SubscriptionArnRequest(_Shape):
    subscription_arn: str


class SetSubscriptionAttributesRequest(_Shape):
    subscription_arn: str
    attribute_name: str
    attribute_value: str = ""


class PublishRequest(_Shape):
    message: str
    topic_arn: str | None = None
    target_arn: str | None = None
    phone_number: str | None = None
    subject: str | None = None
    message_structure: str | None = None
    message_attributes: dict[str, AttributeValue] = {}
    message_deduplication_id: str | None = None
    message_group_id: str | None = None


class PublishBatchEntry(_Shape):
    id: str
    message: str
    subject: str | None = None
    message_structure: str | None = None
    message_attributes: dict[str, AttributeValue] = {}
    message_deduplication_id: str | None = None
    message_group_id: str | None = None


class PublishBatchRequest(_Shape):
    topic_arn: str
    publish_batch_request_entries: list[PublishBatchEntry]


class TagResourceRequest(_Shape):
    resource_arn: str
    tags: list[Tag]


class UntagResourceRequest(_Shape):
    resource_arn: str
    tag_keys: list[str]


class ResourceArnRequest(_Shape):
    resource_arn: str


class AddPermissionRequest(_Shape):
    topic_arn: str
    label: str
    account_ids: list[str] = msgspec.field(name="AWSAccountId")
    action_names: list[str] = msgspec.field(name="ActionName")


class PhoneNumberRequest(_Shape, rename="camel"):
    """The older SMS calls name their parameters in camelCase (phoneNumber, nextToken)."""

    phone_number: str


class SMSAttributeNamesRequest(_Shape, rename="camel"):
    attributes: list[str] = []


class SMSAttributesRequest(_Shape, rename="camel"):
    attributes: dict[str, str]


class CamelNextTokenRequest(_Shape, rename="camel"):
    next_token: str | None = None


class CreatePlatformApplicationRequest(_Shape):
    name: str
    platform: str
    attributes: dict[str, str] = {}  # an empty map is not sent: the core says what it lacks


class PlatformApplicationRequest(_Shape):
    platform_application_arn: str


class SetPlatformApplicationAttributesRequest(_Shape):
    platform_application_arn: str
    attributes: dict[str, str]


class ListEndpointsRequest(_Shape):
    platform_application_arn: str
    next_token: str | None = None


class CreatePlatformEndpointRequest(_Shape):
    platform_application_arn: str
    token: str
    custom_user_data: str | None = None
    attributes: dict[str, str] = {}


class EndpointRequest(_Shape):
    endpoint_arn: str


class SetEndpointAttributesRequest(_Shape):
    endpoint_arn: str
    attributes: dict[str, str]


class SandboxPhoneNumberRequest(_Shape):
    """The SMS sandbox's calls name their parameters in PascalCase (PhoneNumber), the older SMS
    calls' in camelCase."""

    phone_number: str


class CreateSMSSandboxPhoneNumberRequest(_Shape):
    phone_number: str
    language_code: str | None = None


class VerifySMSSandboxPhoneNumberRequest(_Shape):
    phone_number: str
    one_time_password: str


class ListSMSSandboxPhoneNumbersRequest(_Shape):
    next_token: str | None = None
    max_results: int | None = None


class RemovePermissionRequest(_Shape):
    topic_arn: str
    label: str


class PutDataProtectionPolicyRequest(_Shape):
    resource_arn: str
    data_protection_policy: str


# The request fields that hold an ARN, as AWS names them in its refusals
_ARN_FIELDS = {"topic_arn": "TopicArn", "subscription_arn": "SubscriptionArn", "resource_arn": "ResourceArn", "target_arn": "TargetArn"}


def topic_of(arn: str, field: str = "TopicArn") -> str:
    """The topic a topic's or subscription's ARN names (arn:aws:sns:REGION:ACCOUNT:TOPIC[:ID]),
    refused in AWS's words (`field`: the parameter that carried it)."""
    parts = arn.split(":")
    if len(parts) < 6:
        raise invalid_parameter(f"{field} Reason: An ARN must have at least 6 elements, not {len(parts)}")
    if len(parts) > 7 or parts[:3] != ["arn", "aws", "sns"] or not parts[5]:
        raise invalid_parameter(field)
    return parts[5]


def _check_arns(request: _Shape, region: str) -> None:
    """Every ARN of a request is well formed and of the region the request acts in: AWS refuses a
    topic of another region (even for DeleteTopic) rather than acting on, or quietly missing, it."""
    for name, field in _ARN_FIELDS.items():
        arn = getattr(request, name, None)
        if arn is not None:
            topic_of(arn, field)
            if region and region_of(arn) != region:
                raise invalid_parameter(field)


def _tags(tags: list[Tag]) -> dict[str, str]:
    if len({tag.key for tag in tags}) != len(tags):
        raise invalid_parameter("Duplicated keys are not allowed.")
    return {tag.key: tag.value for tag in tags}


def _unsubscribe(request: SubscriptionArnRequest) -> Op:
    if len(request.subscription_arn.split(":")) != 7:  # a topic's ARN: no subscription id
        raise invalid_parameter("SubscriptionId")
    return Unsubscribe(topic_of(request.subscription_arn), request.subscription_arn)


def _attributes(values: dict[str, AttributeValue]) -> dict[str, MessageAttributeValue]:
    return {name: MessageAttributeValue(v.data_type, v.string_value, v.binary_value) for name, v in values.items()}


def _publish(request: PublishRequest) -> Op:
    if sum(target is not None for target in (request.topic_arn, request.target_arn, request.phone_number)) > 1:
        raise invalid_parameter("Only one of TopicArn, TargetArn or PhoneNumber may be specified")  # our words: no recording found
    if request.phone_number is not None:
        return PublishToPhoneNumber(
            request.phone_number, request.message, request.subject, request.message_structure, _attributes(request.message_attributes)
        )
    if request.target_arn is not None and is_endpoint_arn(request.target_arn):
        return PublishToEndpoint(
            request.target_arn, request.message, request.subject, request.message_structure, _attributes(request.message_attributes)
        )
    arn = request.topic_arn or request.target_arn
    if not arn:
        raise BrokerError("InvalidParameter", "Invalid parameter: TopicArn or TargetArn Reason: no value for required parameter")
    return Publish(
        topic_of(arn),
        request.message,
        request.subject,
        request.message_structure,
        _attributes(request.message_attributes),
        request.message_group_id,
        request.message_deduplication_id,
    )


_REQUESTS: dict[str, tuple[type[_Shape], Callable[[Any], Op]]] = {
    "CreateTopic": (CreateTopicRequest, lambda r: CreateTopic(r.name, r.attributes, _tags(r.tags))),
    "DeleteTopic": (TopicArnRequest, lambda r: DeleteTopic(topic_of(r.topic_arn))),
    "ListTopics": (NextTokenRequest, lambda r: ListTopics(r.next_token)),
    "GetTopicAttributes": (TopicArnRequest, lambda r: GetTopicAttributes(topic_of(r.topic_arn))),
    "SetTopicAttributes": (
        SetTopicAttributesRequest,
        lambda r: SetTopicAttributes(topic_of(r.topic_arn), r.attribute_name, r.attribute_value),
    ),
    "Subscribe": (
        SubscribeRequest,
        lambda r: Subscribe(topic_of(r.topic_arn), r.protocol, r.endpoint, r.attributes, r.return_subscription_arn),
    ),
    "ConfirmSubscription": (ConfirmSubscriptionRequest, lambda r: ConfirmSubscription(topic_of(r.topic_arn), r.token)),
    "Unsubscribe": (SubscriptionArnRequest, lambda r: _unsubscribe(r)),
    "ListSubscriptions": (NextTokenRequest, lambda r: ListSubscriptions(r.next_token)),
    "ListSubscriptionsByTopic": (
        ListSubscriptionsByTopicRequest,
        lambda r: ListSubscriptionsByTopic(topic_of(r.topic_arn), r.next_token),
    ),
    "GetSubscriptionAttributes": (
        SubscriptionArnRequest,
        lambda r: GetSubscriptionAttributes(topic_of(r.subscription_arn), r.subscription_arn),
    ),
    "SetSubscriptionAttributes": (
        SetSubscriptionAttributesRequest,
        lambda r: SetSubscriptionAttributes(topic_of(r.subscription_arn), r.subscription_arn, r.attribute_name, r.attribute_value),
    ),
    "Publish": (PublishRequest, _publish),
    "PublishBatch": (
        PublishBatchRequest,
        lambda r: PublishBatch(
            topic_of(r.topic_arn),
            [
                PublishEntry(
                    e.id, e.message, e.subject, e.message_structure, _attributes(e.message_attributes),
                    e.message_group_id, e.message_deduplication_id,
                )
                for e in r.publish_batch_request_entries
            ],
        ),
    ),
    "TagResource": (TagResourceRequest, lambda r: TagTopic(topic_of(r.resource_arn), _tags(r.tags))),
    "UntagResource": (UntagResourceRequest, lambda r: UntagTopic(topic_of(r.resource_arn), r.tag_keys)),
    "ListTagsForResource": (ResourceArnRequest, lambda r: ListTopicTags(topic_of(r.resource_arn))),
    "AddPermission": (
        AddPermissionRequest,
        lambda r: AddTopicPermission(topic_of(r.topic_arn), r.label, r.account_ids, r.action_names),
    ),
    "RemovePermission": (RemovePermissionRequest, lambda r: RemoveTopicPermission(topic_of(r.topic_arn), r.label)),
    "CheckIfPhoneNumberIsOptedOut": (PhoneNumberRequest, lambda r: CheckIfPhoneNumberIsOptedOut(r.phone_number)),
    "ListPhoneNumbersOptedOut": (CamelNextTokenRequest, lambda r: ListPhoneNumbersOptedOut(r.next_token)),
    "OptInPhoneNumber": (PhoneNumberRequest, lambda r: OptInPhoneNumber(r.phone_number)),
    "GetSMSSandboxAccountStatus": (_Shape, lambda r: GetSMSSandboxAccountStatus()),
    "ListOriginationNumbers": (NextTokenRequest, lambda r: ListOriginationNumbers(r.next_token)),
    # The data protection policy is the topic's DataProtectionPolicy attribute, as on AWS.
    "PutDataProtectionPolicy": (
        PutDataProtectionPolicyRequest,
        lambda r: SetTopicAttributes(topic_of(r.resource_arn), "DataProtectionPolicy", r.data_protection_policy),
    ),
    "GetDataProtectionPolicy": (ResourceArnRequest, lambda r: GetTopicAttributes(topic_of(r.resource_arn))),
    "CreatePlatformApplication": (
        CreatePlatformApplicationRequest, lambda r: CreatePlatformApplication(r.name, r.platform, r.attributes)
    ),
    "GetPlatformApplicationAttributes": (
        PlatformApplicationRequest, lambda r: GetPlatformApplicationAttributes(r.platform_application_arn)
    ),
    "SetPlatformApplicationAttributes": (
        SetPlatformApplicationAttributesRequest,
        lambda r: SetPlatformApplicationAttributes(r.platform_application_arn, r.attributes),
    ),
    "ListPlatformApplications": (NextTokenRequest, lambda r: ListPlatformApplications(r.next_token)),
    "DeletePlatformApplication": (PlatformApplicationRequest, lambda r: DeletePlatformApplication(r.platform_application_arn)),
    "CreatePlatformEndpoint": (
        CreatePlatformEndpointRequest,
        lambda r: CreatePlatformEndpoint(r.platform_application_arn, r.token, r.custom_user_data, r.attributes),
    ),
    "GetEndpointAttributes": (EndpointRequest, lambda r: GetEndpointAttributes(r.endpoint_arn)),
    "SetEndpointAttributes": (SetEndpointAttributesRequest, lambda r: SetEndpointAttributes(r.endpoint_arn, r.attributes)),
    "DeleteEndpoint": (EndpointRequest, lambda r: DeleteEndpoint(r.endpoint_arn)),
    "ListEndpointsByPlatformApplication": (
        ListEndpointsRequest, lambda r: ListEndpointsByPlatformApplication(r.platform_application_arn, r.next_token)
    ),
    "GetSMSAttributes": (SMSAttributeNamesRequest, lambda r: GetSMSAttributes(r.attributes)),
    "SetSMSAttributes": (SMSAttributesRequest, lambda r: SetSMSAttributes(r.attributes)),
    "CreateSMSSandboxPhoneNumber": (
        CreateSMSSandboxPhoneNumberRequest, lambda r: CreateSMSSandboxPhoneNumber(r.phone_number, r.language_code)
    ),
    "VerifySMSSandboxPhoneNumber": (
        VerifySMSSandboxPhoneNumberRequest, lambda r: VerifySMSSandboxPhoneNumber(r.phone_number, r.one_time_password)
    ),
    "DeleteSMSSandboxPhoneNumber": (SandboxPhoneNumberRequest, lambda r: DeleteSMSSandboxPhoneNumber(r.phone_number)),
    "ListSMSSandboxPhoneNumbers": (
        ListSMSSandboxPhoneNumbersRequest, lambda r: ListSMSSandboxPhoneNumbers(r.next_token, r.max_results)
    ),
}


def nest(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """The parameters of an SNS Query request, nested into the model's shape (the action is
    sqs_query.query_action's)."""
    params = _convert(query_tree(pairs))
    if not isinstance(params, dict):  # e.g. member.1=x at the top: a list, not parameters
        raise BrokerError("InvalidParameter", "Invalid parameter: the request's parameters must be named")
    return params


def _convert(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    if "member" in node and isinstance(node["member"], dict):
        return [_convert(item) for item in indexed(node["member"])]
    if "entry" in node and isinstance(node["entry"], dict):
        converted = {}
        for entry in indexed(node["entry"]):
            if not isinstance(entry, dict):
                raise BrokerError("InvalidParameter", "Invalid parameter: each map entry needs a key and a value")
            key = entry.get("key", entry.get("Name"))
            if not isinstance(key, str):
                raise BrokerError("InvalidParameter", "Invalid parameter: each map entry needs a key and a value")
            converted[key] = _convert(entry.get("value", entry.get("Value", "")))
        return converted
    return {name: _convert(value) for name, value in node.items()}


def to_op(action: str, params: dict[str, Any], region: str = "") -> Op:
    """The operation of a request acting in `region` ("": any)."""
    if action not in _REQUESTS:
        raise BrokerError("InvalidAction", f"The action {action[:80]} is not valid for this endpoint or not supported by this broker.")
    shape, build = _REQUESTS[action]
    request = decode_shape(
        params,
        shape,
        missing=lambda field: BrokerError("InvalidParameter", f"Invalid parameter: {field} Reason: no value for required parameter"),
        invalid=lambda text: BrokerError("InvalidParameter", f"Invalid parameter: {text}"),
    )
    _check_arns(request, region)
    return build(request)


def by_url_op(action: str, params: dict[str, str]) -> Op:
    """The operation of a SubscribeURL or UnsubscribeURL visited without a signature (the request's
    token is its only proof; aws_request.unsigned_exemption says which requests are such visits):
    a confirmation by TopicArn and Token, or an Unsubscribe by SubscriptionArn that the topic allows
    only for a subscription AWS would let go unsigned (UnsubscribeByUrl)."""
    if action == "ConfirmSubscription":
        return ConfirmSubscription(topic_of(params["TopicArn"]), params["Token"])
    if action == "Unsubscribe":
        return UnsubscribeByUrl(topic_of(params["SubscriptionArn"]), params["SubscriptionArn"])
    raise ValueError(f"{action} is never served without a signature")


def region_of(arn: str) -> str:
    """The region an SNS ARN names (arn:aws:sns:REGION:...); "" if it names none."""
    parts = arn.split(":")
    return parts[3] if len(parts) > 3 else ""


def to_output(action: str, result: Result) -> dict[str, Any]:
    match result:
        case Done():
            return {}
        case Arn(arn=arn):
            return {_ARN_OUTPUTS.get(action, "TopicArn"): arn}
        case Arns(arns=arns, next_token=token):
            return _without_none({"Topics": [{"TopicArn": arn} for arn in arns], "NextToken": token})
        case Attributes(attributes=attributes) if action == "GetDataProtectionPolicy":
            return {"DataProtectionPolicy": attributes.get("DataProtectionPolicy", "")}
        case Attributes(attributes=attributes) if action == "GetSMSAttributes":
            return {"attributes": attributes}
        case Attributes(attributes=attributes):
            return {"Attributes": attributes}
        case Tags(tags=tags):
            return {"Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}
        case SubscriptionList(subscriptions=subscriptions, next_token=token):
            return _without_none(
                {
                    "Subscriptions": [
                        {"SubscriptionArn": s.subscription_arn, "Owner": s.owner, "Protocol": s.protocol,
                         "Endpoint": s.endpoint, "TopicArn": s.topic_arn}
                        for s in subscriptions
                    ],
                    "NextToken": token,
                }
            )
        case PublishedMessage(message_id=message_id, sequence_number=sequence):
            return _without_none({"MessageId": message_id, "SequenceNumber": sequence})
        case OptedOut(opted_out=opted_out):
            return {"isOptedOut": opted_out}
        case PhoneNumbers(phone_numbers=numbers, next_token=token) if action == "ListPhoneNumbersOptedOut":
            return _without_none({"phoneNumbers": numbers, "nextToken": token})
        case PhoneNumbers(phone_numbers=numbers, next_token=token):
            return _without_none({"PhoneNumbers": numbers, "NextToken": token})
        case SandboxStatus(in_sandbox=in_sandbox):
            return {"IsInSandbox": in_sandbox}
        case PlatformResources(resources=resources, next_token=token):
            listing, arn_name = ("Endpoints", "EndpointArn") if action == "ListEndpointsByPlatformApplication" else (
                "PlatformApplications", "PlatformApplicationArn"
            )
            return _without_none({listing: [{arn_name: r.arn, "Attributes": r.attributes} for r in resources], "NextToken": token})
        case SandboxPhoneNumbers(phone_numbers=numbers, next_token=token):
            return _without_none(
                {"PhoneNumbers": [{"PhoneNumber": n.phone_number, "Status": n.status} for n in numbers], "NextToken": token}
            )
        case PublishBatchResult(successful=successful, failed=failed):
            return {
                "Successful": [_without_none({"Id": e.id, "MessageId": e.message_id, "SequenceNumber": e.sequence_number}) for e in successful],
                "Failed": [{"Id": f.id, "Code": f.code, "Message": f.message, "SenderFault": f.sender_fault} for f in failed],
            }
    raise TypeError(f"no output shape for {type(result).__name__}")


_ARN_OUTPUTS = {
    "Subscribe": "SubscriptionArn",
    "ConfirmSubscription": "SubscriptionArn",
    "CreatePlatformApplication": "PlatformApplicationArn",
    "CreatePlatformEndpoint": "EndpointArn",
}


def _without_none(values: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}


def render(action: str, output: dict[str, Any], request_id: str) -> bytes:
    root = ElementTree.Element(f"{action}Response", xmlns=NAMESPACE)
    result = ElementTree.SubElement(root, f"{action}Result")
    for name, value in output.items():
        _append(result, name, value)
    metadata = ElementTree.SubElement(root, "ResponseMetadata")
    ElementTree.SubElement(metadata, "RequestId").text = request_id
    return ElementTree.tostring(root, encoding="utf-8", xml_declaration=True)


def render_error(error: BrokerError, request_id: str) -> tuple[int, bytes]:
    kind = error.kind
    root = ElementTree.Element("ErrorResponse", xmlns=NAMESPACE)
    element = ElementTree.SubElement(root, "Error")
    ElementTree.SubElement(element, "Type").text = "Sender" if kind.sender_fault else "Receiver"
    ElementTree.SubElement(element, "Code").text = _SNS_CODES.get(kind.code, kind.query_code)
    ElementTree.SubElement(element, "Message").text = error.message
    ElementTree.SubElement(root, "RequestId").text = request_id
    return kind.http_status, ElementTree.tostring(root, encoding="utf-8", xml_declaration=True)


def _append(parent: ElementTree.Element, name: str, value: Any) -> None:
    element = ElementTree.SubElement(parent, name)
    if isinstance(value, list):
        for item in value:
            _append(element, "member", item)
    elif isinstance(value, dict) and name in ("Attributes", "attributes"):
        for key, item in value.items():
            entry = ElementTree.SubElement(element, "entry")
            ElementTree.SubElement(entry, "key").text = key
            ElementTree.SubElement(entry, "value").text = item
    elif isinstance(value, dict):
        for key, item in value.items():
            _append(element, key, item)
    elif isinstance(value, bool):
        element.text = "true" if value else "false"
    elif isinstance(value, bytes):
        element.text = base64.b64encode(value).decode()
    else:
        element.text = str(value)
