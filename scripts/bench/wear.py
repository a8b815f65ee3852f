"""Flash wear: bytes the broker writes to storage per 256-byte message sent, received and deleted,
in the default durable mode, through the AWS API (boto3) and the native protocol, with 1 and 4
clients sending in batches of 1 and of 10.

    python -m dovecote.bench.wear                  # every combination, medians of 3 runs
    python -m dovecote.bench.wear --runs 5 --messages 4000 --only aws-4x10

Each client loops: send a batch, receive up to a batch, delete what it received; then the queue is
drained. The figures are the kernel's count of what the broker caused to be written
(`write_bytes` in /proc/<pid>/io) and the growth of the data file, each divided by the messages,
measured from just after the queue is created to the queue being empty. A fresh data directory and
broker per run; the target is for 4 clients in batches of 10 through the AWS API.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import urllib.request
from pathlib import Path
from typing import NamedTuple

import boto3
from botocore.config import Config

from dovecote.net.client import DeleteEntry, SendEntry

from .harness import BODY, BrokerProcess, Figure, print_figures
from .startup import written_bytes

TARGET_BYTES = 2048  # per message, 4 clients in batches of 10 through the AWS API
DATA_FILE = Path("lmdb") / "data.mdb"


class Setup(NamedTuple):
    protocol: str  # "aws" or "native"
    clients: int
    batch: int

    @property
    def name(self) -> str:
        return f"{self.protocol}-{self.clients}x{self.batch}"


SETUPS = tuple(Setup(p, c, b) for p in ("aws", "native") for c in (1, 4) for b in (1, 10))


class Wear(NamedTuple):
    written_per_message: float
    file_growth_per_message: float
    commits_per_message: float  # the broker's write transactions (/metrics)
    log_bytes_per_message: float  # the log records themselves, framed, with their keys (/metrics)

    @property
    def written_per_commit(self) -> float:
        """What one durable LMDB commit costs: the pages it copies on write (each table's changed
        leaves and their branches, the main table and the free list) and its meta page."""
        return self.written_per_message / self.commits_per_message


def log_counters(broker: BrokerProcess) -> tuple[int, int]:
    """(write transactions, log bytes appended) from the broker's /metrics."""
    with urllib.request.urlopen(f"{broker.http_endpoint}/metrics", timeout=10) as response:
        text = response.read().decode()
    values = dict(line.split(" ", 1) for line in text.splitlines() if line.startswith(LOG_COUNTERS))
    return int(float(values["dovecote_log_fsyncs_total"])), int(float(values["dovecote_log_written_bytes_total"]))


LOG_COUNTERS = ("dovecote_log_fsyncs_total ", "dovecote_log_written_bytes_total ")


class AwsClient:
    """One boto3 client: sends and receives+deletes a batch (batch 1: SendMessage, DeleteMessage)."""

    def __init__(self, endpoint: str, batch: int) -> None:
        self.sqs = boto3.client(
            "sqs", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="bench",
            aws_secret_access_key="bench", config=Config(retries={"max_attempts": 1}),
        )
        self.url = self.sqs.get_queue_url(QueueName="wear")["QueueUrl"]
        self.batch = batch
        self.entries = [{"Id": str(i), "MessageBody": BODY} for i in range(batch)]

    def send(self) -> None:
        if self.batch == 1:
            self.sqs.send_message(QueueUrl=self.url, MessageBody=BODY)
        else:
            assert not self.sqs.send_message_batch(QueueUrl=self.url, Entries=self.entries).get("Failed")

    def receive_and_delete(self) -> int:
        received = self.sqs.receive_message(QueueUrl=self.url, MaxNumberOfMessages=self.batch).get("Messages", [])
        if self.batch == 1:
            for message in received:
                self.sqs.delete_message(QueueUrl=self.url, ReceiptHandle=message["ReceiptHandle"])
        elif received:
            handles = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(received)]
            assert not self.sqs.delete_message_batch(QueueUrl=self.url, Entries=handles).get("Failed")
        return len(received)


class NativeClient:
    """One native connection, doing what AwsClient does."""

    def __init__(self, broker: BrokerProcess, batch: int) -> None:
        self.client = broker.client()
        self.batch = batch
        self.entries = [SendEntry(str(i), BODY) for i in range(batch)]

    def send(self) -> None:
        if self.batch == 1:
            self.client.send_message("wear", BODY)
        else:
            assert not self.client.send_message_batch("wear", self.entries).failed

    def receive_and_delete(self) -> int:
        received = self.client.receive_message("wear", max_number_of_messages=self.batch)
        if self.batch == 1:
            for message in received:
                self.client.delete_message("wear", message.receipt_handle)
        elif received:
            handles = [DeleteEntry(str(i), m.receipt_handle) for i, m in enumerate(received)]
            assert not self.client.delete_message_batch("wear", handles).failed
        return len(received)


def measure(setup: Setup, messages: int) -> Wear:
    """One run on a fresh broker: bytes written and data-file growth per message."""
    with tempfile.TemporaryDirectory(prefix="dovecote-wear-") as data_dir:
        broker = BrokerProcess(data_dir)
        broker.start()
        try:
            with broker.client() as admin:
                admin.create_queue("wear")
            clients = [
                AwsClient(broker.http_endpoint, setup.batch) if setup.protocol == "aws" else NativeClient(broker, setup.batch)
                for _ in range(setup.clients)
            ]
            rounds_each = max(1, messages // (setup.clients * setup.batch))
            sent = rounds_each * setup.batch * setup.clients
            assert broker.process is not None
            data_file = Path(data_dir) / DATA_FILE
            written_before, size_before = written_bytes(broker.process.pid), data_file.stat().st_size
            commits_before, log_before = log_counters(broker)
            deleted = [0] * setup.clients

            def client_work(index: int) -> None:
                for _ in range(rounds_each):
                    clients[index].send()
                    deleted[index] += clients[index].receive_and_delete()

            threads = [threading.Thread(target=client_work, args=(i,)) for i in range(setup.clients)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            while sum(deleted) < sent:  # what was left in flight or not yet received
                deleted[0] += clients[0].receive_and_delete()
            written = written_bytes(broker.process.pid) - written_before
            growth = data_file.stat().st_size - size_before
            commits, log_bytes = (after - before for after, before in zip(log_counters(broker), (commits_before, log_before)))
        finally:
            broker.stop()
    return Wear(written / sent, growth / sent, commits / sent, log_bytes / sent)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--messages", type=int, default=2000, help="messages per run")
    parser.add_argument("--only", action="append", choices=[s.name for s in SETUPS], help="run only these (repeatable)")
    args = parser.parse_args()
    figures: list[Figure] = []
    for setup in SETUPS:
        if args.only and setup.name not in args.only:
            continue
        runs = [measure(setup, args.messages) for _ in range(args.runs)]
        written = statistics.median(run.written_per_message for run in runs)
        growth = statistics.median(run.file_growth_per_message for run in runs)
        commits = statistics.median(run.commits_per_message for run in runs)
        per_commit = statistics.median(run.written_per_commit for run in runs)
        log_bytes = statistics.median(run.log_bytes_per_message for run in runs)
        is_target = setup == Setup("aws", 4, 10)
        label = f"{'AWS API' if setup.protocol == 'aws' else 'native'}, {setup.clients} client{'s' * (setup.clients > 1)}, batches of {setup.batch}"
        figures.append(Figure(f"{label}: written per message", written, "B", f"<= {TARGET_BYTES}" if is_target else "(reported)",
                              written <= TARGET_BYTES or not is_target))
        figures.append(Figure(f"{label}: data file growth per message", growth, "B", "(reported)", True))
        figures.append(Figure(f"{label}: log records per message", log_bytes, "B", "(reported)", True))
        figures.append(Figure(f"{label}: commits per message", commits, "", "(reported)", True))
        figures.append(Figure(f"{label}: written per commit", per_commit, "B", "(reported)", True))
    print(f"medians of {args.runs} runs of {args.messages:,} messages, 256-byte bodies")
    print_figures(figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
