"""SNS's platform applications and endpoints (mobile push) as AWS validates and answers them: what
each operation stores and answers. Pure: no I/O; the platform actor (platform.py) owns one and
writes what it says to store.

An application's credentials are checked for presence, as AWS does, but not kept: this broker
delivers through the operator's sink, which holds its own. A publish to an endpoint (Publish with a
TargetArn) is a PushQueued record of topic id DIRECT_PUSHES and the endpoint's id, delivered by a
delivery actor (delivery.py) as an application subscription's pushes are; a publish to a phone
number (Publish with a PhoneNumber) likewise, under the id mobile.direct_sms_id gives the number,
and so is the one-time password CreateSMSSandboxPhoneNumber texts.

The SMS sandbox's numbers are kept (Pending with the password texted, then Verified) but restrict
nothing: this broker's account is out of the sandbox (GetSMSSandboxAccountStatus), as an account
that sends through its own gateway is.
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
    SMSSandboxNumberChanged,
    SMSSandboxNumberDeleted,
)
from dovecote.storage.store import LoadedPlatform
from dovecote.storage.tables import DIRECT_PUSHES

from . import delivery_policy, paging, sns_validation
from .errors import BrokerError, invalid_parameter, parameter_value_invalid
from .mobile import check_endpoint, direct_sms_id, direct_sms_number, e164, is_endpoint_arn, is_phone_number, payload_key
from .ops import (
    Arn,
    Attributes,
    CreatePlatformApplication,
    CreatePlatformEndpoint,
    CreateSMSSandboxPhoneNumber,
    DeleteEndpoint,
    DeletePlatformApplication,
    DeleteSMSSandboxPhoneNumber,
    Done,
    GetEndpointAttributes,
    GetPlatformApplicationAttributes,
    GetSMSAttributes,
    ListEndpointsByPlatformApplication,
    ListPlatformApplications,
    ListSMSSandboxPhoneNumbers,
    MessageAttributeValue,
    PlatformOp,
    PlatformResource,
    PlatformResources,
    PublishedMessage,
    PublishToEndpoint,
    PublishToPhoneNumber,
    Result,
    SandboxPhoneNumber,
    SandboxPhoneNumbers,
    SetEndpointAttributes,
    SetPlatformApplicationAttributes,
    SetSMSAttributes,
    VerifySMSSandboxPhoneNumber,
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
SMS_TYPES = ("Promotional", "Transactional")
MAX_CUSTOM_USER_DATA_BYTES = 2048
MAX_TOKEN_BYTES = 8192  # an APNS token is 64 characters, an FCM registration token a few hundred
MAX_SMS_CHARACTERS = 1600  # AWS: "The total size limit for a single SMS Publish action is 1,600 characters."
# Publish's SMS message attributes (AWS's SMS developer guide); AWS.MM.SMS.* (origination number,
# India's entity and template ids) are passed on unchecked.
SMS_SENDER_ID_ATTRIBUTE, SMS_TYPE_ATTRIBUTE, SMS_MAX_PRICE_ATTRIBUTE = "AWS.SNS.SMS.SenderID", "AWS.SNS.SMS.SMSType", "AWS.SNS.SMS.MaxPrice"
# The SMS sandbox, as botocore models it: a one-time password of 5 to 8 digits (ours have
# SANDBOX_PASSWORD_DIGITS), the languages it may be texted in (ours is always English), at most 10
# numbers (AWS's SMS guide).
SANDBOX_PASSWORD_DIGITS = 6
SANDBOX_MAX_NUMBERS = 10
SANDBOX_LANGUAGES = frozenset({
    "en-US", "en-GB", "es-419", "es-ES", "de-DE", "fr-CA", "fr-FR", "it-IT", "ja-JP", "pt-BR", "kr-KR", "zh-CN", "zh-TW",
})
_ONE_TIME_PASSWORD = re.compile(r"[0-9]{5,8}")
SANDBOX_MAX_RESULTS = 100
PENDING, VERIFIED = "Pending", "Verified"


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
        self.sandbox: dict[str, SMSSandboxNumberChanged] = {}  # the SMS sandbox's numbers, by number (E.164)
        # Endpoint ids key their pending publishes. After a restart the highest id of a deleted
        # endpoint may be drawn again: its pending publishes were deleted with it.
        self._next_endpoint_id = 1

    @classmethod
    def restore(cls, account_id: str, push_protocols: frozenset[str], loaded: LoadedPlatform) -> PlatformCore:
        core = cls(account_id, push_protocols)
        for record in [*loaded.applications, *loaded.endpoints, *loaded.sandbox_numbers]:
            core.apply(record)
        core.sms_attributes = loaded.sms_attributes
        return core

    def unknown_endpoint(self, arn: str) -> bool:
        """An application subscription's endpoint is a well-formed endpoint ARN naming none, as AWS
        refuses it. Without a sink, or with a malformed ARN, the topic words the refusal."""
        return "application" in self.push_protocols and is_endpoint_arn(arn) and arn not in self.endpoints

    def delivery_target(self, endpoint_id: int) -> PushTarget | None:
        """What the delivery actor of an endpoint's or a phone number's publishes works to (None: no
        such endpoint): AWS's retry policy for SMS and mobile push, no dead-letter queue (a direct
        publish has no subscription to name one)."""
        policy = delivery_policy.effective(None, None, delivery_policy.CUSTOMER_MANAGED_RETRY)
        number = direct_sms_number(endpoint_id)
        if number is not None:
            return PushTarget(DIRECT_PUSHES, number, "", endpoint_id, "", "sms", number, False, policy, "")
        for endpoint in self.endpoints.values():
            if endpoint.endpoint_id == endpoint_id:
                return PushTarget(DIRECT_PUSHES, endpoint.arn, "", endpoint_id, "", "application", endpoint.arn, False, policy, "")
        return None

    def plan(self, op: PlatformOp, region: str, at_ms: int, new_id: str, one_time_password: str) -> tuple[list[Record], Result]:
        """What op stores (applied with `apply` once committed) and answers. `new_id` is a fresh
        UUID: the id of the endpoint a CreatePlatformEndpoint makes, or of a publish's message.
        `one_time_password`: fresh random digits, for a CreateSMSSandboxPhoneNumber to text.
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
            case PublishToPhoneNumber():
                return self._publish_sms(op, at_ms, new_id)
            case CreateSMSSandboxPhoneNumber():
                return self._add_to_sandbox(op, at_ms, new_id, one_time_password)
            case VerifySMSSandboxPhoneNumber(phone_number=given, one_time_password=password):
                if not _ONE_TIME_PASSWORD.fullmatch(password):
                    raise invalid_parameter("OneTimePassword Reason: must be 5 to 8 digits")
                number = self._sandboxed(given)
                if number.one_time_password != password:
                    raise BrokerError("VerificationException", "Invalid one-time password")
                changed = msgspec.structs.replace(number, at_ms=at_ms, status=VERIFIED)
                return ([changed] if number.status != VERIFIED else []), Done()
            case DeleteSMSSandboxPhoneNumber(phone_number=given):
                return [SMSSandboxNumberDeleted(at_ms, self._sandboxed(given).phone_number)], Done()
            case ListSMSSandboxPhoneNumbers(next_token=token, max_results=size):
                if size is not None and not 1 <= size <= SANDBOX_MAX_RESULTS:
                    raise invalid_parameter(f"MaxResults Reason: must be from 1 to {SANDBOX_MAX_RESULTS}")
                listed = [SandboxPhoneNumber(n.phone_number, n.status) for _, n in sorted(self.sandbox.items())]
                chosen, next_token = paging.page(
                    listed, token, size or SANDBOX_MAX_RESULTS, paging.bad_sns_token(), _sandbox_number
                )
                return [], SandboxPhoneNumbers(chosen, next_token)
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
            case SMSSandboxNumberChanged(phone_number=number):
                self.sandbox[number] = record
            case SMSSandboxNumberDeleted(phone_number=number):
                del self.sandbox[number]

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

    def _publish_sms(self, op: PublishToPhoneNumber, at_ms: int, message_id: str) -> tuple[list[Record], Result]:
        """The "sms" payload (or the default one), stored for the number's delivery actor."""
        if not is_phone_number(op.phone_number):
            raise invalid_parameter("Phone number does not meet the E164 format")
        check_endpoint("sms", op.phone_number, self.push_protocols)
        payloads = sns_validation.validate_publish(op.message, op.subject, op.message_structure, op.message_attributes)
        _check_sms_message_attributes(op.message_attributes)
        body = payloads.get(payload_key("sms", op.phone_number), payloads["default"])
        if len(body) > MAX_SMS_CHARACTERS:
            raise invalid_parameter(f"Message Reason: an SMS message must be at most {MAX_SMS_CHARACTERS} characters long")
        return [self._text(op.phone_number, body, at_ms, message_id)], PublishedMessage(message_id)

    def _add_to_sandbox(
        self, op: CreateSMSSandboxPhoneNumber, at_ms: int, message_id: str, one_time_password: str
    ) -> tuple[list[Record], Result]:
        """A new number, or one still Pending, is texted a new password; a Verified one stays so."""
        if not is_phone_number(op.phone_number):
            raise invalid_parameter("PhoneNumber Reason: input incorrectly formatted")
        if op.language_code is not None and op.language_code not in SANDBOX_LANGUAGES:
            raise invalid_parameter(f"LanguageCode Reason: {op.language_code[:20]} is not a supported language")
        check_endpoint("sms", op.phone_number, self.push_protocols)
        number = e164(op.phone_number)
        known = self.sandbox.get(number)
        if known is not None and known.status == VERIFIED:
            return [], Done()
        if known is None and len(self.sandbox) >= SANDBOX_MAX_NUMBERS:
            # botocore lists UserError among this call's errors; the wording is ours
            raise BrokerError("UserError", f"The SMS sandbox holds at most {SANDBOX_MAX_NUMBERS} phone numbers")
        text = f"Your verification code is {one_time_password}"
        return [SMSSandboxNumberChanged(at_ms, number, PENDING, one_time_password), self._text(number, text, at_ms, message_id)], Done()

    def _sandboxed(self, given: str) -> SMSSandboxNumberChanged:
        number = self.sandbox.get(e164(given)) if is_phone_number(given) else None
        if number is None:
            raise BrokerError("ResourceNotFound", f"The phone number {given[:20]} is not in the SMS sandbox")
        return number

    @staticmethod
    def _text(phone_number: str, body: str, at_ms: int, message_id: str) -> PushQueued:
        """An SMS to a number, for its delivery actor; the log names the number."""
        return PushQueued(at_ms, DIRECT_PUSHES, e164(phone_number), direct_sms_id(phone_number), 0, message_id, body)


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


_SMS_TYPE_RULE = "must be Promotional or Transactional"
_SENDER_ID_RULE = "1 to 11 letters and digits, at least one of them a letter"


def _sms_attributes(given: dict[str, str]) -> dict[str, str]:
    """SetSMSAttributes' values, checked as AWS documents them."""
    for name, value in given.items():
        if name not in SMS_ATTRIBUTES:
            raise invalid_parameter(f"attributes Reason: {name[:80]} is not a valid SMS attribute")
        if name == "DefaultSMSType" and value not in SMS_TYPES:
            raise invalid_parameter(f"DefaultSMSType Reason: {_SMS_TYPE_RULE}")
        if name == "MonthlySpendLimit" and not value.isdigit():
            raise invalid_parameter("MonthlySpendLimit Reason: must be a whole number of US dollars")
        if name == "DeliveryStatusSuccessSamplingRate" and not (value.isdigit() and int(value) <= 100):
            raise invalid_parameter("DeliveryStatusSuccessSamplingRate Reason: must be a percentage from 0 to 100")
        if name == "DefaultSenderID" and not _SENDER_ID.fullmatch(value):
            raise invalid_parameter(f"DefaultSenderID Reason: {_SENDER_ID_RULE}")
    return given


def _check_sms_message_attributes(attributes: dict[str, MessageAttributeValue]) -> None:
    """A publish's AWS.SNS.SMS.* attributes, held to the rules of the account's defaults they stand
    in for (their types and values are refused as other message attributes are; the wording is ours)."""
    rules = {
        SMS_SENDER_ID_ATTRIBUTE: ("String", lambda value: _SENDER_ID.fullmatch(value), _SENDER_ID_RULE),
        SMS_TYPE_ATTRIBUTE: ("String", lambda value: value in SMS_TYPES, _SMS_TYPE_RULE),
        SMS_MAX_PRICE_ATTRIBUTE: ("Number", lambda value: True, "a number of US dollars"),
    }
    for name, (data_type, valid, rule) in rules.items():
        attribute = attributes.get(name)
        if attribute is None:
            continue
        if attribute.data_type != data_type:
            raise parameter_value_invalid(f"The message attribute '{name}' must be of type '{data_type}'.")
        if not valid(attribute.string_value or ""):
            raise parameter_value_invalid(f"The message attribute '{name}' has an invalid value: {rule}.")


def _sandbox_number(number: SandboxPhoneNumber) -> str:
    return number.phone_number


def _resource_arn(resource: PlatformResource) -> str:
    return resource.arn
