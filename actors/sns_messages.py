"""The JSON messages an SNS topic delivers, and their signatures: the notification envelope (as SQS
subscriptions receive it without RawMessageDelivery, and HTTP/S and email-json ones always), and
the SubscriptionConfirmation and UnsubscribeConfirmation notices. Pure.

Signing is RSA and costs about a quarter of a millisecond; a served broker signs off the event loop.
With `sign_later`, an envelope gets a stand-in Signature and its canonical string is kept;
`take_unsigned` hands those to the topic actor, which signs them in a worker thread and puts the
signatures in place of the stand-ins (`with_signatures`) before the records are committed.
"""

from __future__ import annotations

import base64
import datetime
import itertools
from collections.abc import Mapping, Sequence
from urllib.parse import quote

import msgspec

from dovecote.storage.records import MessageAttribute, Record

from .signing import Signer, canonical_string

UNSIGNED = "dovecote-unsigned-"  # stands in an envelope for a Signature still to be made
SUBJECTS = {
    "SubscriptionConfirmation": "AWS Notification - Subscription Confirmation",
    "UnsubscribeConfirmation": "AWS Notification - Unsubscribe Confirmation",
}


class Notice(msgspec.Struct, frozen=True):
    """A confirmation notice, in the forms its protocols take."""

    json_body: str  # http, https, email-json
    text_body: str  # email
    subject: str


class SnsMessages:
    def __init__(
        self, topic_arn: str, fifo: bool, http_url: str, signer: Signer | None, *, sign_later: bool = False
    ) -> None:
        """signer=None: messages go unsigned. sign_later: envelopes get a stand-in Signature,
        signed later from what take_unsigned() gives."""
        self.topic_arn = topic_arn
        self.fifo = fifo
        self.http_url = http_url.rstrip("/")
        self.signer = signer
        self.sign_later = sign_later
        self._unsigned: list[tuple[str, bytes, str]] = []  # (stand-in, canonical string, SignatureVersion)
        self._stand_ins = itertools.count(1)
        self._timestamp = (-1, "")  # the last wall time written out: the publishes of a cycle share it

    def _iso_timestamp(self, wall_ms: int) -> str:
        if self._timestamp[0] != wall_ms:
            self._timestamp = (wall_ms, iso_timestamp(wall_ms))
        return self._timestamp[1]

    def envelope(
        self,
        message_id: str,
        message: str,
        subject: str | None,
        attributes: Mapping[str, MessageAttribute],
        wall_ms: int,
        sequence_number: str | None,
        version: str,
        *,
        signed: bool,
        replayed: bool = False,
    ) -> tuple[str, str]:
        """The notification envelope, as the text before and after the subscription's ARN (in its
        UnsubscribeURL), which alone differs between subscriptions. ARNs need no JSON escaping.
        A FIFO topic's notifications go unsigned, as on AWS."""
        head: dict[str, object] = {"Type": "Notification", "MessageId": message_id}
        if sequence_number is not None:
            head["SequenceNumber"] = sequence_number
        head["TopicArn"] = self.topic_arn
        if subject:
            head["Subject"] = subject
        head["Message"] = message
        head["Timestamp"] = self._iso_timestamp(wall_ms)
        if not self.fifo:
            self._sign(head, version, signed, later=self.sign_later)
        if replayed:
            head["Replayed"] = True
        url = _json(self.unsubscribe_url(""))[:-1]
        before = f'{_json(head)[:-1]},"UnsubscribeURL":{url}'
        if not attributes:
            return before, '"}'
        encoded = {
            name: {
                "Type": value.data_type,
                "Value": base64.b64encode(value.binary_value).decode() if value.binary_value is not None else value.string_value,
            }
            for name, value in attributes.items()
        }
        return before, f'",{_json({"MessageAttributes": encoded})[1:]}'

    def notice(self, message_type: str, message_id: str, token: str, subscription_arn: str, wall_ms: int, version: str) -> Notice:
        """A SubscriptionConfirmation or UnsubscribeConfirmation: it carries the token and the
        SubscribeURL that confirms (again). Signed at once: notices are few."""
        subscribe_url = f"{self.http_url}/?Action=ConfirmSubscription&TopicArn={quote(self.topic_arn, safe='')}&Token={token}"
        if message_type == "SubscriptionConfirmation":
            text = (
                f"You have chosen to subscribe to the topic {self.topic_arn}.\n"
                "To confirm the subscription, visit the SubscribeURL included in this message."
            )
        else:
            text = (
                f"You have chosen to deactivate subscription {subscription_arn}.\n"
                "To cancel this operation and restore the subscription, visit the SubscribeURL included in this message."
            )
        fields: dict[str, object] = {
            "Type": message_type, "MessageId": message_id, "Token": token, "TopicArn": self.topic_arn, "Message": text,
            "SubscribeURL": subscribe_url, "Timestamp": iso_timestamp(wall_ms),
        }
        self._sign(fields, version, True, later=False)
        return Notice(_json(fields), f"{text}\n\n{subscribe_url}\n", SUBJECTS[message_type])

    def unsubscribe_url(self, subscription_arn: str) -> str:
        return f"{self.http_url}/?Action=Unsubscribe&SubscriptionArn={subscription_arn}"

    def _sign(self, fields: dict[str, object], version: str, signed: bool, *, later: bool) -> None:
        """Add SignatureVersion, and the Signature (or, signing later, its stand-in) and
        SigningCertURL when signing."""
        fields["SignatureVersion"] = version
        if signed and self.signer is not None:
            if later:
                stand_in = f"{UNSIGNED}{next(self._stand_ins)}"
                self._unsigned.append((stand_in, canonical_string(fields), version))
                fields["Signature"] = stand_in
            else:
                fields["Signature"] = self.signer.sign(fields, version)
            fields["SigningCertURL"] = self.signer.certificate_url

    def take_unsigned(self) -> list[tuple[str, bytes, str]]:
        """The signatures the envelopes made since the last call stand in for."""
        unsigned, self._unsigned = self._unsigned, []
        return unsigned


def with_signatures(records: Sequence[Record], signatures: Mapping[str, str]) -> list[Record]:
    """The records, their envelopes' stand-ins replaced by the signatures (a stand-in is found as
    the envelope's "Signature" member: inside a JSON string its quotes would be escaped)."""
    out: list[Record] = []
    for record in records:
        body = getattr(record, "body", None)
        start = body.find(f'"Signature":"{UNSIGNED}') if body is not None else -1
        if start >= 0:
            value_start = start + len('"Signature":"')
            value_end = body.index('"', value_start)
            body = body[:value_start] + signatures[body[value_start:value_end]] + body[value_end:]
            record = msgspec.structs.replace(record, body=body)
        out.append(record)
    return out


_ENCODER = msgspec.json.Encoder()


def _json(value: object) -> str:
    """Compact JSON, non-ASCII as it is: what json.dumps(ensure_ascii=False, separators=(",", ":"))
    gives, a tenth of its cost (an envelope is made for every publish)."""
    return _ENCODER.encode(value).decode()


def iso_timestamp(wall_ms: int) -> str:
    moment = datetime.datetime.fromtimestamp(wall_ms / 1000, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{wall_ms % 1000:03d}Z"


# The members of a notification as a Lambda function's SNS event names them (its URLs end in "Url").
_LAMBDA_SNS_MEMBERS = (
    ("Type", "Type"), ("MessageId", "MessageId"), ("TopicArn", "TopicArn"), ("Subject", "Subject"), ("Message", "Message"),
    ("Timestamp", "Timestamp"), ("SignatureVersion", "SignatureVersion"), ("Signature", "Signature"),
    ("SigningCertUrl", "SigningCertURL"), ("UnsubscribeUrl", "UnsubscribeURL"), ("MessageAttributes", "MessageAttributes"),
)


def lambda_event(envelope: str, subscription_arn: str) -> bytes:
    """The event a `lambda` subscription's function gets for a notification envelope, as SNS
    builds it: one record, Subject null when there is none, MessageAttributes {} when none."""
    fields = msgspec.json.decode(envelope)
    sns = {name: fields.get(source) for name, source in _LAMBDA_SNS_MEMBERS}
    sns["MessageAttributes"] = sns["MessageAttributes"] or {}
    if "SequenceNumber" in fields:
        sns["SequenceNumber"] = fields["SequenceNumber"]
    record = {"EventSource": "aws:sns", "EventVersion": "1.0", "EventSubscriptionArn": subscription_arn, "Sns": sns}
    return _ENCODER.encode({"Records": [record]})
