"""A real broker restarted after `kill -9` on a data directory holding some 50 MiB (its messages, and the log):
recovery reads every one of them, and keeps none of the data file mapped in once it serves
(those pages used to count in its RSS, a whole data file's worth); the messages are all there."""

from dovecote.net.client import SendEntry

from .serve import ServeProcess

MESSAGES = 1_000
BODY = "m" * 24 * 1024  # ten to a batch, within its 256 KiB
MIB = 1 << 20


def mapped_bytes(pid: int, path) -> int:
    """How much of the file at `path` process `pid` has mapped in (smaps' Rss of its mappings)."""
    target, total, inside = str(path.resolve()), 0, False
    with open(f"/proc/{pid}/smaps") as smaps:
        for line in smaps:
            first = line.split(None, 1)[0]
            if "-" in first and not first.endswith(":"):  # a mapping's header line
                inside = line.rstrip("\n").endswith(" " + target)
            elif inside and first == "Rss:":
                total += int(line.split()[1]) * 1024
    return total


def test_a_restarted_broker_keeps_no_message_pages_mapped(tmp_path):
    data_dir = tmp_path / "data"
    broker = ServeProcess(data_dir).start()
    try:
        with broker.client() as client:
            client.create_queue("stored")
            batch = [SendEntry(str(i), BODY) for i in range(10)]
            for _ in range(MESSAGES // 10):
                assert not client.send_message_batch("stored", batch).failed
        broker.kill9()
        broker.start()
        assert broker.process is not None
        assert mapped_bytes(broker.process.pid, data_dir / "lmdb" / "data.mdb") < 4 * MIB
        with broker.client() as client:
            assert client.get_queue_attributes("stored")["ApproximateNumberOfMessages"] == str(MESSAGES)
            received = client.receive_message("stored", max_number_of_messages=10)
            assert [m.body for m in received] == [BODY] * 10  # read again from the pages let go
    finally:
        broker.terminate()
