"""Benchmark of reading the log back: scan-and-filter speed and reconstructing a queue's past
state, on a log of one million records written straight into a fresh LMDB store.

    python -m dovecote.bench.log [--records 1000000]
"""

from __future__ import annotations

import argparse
import tempfile
import time

from dovecote.history import LogFilter, iter_log, queue_state_at
from dovecote.storage.lmdb_store import LmdbStore
from dovecote.storage.records import MessageDeleted, MessageReceived, MessageSent, QueueCreated

BODY = "x" * 256
START_MS = 1_700_000_000_000


def write_history(store: LmdbStore, records: int) -> None:
    """Per millisecond: one message sent and received, and the one sent 1,000 ms earlier deleted,
    so about 1,000 messages are in flight at any instant."""
    store.commit([[QueueCreated(START_MS, 1, "history", {})]])
    batch = []
    for seq in range(1, records // 3 + 1):
        at = START_MS + seq
        message_id = f"00000000-0000-0000-0000-{seq:012d}"
        batch += [
            MessageSent(at, 1, "history", seq, 0, message_id, "bench", BODY, {}),
            MessageReceived(at, 1, "history", seq, message_id, 1, at + 30_000, at),
        ]
        if seq > 1000:
            batch.append(MessageDeleted(at, 1, "history", seq - 1000, f"00000000-0000-0000-0000-{seq - 1000:012d}", "deleted"))
        if len(batch) >= 3000:
            store.commit([batch])
            batch = []
    if batch:
        store.commit([batch])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dovecote-bench-log-") as data_dir:
        store = LmdbStore(data_dir, sync_mode="os", reserve_bytes=0, initial_map_bytes=4 << 30)
        try:
            write_history(store, args.records)
            total = store.last_lsn
            wanted = frozenset({f"00000000-0000-0000-0000-{total // 6:012d}"})
            started = time.perf_counter()
            found = sum(1 for _ in iter_log(store, LogFilter(message_ids=wanted)))
            scan_s = time.perf_counter() - started
            started = time.perf_counter()
            past = queue_state_at(iter_log(store, LogFilter()), "history", START_MS + total // 6)
            state_s = time.perf_counter() - started
        finally:
            store.close()
    print(f"log of {total:,} records: scan and filter {total / scan_s:,.0f} records/s (target >= 200,000), "
          f"{found} records of one message found")
    print(f"queue state at a past instant: {state_s:.2f} s (target <= 5 s), {len(past.messages)} messages then")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
