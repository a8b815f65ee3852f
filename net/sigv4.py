"""AWS Signature Version 4 verification for the AWS API (the `--access-key` mode). Standard library
only: the broker recomputes the signature itself.

Theory of operation. A client signs a digest of its request with a key derived from its secret;
the broker, which knows the secret, rebuilds the same digest from the request as it arrived and
compares the two signatures in constant time. The steps are AWS's, for the services other than S3:

1. The canonical request: the method; the path with `.`, `..` and empty segments removed and URI
   encoded (so a path that arrived percent-encoded is encoded a second time, as the SDKs sign it);
   the query parameters, decoded as a form is (`+` is a space, as the gateway reads them) and
   re-encoded with only RFC 3986's unreserved characters left as they are, sorted by name, then
   value; the headers the client lists as signed, names lower-cased, each value trimmed with inner
   runs of whitespace made one space, repeated headers joined with commas, sorted by name; that list
   of names; and the payload's SHA-256, or the client's X-Amz-Content-SHA256 header when it sends one
   (checked against the body first, unless it says UNSIGNED-PAYLOAD).
2. The string to sign: the algorithm, the X-Amz-Date timestamp, the credential scope
   (date/region/service/aws4_request, as the client names them) and the canonical request's SHA-256.
3. The signing key: HMAC-SHA256 chained over the date, region, service and "aws4_request", starting
   from "AWS4" + secret; the signature is the hex HMAC of the string to sign under that key.

Checked in tests/net/test_sigv4.py against AWS's published test suite (tests/vectors/sigv4_suite.json)
and against requests signed by botocore. Only the Authorization header is read: presigned query
strings are not accepted.

The same steps sign the requests the broker itself sends to a remote (net/remote_api.py, the
shovels): `authorization_headers` adds X-Amz-Date and Authorization to a request about to go out.
"""

from __future__ import annotations

import calendar
import hashlib
import hmac
import time
from collections.abc import Iterable
from urllib.parse import quote, unquote_to_bytes

from dovecote.actors.errors import BrokerError
from dovecote.actors.principals import Keyring, Principal

from .credential_scope import ALGORITHM, SCOPE_TERMINATOR, parse_authorization
from .http_server import HttpRequest

MAX_CLOCK_SKEW_S = 15 * 60
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
CONTENT_SHA256_HEADER = "x-amz-content-sha256"


def _uri_encode(text: str | bytes) -> str:
    # quote() never encodes letters, digits and "_.-~"; with no other character safe, what it
    # leaves is exactly RFC 3986's unreserved set. Text is encoded as UTF-8.
    return quote(text, safe="")


def canonical_uri(path: str) -> str:
    """The path with dot segments and empty segments removed, keeping a leading and a trailing slash,
    then URI-encoded (UTF-8) segment by segment."""
    segments: list[str] = []
    for segment in path.split("/"):
        if segment == "..":
            if segments:
                segments.pop()
        elif segment and segment != ".":
            segments.append(segment)
    trailing_slash = "/" if segments and path.endswith("/") else ""
    return "/" + "/".join(_uri_encode(segment) for segment in segments) + trailing_slash


def canonical_query(query: str) -> str:
    """The query string's parameters decoded, re-encoded and sorted (by name, then value)."""
    if not query:
        return ""
    pairs = []
    for parameter in query.split("&"):
        if parameter:
            name, _, value = parameter.partition("=")
            pairs.append((_reencoded(name), _reencoded(value)))
    return "&".join(f"{name}={value}" for name, value in sorted(pairs))


def _reencoded(form_text: str) -> str:
    # Bytes, not text, in between: a percent-escape that is not UTF-8 must come out as it went in.
    return _uri_encode(unquote_to_bytes(form_text.replace("+", " ")))


def canonical_request(request: HttpRequest, signed_headers: Iterable[str]) -> str:
    """The canonical request of `request` over the headers named in `signed_headers` (a signed
    header the request lacks counts as empty)."""
    values: dict[str, list[str]] = {}
    for name, value in request.headers:
        values.setdefault(name.lower(), []).append(" ".join(value.split()))
    names = sorted({name.lower().strip() for name in signed_headers})
    path, _, query = request.target.partition("?")
    content_hashes = values.get(CONTENT_SHA256_HEADER)
    payload_hash = content_hashes[-1] if content_hashes else hashlib.sha256(request.body).hexdigest()
    return "\n".join(
        [
            request.method.upper(),
            canonical_uri(path),
            canonical_query(query),
            "".join(f"{name}:{','.join(values.get(name, ()))}\n" for name in names),
            ";".join(names),
            payload_hash,
        ]
    )


def string_to_sign(timestamp: str, region: str, service: str, canonical: str) -> str:
    """What the signature covers: the canonical request, by its digest, in its credential scope."""
    scope = f"{timestamp[:8]}/{region}/{service}/{SCOPE_TERMINATOR}"
    return "\n".join([ALGORITHM, timestamp, scope, hashlib.sha256(canonical.encode()).hexdigest()])


def signature(secret: str, date: str, region: str, service: str, text_to_sign: str) -> str:
    """The hex signature of `text_to_sign` under the key derived from `secret` for the scope."""
    key = ("AWS4" + secret).encode()
    for scope_part in (date, region, service, SCOPE_TERMINATOR):
        key = hmac.digest(key, scope_part.encode(), "sha256")
    return hmac.digest(key, text_to_sign.encode(), "sha256").hex()


def authorization_headers(
    request: HttpRequest, access_key: str, secret: str, region: str, service: str, now_s: float | None = None
) -> list[tuple[str, str]]:
    """The headers that sign `request` (which must carry its Host header) as `access_key`: its own
    headers, X-Amz-Date and Authorization, every header but Authorization signed."""
    timestamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now_s is None else now_s))
    headers = [*request.headers, ("X-Amz-Date", timestamp)]
    names = sorted({name.lower() for name, _ in headers})
    canonical = canonical_request(request._replace(headers=headers), names)
    text = string_to_sign(timestamp, region, service, canonical)
    proof = signature(secret, timestamp[:8], region, service, text)
    credential = f"{access_key}/{timestamp[:8]}/{region}/{service}/{SCOPE_TERMINATOR}"
    return [*headers, ("Authorization", f"{ALGORITHM} Credential={credential}, SignedHeaders={';'.join(names)}, Signature={proof}")]


class SigV4Verifier:
    def __init__(self, keyring: Keyring, max_clock_skew_s: float = MAX_CLOCK_SKEW_S) -> None:
        self._keyring = keyring
        self._max_clock_skew_s = max_clock_skew_s

    def verify(self, request: HttpRequest, now_s: float | None = None) -> Principal:
        """The principal of the key that signed the request; raises BrokerError with AWS's code
        when no known key did. Does not block."""
        headers = {name.lower(): value for name, value in request.headers}
        if "authorization" not in headers:
            raise BrokerError("MissingAuthenticationToken", "Request is missing Authentication Token.")
        authorization = parse_authorization(headers["authorization"])
        secret = self._keyring.secret(authorization.access_key)
        if secret is None:
            raise BrokerError("InvalidClientTokenId", "The security token included in the request is invalid.")
        timestamp = headers.get("x-amz-date", "")
        try:
            signed_at = calendar.timegm(time.strptime(timestamp, "%Y%m%dT%H%M%SZ"))
        except ValueError:
            raise BrokerError("IncompleteSignature", "The request must carry a valid X-Amz-Date header.") from None
        if timestamp[:8] != authorization.date:
            raise BrokerError("SignatureDoesNotMatch", "The credential date does not match X-Amz-Date.")
        now_s = time.time() if now_s is None else now_s
        if abs(now_s - signed_at) > self._max_clock_skew_s:
            raise BrokerError("RequestExpired", f"Request has expired: signed at {timestamp}.")
        content_hash = headers.get(CONTENT_SHA256_HEADER)
        if content_hash not in (None, UNSIGNED_PAYLOAD) and content_hash != hashlib.sha256(request.body).hexdigest():
            raise BrokerError("SignatureDoesNotMatch", "The body does not match X-Amz-Content-SHA256.")
        text_to_sign = string_to_sign(
            timestamp, authorization.region, authorization.service,
            canonical_request(request, authorization.signed_headers),
        )
        expected = signature(secret, authorization.date, authorization.region, authorization.service, text_to_sign)
        # Bytes: compare_digest refuses str with characters beyond ASCII, which a forged header may carry.
        if not hmac.compare_digest(expected.encode(), authorization.signature.encode()):
            raise BrokerError(
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided.",
            )
        return self._keyring.principal(authorization.access_key)
