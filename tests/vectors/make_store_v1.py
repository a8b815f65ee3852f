"""Write `store_v1.tar.gz`: a small data directory in format 1, written by the dovecote of format 1
(`python -m tests.vectors.make_store_v1`, run at that version; it refuses to run at any other).

tests/storage/test_store_v1.py opens a copy with the code of today and checks that every message,
topic and subscription in it is served as format 1 stored it. The workload is fixed, so the test
knows what to expect (see EXPECTED below, which the test imports).
"""

from __future__ import annotations

import io
import sys
import tarfile
import tempfile
from pathlib import Path

import trio

from dovecote.actors import ops
from dovecote.storage.lmdb_store import LmdbStore
from dovecote.storage.store import FORMAT_VERSION

from ..conftest import running_broker

HERE = Path(__file__).parent
ARCHIVE = HERE / "store_v1.tar.gz"
QUEUE_ARN = "arn:aws:sqs:us-east-1:000000000000:"
# queue -> the bodies it holds, oldest first
EXPECTED = {
    "plain": ["v1 plain one", "v1 plain two"],
    "ordered.fifo": ["v1 fifo"],
    "sse": ["v1 stored before the queue's encryption took effect"],
    "from-topic": ["v1 published"],
}


async def _workload(data_dir: Path) -> None:
    store = LmdbStore(data_dir, reserve_bytes=0)
    try:
        async with running_broker(store) as h:
            await h.ok(ops.CreateQueue("plain"))
            await h.ok(ops.SendMessage("plain", "v1 plain one", message_attributes={"kind": ops.MessageAttributeValue("String", "a")}))
            await h.ok(ops.SendMessage("plain", "v1 plain two"))
            await h.ok(ops.ReceiveMessage("plain", visibility_timeout=0))  # a delivery row, receive count 1
            await h.ok(ops.CreateQueue("ordered.fifo", {"FifoQueue": "true", "ContentBasedDeduplication": "true"}))
            await h.ok(ops.SendMessage("ordered.fifo", "v1 fifo", message_group_id="g"))
            await h.ok(ops.CreateQueue("sse", {"SqsManagedSseEnabled": "true"}))
            await h.ok(ops.SendMessage("sse", EXPECTED["sse"][0]))
            await h.ok(ops.CreateQueue("from-topic"))
            await h.ok(ops.CreateTopic("news", {"KmsMasterKeyId": "alias/aws/sns"}))
            await h.ok(ops.Subscribe("news", "sqs", QUEUE_ARN + "from-topic", {"RawMessageDelivery": "true"}))
            await h.ok(ops.Publish("news", "v1 published"))
    finally:
        store.close()


def main() -> int:
    if FORMAT_VERSION != 1:
        print(f"this is format {FORMAT_VERSION}: {ARCHIVE.name} can only be written by the dovecote of format 1", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as scratch:
        data_dir = Path(scratch) / "data"
        trio.run(_workload, data_dir)
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            tar.add(data_dir / "lmdb" / "data.mdb", arcname="lmdb/data.mdb")
    ARCHIVE.write_bytes(buffer.getvalue())
    print(f"wrote {ARCHIVE.name} ({len(buffer.getvalue())} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
