"""Write the golden vectors of this version's formats (see tests/vectors/__init__.py):
`python -m tests.vectors.make`. Writing them for a version that already has them is refused:
a changed format is a new version."""

from __future__ import annotations

import json
import sys
from pathlib import Path

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


def protocol_vectors() -> dict:
    return {
        "requests": {tag: request_frame(op).hex() for tag, op in OPERATIONS.items()},
        "responses": {tag: response_frame(result).hex() for tag, result in RESULTS.items()},
    }


def record_vectors() -> dict:
    return {tag: stored_value(record).hex() for tag, record in RECORDS.items()}


def main() -> int:
    written = 0
    for path, vectors in ((protocol_path(), protocol_vectors()), (records_path(), record_vectors())):
        if path.exists():
            print(f"{path.name} exists: a changed format is a new version (raise it first)", file=sys.stderr)
            continue
        path.write_text(json.dumps(vectors, indent=1, sort_keys=True) + "\n")
        print(f"wrote {path.name}")
        written += 1
    return 0 if written else 1


if __name__ == "__main__":
    raise SystemExit(main())
