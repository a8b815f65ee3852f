"""SMS and mobile push as SNS validates them: phone numbers, platform endpoints' ARNs, and which
payload of a MessageStructure=json message each gets. Pure: no I/O."""

from __future__ import annotations

import re

from .errors import BrokerError, invalid_parameter
from .ops import (
    CheckIfPhoneNumberIsOptedOut,
    Done,
    GetSMSSandboxAccountStatus,
    ListOriginationNumbers,
    ListPhoneNumbersOptedOut,
    OptedOut,
    OptInPhoneNumber,
    PhoneNumbers,
    Result,
    SandboxStatus,
    SmsAccountOp,
)

# E.164: a country code and number, at most 15 digits, optionally after a "+". AWS also takes
# single ".", "-" or "/" between digits (as moto's recordings of it show: "+1-555-0100" is
# accepted, "+15--551234567", "+15551234567." and "/+15551234567" are not).
_E164 = re.compile(r"\+?[1-9][0-9]{1,14}")
_SEPARATORS = re.compile(r"[./-]")
_MISPLACED_SEPARATORS = re.compile(r"[./-]{2,}|^[./-]|[./-]$")
# arn:aws:sns:REGION:ACCOUNT:endpoint/PLATFORM/APPLICATION/ID
_ENDPOINT_ARN = re.compile(r"arn:aws:sns:[a-z0-9-]+:[0-9]{12}:endpoint/([A-Z_]+)/[^/]+/[0-9a-f-]+")
SINK_SETTINGS = "mobile_sink_url or mobile_sink_command"
# A publish straight to a phone number is a pending push of topic id DIRECT_PUSHES (tables.py) and
# this plus the number's digits as its subscription id: platform endpoints' ids count up from 1 and
# stay far below, and the number is read back from the id alone (after a restart too).
DIRECT_SMS_ID_BASE = 1 << 60


def is_phone_number(text: str) -> bool:
    return not _MISPLACED_SEPARATORS.search(text) and _E164.fullmatch(_SEPARATORS.sub("", text)) is not None


def e164(phone_number: str) -> str:
    """A number is_phone_number accepts, as "+" and its digits."""
    return "+" + _SEPARATORS.sub("", phone_number).lstrip("+")


def direct_sms_id(phone_number: str) -> int:
    """The subscription id of the SMS published straight to a number (is_phone_number's)."""
    return DIRECT_SMS_ID_BASE + int(e164(phone_number)[1:])


def direct_sms_number(subscription_id: int) -> str | None:
    """The number a direct_sms_id names; None for a platform endpoint's id."""
    return f"+{subscription_id - DIRECT_SMS_ID_BASE}" if subscription_id >= DIRECT_SMS_ID_BASE else None


def is_endpoint_arn(text: str) -> bool:
    return _ENDPOINT_ARN.fullmatch(text) is not None


def check_endpoint(protocol: str, endpoint: str, push_protocols: frozenset[str]) -> None:
    """An sms subscription's phone number, an application subscription's endpoint ARN; either
    needs the sink configured."""
    if protocol not in push_protocols:
        raise invalid_parameter(f"Protocol {protocol}: this broker has no SMS and mobile push sink configured (set {SINK_SETTINGS})")
    if protocol == "sms" and not is_phone_number(endpoint):
        raise BrokerError("InvalidParameter", f"Invalid SMS endpoint: {endpoint[:80]}")
    if protocol == "application" and not is_endpoint_arn(endpoint):
        raise invalid_parameter("Endpoint Reason: an application subscription's endpoint must be a platform endpoint's ARN")


def payload_key(protocol: str, endpoint: str) -> str:
    """The key of a MessageStructure=json message whose payload a subscription gets: an
    application endpoint's platform (GCM, APNS, ...), else its protocol."""
    if protocol == "application" and (match := _ENDPOINT_ARN.fullmatch(endpoint)):
        return match.group(1)
    return protocol


def sms_account_answer(op: SmsAccountOp) -> Result:
    """The account's SMS state as AWS reports it, for this broker: it is not in the SMS sandbox, has
    no origination numbers of its own (the operator's sink sends), and no number is opted out, since
    no STOP reply ever reaches it (the sink owns the conversation with the phone)."""
    match op:
        case CheckIfPhoneNumberIsOptedOut(phone_number=number) | OptInPhoneNumber(phone_number=number):
            if not is_phone_number(number):
                raise invalid_parameter("PhoneNumber Reason: input incorrectly formatted")
            return OptedOut(False) if isinstance(op, CheckIfPhoneNumberIsOptedOut) else Done()
        case ListPhoneNumbersOptedOut(next_token=token) | ListOriginationNumbers(next_token=token):
            if token is not None:  # every list is one empty page, so no token was ever handed out
                raise invalid_parameter("NextToken Reason: no such page")
            return PhoneNumbers([])
        case GetSMSSandboxAccountStatus():
            return SandboxStatus(False)
    raise TypeError(f"{type(op).__name__} is not an SMS account operation")
