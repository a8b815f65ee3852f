"""A proof of a key for the broker's own HTTP endpoints (/peek, /actors, /metrics), when keys are
configured: either of

- a Signature Version 4 signature, checked as the AWS API checks it (any region and service in the
  scope: `curl --aws-sigv4 aws:amz:us-east-1:sqs --user ID:SECRET URL`). The secret never crosses
  the network, and a signature is good for 15 minutes.
- HTTP Basic with the key's id and secret (`Authorization: Basic base64(ID:SECRET)`), which is what
  Prometheus's `basic_auth` and most scrapers and browsers can send. It sends the secret itself:
  over TLS, or on loopback, only.

Failures name AWS's error code for them, as every door's do (audit.py).
"""

from __future__ import annotations

import base64
import binascii
import hmac

from dovecote.actors.errors import BrokerError
from dovecote.actors.principals import Keyring, Principal

from .credential_scope import parse_authorization
from .http_server import HttpRequest
from .sigv4 import SigV4Verifier

BASIC_CHALLENGE = 'Basic realm="dovecote", charset="UTF-8"'  # the WWW-Authenticate of a 401


class AuthenticationFailed(Exception):
    """No configured key was proven: `reason` is AWS's error code for why, `key_id` the key the
    request named ("" for none; not trusted)."""

    def __init__(self, reason: str, key_id: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.key_id = key_id


class EndpointAuthenticator:
    def __init__(self, keyring: Keyring, verifier: SigV4Verifier | None = None) -> None:
        self._keyring = keyring
        self._verifier = verifier if verifier is not None else SigV4Verifier(keyring)

    def authenticate(self, request: HttpRequest) -> Principal:
        """The principal of the key the request proves; raises AuthenticationFailed. Does not block."""
        headers = [value for name, value in request.headers if name.lower() == "authorization"]
        if not headers:
            raise AuthenticationFailed("MissingAuthenticationToken")
        if len(headers) > 1:
            raise AuthenticationFailed("IncompleteSignature")
        scheme, _, credentials = headers[0].strip().partition(" ")
        if scheme.lower() == "basic":
            return self._basic(credentials.strip())
        try:
            return self._verifier.verify(request)
        except BrokerError as error:
            raise AuthenticationFailed(error.code, _claimed_key(headers[0])) from None

    def _basic(self, credentials: str) -> Principal:
        try:
            key_id, colon, secret = base64.b64decode(credentials, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise AuthenticationFailed("IncompleteSignature") from None
        if not colon:
            raise AuthenticationFailed("IncompleteSignature", key_id)
        expected = self._keyring.secret(key_id)
        if expected is None:
            raise AuthenticationFailed("InvalidClientTokenId", key_id)
        if not hmac.compare_digest(expected.encode(), secret.encode()):
            raise AuthenticationFailed("SignatureDoesNotMatch", key_id)
        return self._keyring.principal(key_id)


def _claimed_key(header: str) -> str:
    try:
        return parse_authorization(header).access_key
    except BrokerError:
        return ""
