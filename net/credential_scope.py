"""The `Authorization` header of AWS Signature Version 4, parsed (pure; no verification here). Its
credential scope names the region a request is for, which selects that region's namespace."""

from __future__ import annotations

from typing import NamedTuple

from dovecote.actors.errors import BrokerError

ALGORITHM = "AWS4-HMAC-SHA256"
SCOPE_TERMINATOR = "aws4_request"  # the last part of every credential scope


class Authorization(NamedTuple):
    access_key: str
    date: str
    region: str
    service: str
    signed_headers: list[str]
    signature: str


def parse_authorization(header: str) -> Authorization:
    """The parts of an `Authorization: AWS4-HMAC-SHA256 Credential=..., SignedHeaders=...,
    Signature=...` header. Raises BrokerError(IncompleteSignature)."""
    algorithm, _, rest = header.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise BrokerError("IncompleteSignature", f"Unsupported authorization algorithm {algorithm[:40]!r}.")
    fields = {}
    for part in rest.split(","):
        name, sep, value = part.strip().partition("=")
        if sep:
            fields[name] = value
    try:
        access_key, date, region, service, terminator = fields["Credential"].split("/")
        signed_headers = fields["SignedHeaders"].split(";")
        signature = fields["Signature"]
    except (KeyError, ValueError):
        raise BrokerError(
            "IncompleteSignature", "Authorization header requires Credential, SignedHeaders and Signature."
        ) from None
    if terminator != SCOPE_TERMINATOR or "host" not in signed_headers:
        raise BrokerError("IncompleteSignature", "The credential scope or the signed headers are incomplete.")
    return Authorization(access_key, date, region, service, signed_headers, signature)
