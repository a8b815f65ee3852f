"""Checks an SNS message's signature the way AWS tells subscribers to: the canonical string of
the documented fields for its Type, verified with the certificate (with `cryptography`, not with
the code under test)."""

import base64

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

SIGNED_FIELDS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
    "UnsubscribeConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
}


def verify_sns_message(message: dict, certificate_pem: bytes) -> None:
    """Raises cryptography's InvalidSignature when the signature does not match."""
    text = "".join(f"{name}\n{message[name]}\n" for name in SIGNED_FIELDS[message["Type"]] if name in message)
    digest = hashes.SHA1() if message["SignatureVersion"] == "1" else hashes.SHA256()
    public_key = x509.load_pem_x509_certificate(certificate_pem).public_key()
    public_key.verify(base64.b64decode(message["Signature"]), text.encode(), padding.PKCS1v15(), digest)
