"""SNS's platform applications and endpoints (mobile push) as AWS validates and answers them: what
each operation stores and answers. Pure: no I/O; the platform actor (platform.py) owns one and
writes what it says to store.

An application's credentials are checked for presence, as AWS does, but not kept: this broker
delivers through the operator's sink, which holds its own. A publish to an endpoint (Publish with a
TargetArn) is a PushQueued record of topic id DIRECT_PUSHES and the endpoint's id, delivered by a
delivery actor (delivery.py) as an application subscription's pushes are.
"""

from __future__ import annotations

import re

import msgspec

from dovecote.storage.records import (
    PlatformApplicationChanged,
    PlatformApplicationDeleted,
    PlatformEndpointChanged,
    PlatformEndpointDeleted,
    PushQueued,
    Record,
    SMSAttributesChanged,
)
from dovecote.storage.store import LoadedPlatform
from dovecote.storage.tables import DIRECT_PUSHES

from . import delivery_policy, paging, sns_validation
from .errors import BrokerError, invalid_parameter
from .mobile import check_endpoint, is_endpoint_arn, payload_key
from .ops import (
    Arn,
    Attributes,
    CreatePlatformApplication,
    CreatePlatformEndpoint,
    DeleteEndpoint,
    DeletePlatformApplication,
    Done,
    GetEndpointAttributes,
    GetPlatformApplicationAttributes,
    GetSMSAttributes,
    ListEndpointsByPlatformApplication,
    ListPlatformApplications,
    PlatformOp,
    PlatformResource,
    PlatformResources,
    PublishedMessage,
    PublishToEndpoint,
    Result,
    SetEndpointAttributes,
    SetPlatformApplicationAttributes,
    SetSMSAttributes,
)
from .push_types import PushTarget

PLATFORMS = frozenset({"ADM", "APNS", "APNS_SANDBOX", "BAIDU", "GCM", "MPNS", "WNS"})
_APPLICATION_NAME = re.compile(r"[A-Za-z0-9_.-]{1,256}")
CREDENTIALS = ("PlatformCredential", "PlatformPrincipal")  # checked, never kept nor answered
APPLICATION_ATTRIBUTES = frozenset({
    *CREDENTIALS, "EventEndpointCreated", "EventEndpointDeleted", "EventEndpointUpdated", "EventDeliveryFailure",
    "SuccessFeedbackRoleArn", "FailureFeedbackRoleArn", "SuccessFeedbackSampleRate", "ApplePlatformTeamID",
    "ApplePlatformBundleID",
})
ENDPOINT_ATTRIBUTES = frozenset({"CustomUserData", "Enabled", "Token"})
SMS_ATTRIBUTES = frozenset({
    "MonthlySpendLimit", "DeliveryStatusIAMRole", "DeliveryStatusSuccessSamplingRate", "DefaultSenderID", "DefaultSMSType",
    "UsageReportS3Bucket",
})
_SENDER_ID = re.compile(r"(?=.*[A-Za-z])[A-Za-z0-9]{1,11}")  # AWS: up to 11 letters and digits, at least one letter
MAX_CUSTOM_USER_DATA_BYTES = 2048
MAX_TOKEN_BYTES = 8192  # an APNS token is 64 characters, an FCM registration token a few hundred


def application_missing() -> BrokerError:
    return BrokerError("NotFound", "PlatformApplication does not exist")


def endpoint_missing() -> BrokerError:
    return BrokerError("NotFound", "Endpoint does not exist")


class PlatformCore:
    """Every platform application (ARN -> attributes) and endpoint (ARN -> its record) of the broker."""

    def __init__(self, account_id: str, push_protocols: frozenset[str]) -> None:
        """push_protocols: what the broker's sender delivers (application: it has a mobile sink)."""
        self.account_id = account_id
        self.push_protocols = push_protocols
        self.applications: dict[str, dict[str, str]] = {}
        self.endpoints: dict[str, PlatformEndpointChanged] = {}
        self.sms_attributes: dict[str, str] = {}  # the account's (SetSMSAttributes)
        # Endpoint ids key their pending publishes. After a restart the highest id of a deleted
        # endpoint may be drawn again: its pending publishes were deleted with it.
        self._next_endpoint_id = 1

    @classmethod
    def restore(cls, account_id: str, push_protocols: frozenset[str], loaded: LoadedPlatform) -> PlatformCore:
        core = cls(account_id, push_protocols)
        for record in [*loaded.applications, *loaded.endpoints]:
            core.apply(record)
        core.sms_attributes = loaded.sms_attributes
        return core

    def unknown_endpoint(self, arn: str) -> bool:
        """An application subscription's endpoint is a well-formed endpoint ARN naming none, as AWS
        refuses it. Without a sink, or with a malformed ARN, the topic words the refusal."""
        return "application" in self.push_protocols and is_endpoint_arn(arn) and arn not in self.endpoints

    def delivery_target(self, endpoint_id: int) -> PushTarget | None:
        """What the delivery actor of an endpoint's publishes works to (None: no such endpoint):
        AWS's retry policy for mobile push, no dead-letter queue (a direct publish has no subscription
        to name one)."""
        for endpoint in self.endpoints.values():
            if endpoint.endpoint_id == endpoint_id:
                policy = delivery_policy.effective(None, None, delivery_policy.CUSTOMER_MANAGED_RETRY)
                return PushTarget(DIRECT_PUSHES, endpoint.arn, "", endpoint_id, "", "application", endpoint.arn, False, policy, "")
        return None

    def plan(self, op: PlatformOp, region: str, at_ms: int, new_id: str) -> tuple[list[Record], Result]:
        """What op stores (applied with `apply` once committed) and answers. `new_id` is a fresh
        UUID: the id of the endpoint a CreatePlatformEndpoint makes, or of a publish's message.
        Raises BrokerError for a refusal."""
        match op:
            case CreatePlatformApplication():
                return self._create_application(op, region, at_ms)
            case GetPlatformApplicationAttributes(application_arn=arn):
                return [], Attributes(self._application(arn))
            case SetPlatformApplicationAttributes(application_arn=arn, attributes=given):
                attributes = {**self._application(arn), **_application_attributes(given, creating=False)}
                return [PlatformApplicationChanged(at_ms, arn, attributes)], Done()
            case ListPlatformApplications(next_token=token):
                listed = [PlatformResource(arn, attributes) for arn, attributes in sorted(self.applications.items())]
                return [], PlatformResources(*paging.sns_page(listed, token, _resource_arn))
            case DeletePlatformApplication(application_arn=arn):
                # Deleting one that is not there succeeds, as AWS's deletions of SNS resources do.
                if arn not in self.applications:
                    return [], Done()
                endpoints: list[Record] = [
                    PlatformEndpointDeleted(at_ms, e.arn, arn, e.endpoint_id) for e in self.endpoints.values() if e.application_arn == arn
                ]
                return [*endpoints, PlatformApplicationDeleted(at_ms, arn)], Done()
            case CreatePlatformEndpoint():
                return self._create_endpoint(op, at_ms, new_id)
            case GetEndpointAttributes(endpoint_arn=arn):
                return [], Attributes(self._endpoint(arn).attributes)
            case SetEndpointAttributes(endpoint_arn=arn, attributes=given):
                endpoint = self._endpoint(arn)
                attributes = {**endpoint.attributes, **_endpoint_attributes(given)}
                return [msgspec.structs.replace(endpoint, at_ms=at_ms, attributes=attributes)], Done()
            case DeleteEndpoint(endpoint_arn=arn):
                endpoint = self.endpoints.get(arn)  # idempotent, as AWS documents it
                return ([PlatformEndpointDeleted(at_ms, arn, endpoint.application_arn, endpoint.endpoint_id)] if endpoint else []), Done()
            case PublishToEndpoint():
                return self._publish(op, at_ms, new_id)
            case GetSMSAttributes(names=names):
                chosen = self.sms_attributes if not names else {n: v for n, v in self.sms_attributes.items() if n in names}
                return [], Attributes(chosen)
            case SetSMSAttributes(attributes=given):
                return [SMSAttributesChanged(at_ms, {**self.sms_attributes, **_sms_attributes(given)})], Done()
            case ListEndpointsByPlatformApplication(application_arn=application, next_token=token):
                self._application(application)
                listed = [
                    PlatformResource(arn, endpoint.attributes)
                    for arn, endpoint in sorted(self.endpoints.items())
                    if endpoint.application_arn == application
                ]
                return [], PlatformResources(*paging.sns_page(listed, token, _resource_arn))
        raise TypeError(f"{type(op).__name__} is not a platform operation")

    def apply(self, record: Record) -> None:
        match record:
            case PlatformApplicationChanged(arn=arn, attributes=attributes):
                self.applications[arn] = attributes
            case PlatformApplicationDeleted(arn=arn):
                del self.applications[arn]
            case PlatformEndpointChanged(arn=arn, endpoint_id=endpoint_id):
                self.endpoints[arn] = record
                self._next_endpoint_id = max(self._next_endpoint_id, endpoint_id + 1)
            case PlatformEndpointDeleted(arn=arn):
                del self.endpoints[arn]
            case SMSAttributesChanged(attributes=attributes):
                self.sms_attributes = attributes

    def _application(self, arn: str) -> dict[str, str]:
        attributes = self.applications.get(arn)
        if attributes is None:
            raise application_missing()
        return attributes

    def _endpoint(self, arn: str) -> PlatformEndpointChanged:
        endpoint = self.endpoints.get(arn)
        if endpoint is None:
            raise endpoint_missing()
        return endpoint

    def _create_application(self, op: CreatePlatformApplication, region: str, at_ms: int) -> tuple[list[Record], Result]:
        if not _APPLICATION_NAME.fullmatch(op.name):
            raise invalid_parameter(
                "Name Reason: must be at most 256 characters long and contain only letters, numbers, hyphens, underscores and periods"
            )
        if op.platform not in PLATFORMS:
            raise invalid_parameter(f"Platform Reason: {op.platform[:40]} is not supported")
        if "PlatformCredential" not in op.attributes:
            raise invalid_parameter("Attributes Reason: PlatformCredential attribute is required")
        attributes = {"Enabled": "true", **_application_attributes(op.attributes, creating=True)}
        arn = f"arn:aws:sns:{region}:{self.account_id}:app/{op.platform}/{op.name}"
        if arn in self.applications:  # made again: the same ARN, with the attributes given
            attributes = {**self.applications[arn], **attributes}
        return [PlatformApplicationChanged(at_ms, arn, attributes)], Arn(arn)

    def _create_endpoint(self, op: CreatePlatformEndpoint, at_ms: int, new_id: str) -> tuple[list[Record], Result]:
        self._application(op.application_arn)
        given = _endpoint_attributes({**op.attributes, "Token": op.token})
        if op.custom_user_data is not None:
            given |= _endpoint_attributes({"CustomUserData": op.custom_user_data})
        for endpoint in self.endpoints.values():
            if endpoint.application_arn == op.application_arn and endpoint.attributes.get("Token") == op.token:
                # The same token again: its endpoint, unless other attributes come with it.
                if any(endpoint.attributes.get(name, "") != value for name, value in given.items()):
                    raise invalid_parameter(
                        f"Token Reason: Endpoint {endpoint.arn} already exists with the same Token, but different attributes."
                    )
                return [], Arn(endpoint.arn)
        platform, name = op.application_arn.rsplit(":", 1)[1].split("/")[1:]
        arn = f"{op.application_arn.rsplit(':', 1)[0]}:endpoint/{platform}/{name}/{new_id}"
        made = PlatformEndpointChanged(at_ms, arn, op.application_arn, self._next_endpoint_id, {"Enabled": "true", **given})
        return [made], Arn(arn)

    def _publish(self, op: PublishToEndpoint, at_ms: int, message_id: str) -> tuple[list[Record], Result]:
        """The payload of the endpoint's platform (or the default one), stored for its delivery actor."""
        check_endpoint("application", op.endpoint_arn, self.push_protocols)
        endpoint = self.endpoints.get(op.endpoint_arn)
        if endpoint is None:  # not NotFound, as the other calls answer: AWS words a publish's so
            raise invalid_parameter("TargetArn Reason: No endpoint found for the target arn specified")
        payloads = sns_validation.validate_publish(op.message, op.subject, op.message_structure, op.message_attributes)
        if endpoint.attributes.get("Enabled") == "false":
            raise BrokerError("EndpointDisabled", "Endpoint is disabled")
        body = payloads.get(payload_key("application", endpoint.arn), payloads["default"])
        pushed = PushQueued(at_ms, DIRECT_PUSHES, endpoint.arn, endpoint.endpoint_id, 0, message_id, body)
        return [pushed], PublishedMessage(message_id)


def platform_resource(op: PlatformOp) -> str:
    """The ARN an operation acts on, for authorisation ("*": the account's applications)."""
    match op:
        case GetPlatformApplicationAttributes(application_arn=arn) | SetPlatformApplicationAttributes(application_arn=arn):
            return arn
        case DeletePlatformApplication(application_arn=arn) | CreatePlatformEndpoint(application_arn=arn):
            return arn
        case ListEndpointsByPlatformApplication(application_arn=arn):
            return arn
        case GetEndpointAttributes(endpoint_arn=arn) | SetEndpointAttributes(endpoint_arn=arn) | DeleteEndpoint(endpoint_arn=arn):
            return arn
        case PublishToEndpoint(endpoint_arn=arn):
            return arn
    return "*"


def _application_attributes(given: dict[str, str], *, creating: bool) -> dict[str, str]:
    for name in given:
        if name not in APPLICATION_ATTRIBUTES:
            raise invalid_parameter(f"Attributes Reason: Invalid attribute name: {name[:80]}")
    if not creating and given.get("PlatformCredential") == "":
        raise invalid_parameter("Attributes Reason: PlatformCredential cannot be empty")
    return {name: value for name, value in given.items() if name not in CREDENTIALS}


def _endpoint_attributes(given: dict[str, str]) -> dict[str, str]:
    for name, value in given.items():
        if name not in ENDPOINT_ATTRIBUTES:
            raise invalid_parameter(f"Attributes Reason: Invalid attribute name: {name[:80]}")
        if name == "Enabled" and value.lower() not in ("true", "false"):
            raise invalid_parameter("Attributes Reason: Enabled must be true or false")
        if name == "Token" and not 0 < len(value.encode()) <= MAX_TOKEN_BYTES:
            raise invalid_parameter(f"Token Reason: must be 1 to {MAX_TOKEN_BYTES} bytes long")
        if name == "CustomUserData" and len(value.encode()) > MAX_CUSTOM_USER_DATA_BYTES:
            raise invalid_parameter(f"CustomUserData Reason: must be at most {MAX_CUSTOM_USER_DATA_BYTES} bytes long")
    return {name: value.lower() if name == "Enabled" else value for name, value in given.items()}


def _sms_attributes(given: dict[str, str]) -> dict[str, str]:
    """SetSMSAttributes' values, checked as AWS documents them."""
    for name, value in given.items():
        if name not in SMS_ATTRIBUTES:
            raise invalid_parameter(f"attributes Reason: {name[:80]} is not a valid SMS attribute")
        if name == "DefaultSMSType" and value not in ("Promotional", "Transactional"):
            raise invalid_parameter("DefaultSMSType Reason: must be Promotional or Transactional")
        if name == "MonthlySpendLimit" and not value.isdigit():
            raise invalid_parameter("MonthlySpendLimit Reason: must be a whole number of US dollars")
        if name == "DeliveryStatusSuccessSamplingRate" and not (value.isdigit() and int(value) <= 100):
            raise invalid_parameter("DeliveryStatusSuccessSamplingRate Reason: must be a percentage from 0 to 100")
        if name == "DefaultSenderID" and not _SENDER_ID.fullmatch(value):
            raise invalid_parameter("DefaultSenderID Reason: 1 to 11 letters and digits, at least one of them a letter")
    return given


def _resource_arn(resource: PlatformResource) -> str:
    return resource.arn
