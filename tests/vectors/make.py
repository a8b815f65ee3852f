"""Write the golden vectors of this version's formats (see tests/vectors/__init__.py):
`python -m tests.vectors.make`. Writing them for a version that already has them is refused:
a changed format is a new version. New native operations and results are the exception: they are
added to the current protocol version's vectors, whose existing frames must stay as they are."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from dovecote.actors import ops
from dovecote.net import frames
from dovecote.storage.framing import frame
from dovecote.storage.records import encode_record
from dovecote.storage.store import FORMAT_VERSION

from .examples import OPERATIONS, RECORDS, RESULTS

HERE = Path(__file__).parent
REQUEST_ID = 7


def protocol_path(version: int = frames.PROTOCOL_VERSION) -> Path:
    return HERE / f"native_protocol_v{version}.json"


def records_path(version: int = FORMAT_VERSION) -> Path:
    return HERE / f"records_v{version}.json"


def request_frame(op) -> bytes:
    out = bytearray()
    frames.encode_request(REQUEST_ID, op, out)
    return bytes(out)


def response_frame(result) -> bytes:
    out = bytearray()
    frames.encode_response(REQUEST_ID, result, out)
    return bytes(out)


def stored_value(record) -> bytes:
    return frame(encode_record(record))


# The opening of version 2, with a fixed nonce and key (the proof is HMAC-SHA256, so it is fixed too).
HANDSHAKE_NONCE = bytes(range(frames.NONCE_BYTES))
HANDSHAKE_KEY = ("key-id", "key-secret")


def handshake_frame(message) -> bytes:
    out = bytearray()
    frames.encode_handshake(message, out)
    return bytes(out)


def handshake_vectors() -> dict:
    key_id, secret = HANDSHAKE_KEY
    refusal = bytearray()
    frames.encode_refusal(ops.Failure("SignatureDoesNotMatch", "message-value"), refusal)
    return {
        "hello": frames.hello(2).hex(),
        "welcome": frames.welcome(2, frames.STATUS_OK).hex(),
        "welcome_tls_required": frames.welcome(2, frames.STATUS_TLS_REQUIRED).hex(),
        "challenge": handshake_frame(frames.Challenge(HANDSHAKE_NONCE)).hex(),
        "authenticate": handshake_frame(frames.Authenticate(key_id, frames.key_proof(secret, HANDSHAKE_NONCE, key_id))).hex(),
        "authenticate_without_key": handshake_frame(frames.Authenticate()).hex(),
        "authenticated": handshake_frame(frames.Authenticated(key_id)).hex(),
        "refused": bytes(refusal).hex(),
    }


def protocol_vectors() -> dict:
    return {
        "handshake": handshake_vectors(),
        "requests": {tag: request_frame(op).hex() for tag, op in OPERATIONS.items()},
        "responses": {tag: response_frame(result).hex() for tag, result in RESULTS.items()},
    }


def record_vectors() -> dict:
    return {tag: stored_value(record).hex() for tag, record in RECORDS.items()}


def added_operations(committed: dict, vectors: dict) -> dict | None:
    """The committed protocol vectors with the operations and results added since, or None if any
    committed vector changed. New kinds join the protocol version they are added in: no existing
    frame changes, and a client that does not send them is served as before."""
    for section, entries in committed.items():
        if any(vectors[section].get(name) != value for name, value in entries.items()):
            return None
    return {section: {**committed[section], **vectors[section]} for section in committed}


def main() -> int:
    written = 0
    for path, vectors in ((protocol_path(), protocol_vectors()), (records_path(), record_vectors())):
        if path.exists() and path == protocol_path():
            extended = added_operations(json.loads(path.read_text()), vectors)
            if extended is not None and extended != json.loads(path.read_text()):
                path.write_text(json.dumps(extended, indent=1, sort_keys=True) + "\n")
                print(f"added the new operations and results to {path.name}")
                written += 1
                continue
        if path.exists():
            print(f"{path.name} exists: a changed format is a new version (raise it first)", file=sys.stderr)
            continue
        path.write_text(json.dumps(vectors, indent=1, sort_keys=True) + "\n")
        print(f"wrote {path.name}")
        written += 1
    return 0 if written else 1


if __name__ == "__main__":
    raise SystemExit(main())
