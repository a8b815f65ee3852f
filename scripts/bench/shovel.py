"""Shovels: how fast a backlog drains to a remote after an outage, what each forwarded message costs
the local broker, and how much the draining slows local senders.

Each run: a remote (a second `dovecote serve` with a key, or moto's server when moto is installed)
is down while the local broker's up shovel has a backlog of N messages sent to it; then the remote
starts, and the time from its first answer until it holds all N is the drain. Meanwhile, once while
the link is still down and once while it drains, a producer sends batches of 10 into another local
queue (4 connections × 8 pipelined), and the two rates are compared. Medians of the runs.

`python -m dovecote.bench.shovel [--quick] [--runs N]`
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import trio

from dovecote.actors.ops import CreateQueue, GetQueueAttributes

from dovecote.net.client import BlockingClient

from .harness import BrokerProcess, Figure, Security, broker_cpu_s, free_port, print_figures, produce, stop_process

REMOTE_KEY = ("AKIDBENCH", "bench-remote-secret")
ACCOUNT = "000000000000"


def shovel_config(directory: str, endpoint: str, queue_url: str, key: tuple[str, str]) -> str:
    path = Path(directory) / "shovel.toml"
    path.write_text(
        f'[remote.remote]\nendpoint_url = "{endpoint}"\nregion = "us-east-1"\naccess_key_id = "{key[0]}"\n'
        'secret_access_key_env = "BENCH_REMOTE_SECRET"\n\n'
        f'[[shovel]]\nname = "up"\nfrom = "backlog"\nto = "remote:{queue_url}"\nbackoff_initial_s = 0.05\nbackoff_max_s = 0.2\n'
    )
    return str(path)


class DovecoteRemote:
    def __init__(self, directory: str) -> None:
        key = Security(("--access-key", ":".join(REMOTE_KEY)), access_key=REMOTE_KEY)
        self.broker = BrokerProcess(os.path.join(directory, "remote"), security=key)
        self.endpoint = f"http://127.0.0.1:{self.broker.http_port}"
        self.queue_url = f"{self.endpoint}/{ACCOUNT}/backlog"
        self.key = REMOTE_KEY

    def start(self) -> None:
        self.broker.start()
        with BlockingClient("127.0.0.1", self.broker.port, access_key=REMOTE_KEY) as client:
            client.call(CreateQueue("backlog"))

    def count(self) -> int:
        with BlockingClient("127.0.0.1", self.broker.port, access_key=REMOTE_KEY) as client:
            attributes = client.call(GetQueueAttributes("backlog", ["ApproximateNumberOfMessages"])).attributes
        return int(attributes["ApproximateNumberOfMessages"])

    def stop(self) -> None:
        self.broker.stop()


class MotoRemote:
    def __init__(self, directory: str) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.queue_url = f"{self.endpoint}/123456789012/backlog"
        self.key = ("test", "test")
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        import boto3

        self.process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._sqs = boto3.client("sqs", endpoint_url=self.endpoint, region_name="us-east-1",
                                 aws_access_key_id="test", aws_secret_access_key="test")
        deadline = time.monotonic() + 60
        while True:
            try:
                self._sqs.create_queue(QueueName="backlog")
                return
            except Exception:  # not answering yet
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def count(self) -> int:
        return int(self._sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["ApproximateNumberOfMessages"])
                   ["Attributes"]["ApproximateNumberOfMessages"])

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)


def one_run(make_remote: Callable[[str], DovecoteRemote | MotoRemote], backlog: int, producer_messages: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="dovecote-bench-shovel-") as directory:
        remote = make_remote(directory)
        config = shovel_config(directory, remote.endpoint, remote.queue_url, remote.key)
        os.environ["BENCH_REMOTE_SECRET"] = remote.key[1]
        local = BrokerProcess(os.path.join(directory, "local"), ("--config", config))
        local.start()
        try:
            with local.client() as client:
                client.call(CreateQueue("backlog"))
                client.call(CreateQueue("other"))
            trio.run(produce, local.port, "backlog", backlog, 4, 8)
            cpu_before = broker_cpu_s(local.process.pid)
            alone = trio.run(produce, local.port, "other", producer_messages, 4, 8)
            producer_cpu_s = broker_cpu_s(local.process.pid) - cpu_before
            cpu_before = broker_cpu_s(local.process.pid)
            remote.start()
            started = time.perf_counter()
            during = trio.run(produce, local.port, "other", producer_messages, 4, 8)
            while remote.count() < backlog:
                time.sleep(0.05)
            drained_s = time.perf_counter() - started
            # The producer's messages cost what they cost alone; the rest is the shovel's.
            shovel_cpu_s = broker_cpu_s(local.process.pid) - cpu_before - producer_cpu_s
            return dict(rate=backlog / drained_s, drain_s=drained_s, alone=alone, during=during, cpu_us=shovel_cpu_s * 1e6 / backlog)
        finally:
            local.stop()
            remote.stop()


def run(quick: bool, runs: int) -> list[Figure]:
    # produce() sends in whole rounds of its 4 x 8 tasks' batches of 10: multiples of 320 messages.
    backlog = 9_920 if quick else 99_840
    producer_messages = 19_840 if quick else 49_920
    figures: list[Figure] = []
    dovecote_runs = [one_run(DovecoteRemote, backlog, producer_messages) for _ in range(runs)]
    rate = statistics.median(r["rate"] for r in dovecote_runs)
    figures.append(Figure(f"drain a {backlog:,}-message backlog to a second dovecote", rate, "msg/s", ">= 5,000", rate >= 5000))
    figures.append(Figure("  time to drain it", statistics.median(r["drain_s"] for r in dovecote_runs), "s", "(reported)", True))
    figures.append(Figure("  local broker CPU per forwarded message",
                          statistics.median(r["cpu_us"] for r in dovecote_runs), "us", "(reported)", True))
    slowdown = statistics.median(1 - r["during"] / r["alone"] for r in dovecote_runs) * 100
    figures.append(Figure("  local producer, link down (batches of 10, 4 x 8)", statistics.median(r["alone"] for r in dovecote_runs),
                          "msg/s", "(reported)", True))
    figures.append(Figure("  the same while the backlog drains", statistics.median(r["during"] for r in dovecote_runs),
                          "msg/s", "(reported)", True))
    figures.append(Figure("  senders slowed by draining", slowdown, "%", "<= 20%", slowdown <= 20))
    if importlib.util.find_spec("moto") is None:
        print("moto is not installed: its figure is left out")
        return figures
    moto_backlog = 320 if quick else 1_920  # moto takes tens of messages a second
    moto_runs = [one_run(MotoRemote, moto_backlog, producer_messages) for _ in range(runs)]
    figures.append(Figure(f"drain a {moto_backlog:,}-message backlog to moto's server", statistics.median(r["rate"] for r in moto_runs),
                          "msg/s", "(reported)", True))
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print_figures(run(args.quick, args.runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
