"""SNS signatures, checked with `cryptography` against the canonical string as AWS documents it
(built here by hand, not with the code under test)."""

import base64
import datetime

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from dovecote.actors.certificates import new_key_and_certificate
from dovecote.actors.signing import Signer, sign_all

KEY, CERTIFICATE = new_key_and_certificate("test", datetime.datetime(2026, 11, 23, tzinfo=datetime.UTC))

NOTIFICATION = {
    "Type": "Notification",
    "MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
    "TopicArn": "arn:aws:sns:us-west-2:123456789012:MyTopic",
    "Subject": "My First Message",
    "Message": "Hello world!",
    "Timestamp": "2012-05-02T00:54:06.655Z",
    "SignatureVersion": "1",
    "UnsubscribeURL": "https://example.com/?Action=Unsubscribe",
}


def verify(message, version):
    signed = (
        f"Message\n{message['Message']}\nMessageId\n{message['MessageId']}\n"
        + (f"Subject\n{message['Subject']}\n" if "Subject" in message else "")
        + f"Timestamp\n{message['Timestamp']}\nTopicArn\n{message['TopicArn']}\nType\n{message['Type']}\n"
    ).encode()
    public_key = x509.load_pem_x509_certificate(CERTIFICATE).public_key()
    digest = hashes.SHA1() if version == "1" else hashes.SHA256()
    public_key.verify(base64.b64decode(message["Signature"]), signed, padding.PKCS1v15(), digest)


@pytest.mark.parametrize("version", ["1", "2"])
def test_a_notification_signature_verifies_with_the_certificate(version):
    signer = Signer(lambda: KEY, "http://127.0.0.1:7481/cert.pem")
    message = {**NOTIFICATION, "Signature": signer.sign(NOTIFICATION, version)}
    verify(message, version)
    without_subject = {k: v for k, v in NOTIFICATION.items() if k != "Subject"}
    verify({**without_subject, "Signature": signer.sign(without_subject, version)}, version)


def test_a_changed_message_no_longer_verifies():
    signer = Signer(lambda: KEY, "http://127.0.0.1:7481/cert.pem")
    message = {**NOTIFICATION, "Signature": signer.sign(NOTIFICATION, "2")}
    with pytest.raises(InvalidSignature):
        verify({**message, "Message": "Hello world?"}, "2")
    with pytest.raises(InvalidSignature):
        verify(message, "1")  # signed with SHA256, checked as SHA1


def test_envelopes_signed_later_carry_the_signature_of_their_own_content():
    """A topic that signs later (in a worker thread) leaves a stand-in in each envelope; the
    signatures made from its canonical strings replace exactly those stand-ins, even when the
    message itself contains text that looks like one."""
    import json as json_module

    from dovecote.actors.messages import QueueTarget
    from dovecote.actors.ops import Publish
    from dovecote.actors.sns_messages import with_signatures
    from dovecote.actors.topic_core import TopicCore, TopicOptions

    from ..sns_verify import verify_sns_message

    arn = "arn:aws:sns:us-east-1:000000000000:t"
    signer = Signer(lambda: KEY, "http://127.0.0.1:7481/cert.pem")
    core = TopicCore(1, "t", {}, arn, options=TopicOptions(signer=signer, sign_later=True))
    queue_arn = "arn:aws:sqs:us-east-1:000000000000:q"
    targets = {queue_arn: QueueTarget(2, "q", queue_arn, False)}
    core.subscribe("sqs", queue_arn, {}, 0)
    tricky = 'looks like "Signature":"dovecote-unsigned-1" but is the message'
    prepared = [core.prepare_publish(Publish("t", text), targets, 0.0, 1_700_000_000_000) for text in ("a", tricky)]
    records = [record for p in prepared for _, record in p.deliveries]
    assert all('"Signature":"dovecote-unsigned-' in record.body for record in records)
    unsigned = core.messages.take_unsigned()
    assert len(unsigned) == 2 and core.messages.take_unsigned() == []
    signed = with_signatures(records, sign_all(signer, unsigned))
    envelopes = [json_module.loads(record.body) for record in signed]
    assert [e["Message"] for e in envelopes] == ["a", tricky]
    for envelope in envelopes:
        verify_sns_message(envelope, CERTIFICATE)
