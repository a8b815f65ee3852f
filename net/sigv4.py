"""AWS Signature Version 4 verification for the AWS API (the `--access-key` mode).

The signature is recomputed with botocore's signer — the reference implementation the SDKs
themselves sign with — over exactly the headers the client says it signed, and compared in
constant time. botocore is an optional dependency (`pip install 'dovecote[auth]'`); it is imported
only when this mode is configured.
"""

from __future__ import annotations

import calendar
import hashlib
import hmac
import time
from collections.abc import Mapping

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.compat import HTTPHeaders
from botocore.credentials import Credentials

from dovecote.actors.errors import BrokerError

from .credential_scope import parse_authorization
from .http_server import HttpRequest

MAX_CLOCK_SKEW_S = 15 * 60
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"


class _Recompute(SigV4Auth):
    """botocore's signer, limited to the headers the client signed."""

    def __init__(self, credentials: Credentials, service: str, region: str, signed_headers: list[str]) -> None:
        super().__init__(credentials, service, region)
        self._signed_headers = signed_headers

    def headers_to_sign(self, request: AWSRequest) -> HTTPHeaders:
        headers = HTTPHeaders()
        for name in self._signed_headers:
            headers[name] = request.headers.get(name, "")
        return headers


class SigV4Verifier:
    def __init__(self, secret_keys: Mapping[str, str], max_clock_skew_s: float = MAX_CLOCK_SKEW_S) -> None:
        self._secret_keys = dict(secret_keys)
        self._max_clock_skew_s = max_clock_skew_s

    def verify(self, request: HttpRequest, now_s: float | None = None) -> None:
        """Returns when the request is signed by a known key; raises BrokerError with AWS's code."""
        headers = {name.lower(): value for name, value in request.headers}
        if "authorization" not in headers:
            raise BrokerError("MissingAuthenticationToken", "Request is missing Authentication Token.")
        authorization = parse_authorization(headers["authorization"])
        secret = self._secret_keys.get(authorization.access_key)
        if secret is None:
            raise BrokerError("InvalidClientTokenId", "The security token included in the request is invalid.")
        timestamp = headers.get("x-amz-date", "")
        try:
            signed_at = calendar.timegm(time.strptime(timestamp, "%Y%m%dT%H%M%SZ"))
        except ValueError:
            raise BrokerError("IncompleteSignature", "The request must carry a valid X-Amz-Date header.") from None
        if not timestamp.startswith(authorization.date):
            raise BrokerError("SignatureDoesNotMatch", "The credential date does not match X-Amz-Date.")
        now_s = time.time() if now_s is None else now_s
        if abs(now_s - signed_at) > self._max_clock_skew_s:
            raise BrokerError("RequestExpired", f"Request has expired: signed at {timestamp}.")
        content_hash = headers.get("x-amz-content-sha256")
        if content_hash not in (None, UNSIGNED_PAYLOAD) and content_hash != hashlib.sha256(request.body).hexdigest():
            raise BrokerError("SignatureDoesNotMatch", "The body does not match X-Amz-Content-SHA256.")
        aws_request = AWSRequest(
            method=request.method,
            url=f"http://{headers.get('host', '')}{request.target}",
            headers={name: value for name, value in request.headers},
            data=request.body,
        )
        aws_request.context["timestamp"] = timestamp
        signer = _Recompute(
            Credentials(authorization.access_key, secret), authorization.service, authorization.region,
            authorization.signed_headers,
        )
        expected = signer.signature(signer.string_to_sign(aws_request, signer.canonical_request(aws_request)), aws_request)
        if not hmac.compare_digest(expected, authorization.signature):
            raise BrokerError(
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided.",
            )
