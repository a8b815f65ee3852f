"""Signing SNS messages as AWS does: an RSA signature over the message's canonical string,
SignatureVersion 1 (SHA1withRSA) or 2 (SHA256withRSA), verifiable with the certificate served at
SigningCertURL. No file I/O here: the key and certificate are made or read by the caller.

The canonical string is each signed field's name and value, one per line, in byte order of the names,
of those present: for a Notification Message, MessageId, Subject, Timestamp, TopicArn, Type; for
SubscriptionConfirmation and UnsubscribeConfirmation Message, MessageId, SubscribeURL, Timestamp,
Token, TopicArn, Type.

The key is read at the first signature, not when the broker starts (making it on a first start,
importing cryptography and checking an RSA key would cost a third of a start); `load` reads it on
the event loop's thread, before worker threads sign with it. The RSA check is skipped, as the key
is one the broker made itself (certificates.py).
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

CERTIFICATE_PATH = "/SimpleNotificationService-dovecote.pem"
NOTIFICATION_FIELDS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
CONFIRMATION_FIELDS = ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type")


def canonical_string(message: Mapping[str, object]) -> bytes:
    fields = NOTIFICATION_FIELDS if message.get("Type") == "Notification" else CONFIRMATION_FIELDS
    return "".join(f"{name}\n{message[name]}\n" for name in fields if name in message).encode()


class Signer:
    def __init__(self, private_key_pem: Callable[[], bytes], certificate_url: str) -> None:
        """private_key_pem: gives the key (PEM) when it is first needed."""
        self._private_key_pem = private_key_pem
        self._key: RSAPrivateKey | None = None
        self.certificate_url = certificate_url

    def load(self) -> None:
        """Read the key now, if not yet read. Call it on the event loop's thread before signing in
        worker threads, so that they share the one key read once."""
        if self._key is None:
            from cryptography.hazmat.primitives import serialization
            from cryptography.hazmat.primitives.asymmetric import rsa

            key = serialization.load_pem_private_key(self._private_key_pem(), password=None, unsafe_skip_rsa_key_validation=True)
            if not isinstance(key, rsa.RSAPrivateKey):
                raise ValueError("the SNS signing key must be an RSA key")
            self._key = key

    def sign(self, message: Mapping[str, object], version: str) -> str:
        """The base64 Signature of a message (SignatureVersion "1" or "2")."""
        return self.sign_canonical(canonical_string(message), version)

    def sign_canonical(self, canonical: bytes, version: str) -> str:
        """The base64 signature of a canonical string. Safe in a worker thread: `cryptography`
        releases the GIL while it signs, so signing there runs beside the event loop."""
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        self.load()
        assert self._key is not None
        algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
        signature = self._key.sign(canonical, padding.PKCS1v15(), algorithm)
        return base64.b64encode(signature).decode()


def sign_all(signer: Signer, unsigned: Sequence[tuple[str, bytes, str]]) -> dict[str, str]:
    """Signatures by stand-in, of (stand-in, canonical string, SignatureVersion)s."""
    return {stand_in: signer.sign_canonical(canonical, version) for stand_in, canonical, version in unsigned}
