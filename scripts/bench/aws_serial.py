"""The AWS API one request at a time: one boto3 client, each request waiting for the one before,
256-byte bodies, against a real `dovecote serve` (default sync mode) and, when it is installed,
fauxqs (an SQS emulator in Node, persisting to SQLite) in the same run, turn about.

    python -m dovecote.bench.aws_serial --runs 3
    python -m dovecote.bench.aws_serial --fauxqs PREFIX --node NODE --runs 3

PREFIX is where fauxqs was installed (`npm install --prefix PREFIX fauxqs`; it needs Node 22.5 or
later for its SQLite); also read from DOVECOTE_BENCH_FAUXQS, and NODE from DOVECOTE_BENCH_NODE
(default `node`). Without it, dovecote alone is measured. fauxqs is started on a loopback port with
a temporary data directory and stopped by its PID. Each figure is the median of the runs; the
ratio is dovecote's over fauxqs's (for the round trip, fauxqs's over dovecote's: above 1 is
dovecote faster). CPU per request is each server's user+system time (/proc) over its requests.
The client's own share is measured too: boto3's SendMessage against a server that answers at once.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import NamedTuple

from dovecote.actors.sqs_results import md5_of_body

from .aws import client
from .harness import BODY, broker_cpu_s, free_port, running_broker, stop_process

WORKLOADS = ("produce b=1", "produce b=10", "consume b=1", "consume b=10", "round trip p50")
# fauxqs on its own data directory, on a port, logging nothing: its CLI takes no data directory.
FAUXQS_START = (
    "import('fauxqs').then(m => m.startFauxqs({port: Number(process.env.PORT), dataDir: process.env.DATA_DIR,"
    " logger: false}))"
)


class Server(NamedTuple):
    name: str
    endpoint: str
    pid: int


class Figures(NamedTuple):
    rates: dict[str, float]  # workload -> msg/s, or ms for the round trip
    cpu_ms_per_request: float


def measure(server: Server, messages: int, round_trips: int) -> Figures:
    """The five workloads through one boto3 client, on a fresh queue."""
    sqs = client(server.endpoint)
    url = sqs.create_queue(QueueName=f"serial-{time.monotonic_ns()}")["QueueUrl"]
    entries = [{"Id": str(i), "MessageBody": BODY} for i in range(10)]
    rates: dict[str, float] = {}
    requests = 0
    cpu_before = broker_cpu_s(server.pid)

    def timed(name: str, count: int, one: Callable[[], int]) -> None:
        nonlocal requests
        started = time.perf_counter()
        done = 0
        while done < count:
            done += one()
            requests += 1
        rates[name] = done / (time.perf_counter() - started)

    timed("produce b=1", messages, lambda: sqs.send_message(QueueUrl=url, MessageBody=BODY) and 1)
    timed("produce b=10", messages, lambda: len(sqs.send_message_batch(QueueUrl=url, Entries=entries)["Successful"]))

    def consume(batch: int) -> int:
        nonlocal requests
        received = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=batch).get("Messages", [])
        if batch == 1:
            for message in received:
                sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        elif received:
            sqs.delete_message_batch(
                QueueUrl=url, Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(received)]
            )
        requests += 1 if received else 0  # the delete
        if not received:
            raise RuntimeError(f"{server.name}: the queue ran dry")
        return len(received)

    timed("consume b=1", messages, lambda: consume(1))
    timed("consume b=10", messages, lambda: consume(10))
    times = []
    for _ in range(round_trips):
        started = time.perf_counter()
        sqs.send_message(QueueUrl=url, MessageBody=BODY)
        (message,) = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1)["Messages"]
        sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        times.append(time.perf_counter() - started)
    requests += 3 * round_trips
    rates["round trip p50"] = statistics.median(times) * 1000
    return Figures(rates, (broker_cpu_s(server.pid) - cpu_before) * 1000 / requests)


def client_alone_ms(requests: int) -> float:
    """The p50 of one boto3 SendMessage against a loopback server that answers each at once with a
    canned response: what the client itself costs of a round trip."""
    body = b'{"MessageId":"00000000-0000-4000-8000-000000000000","MD5OfMessageBody":"%s"}' % md5_of_body(BODY).encode()
    answer = b"HTTP/1.1 200 \r\nContent-Type: application/x-amz-json-1.0\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        connection, _ = listener.accept()
        with connection:
            pending = b""
            while data := connection.recv(65536):
                pending += data
                while b"\r\n\r\n" in pending:
                    head, _, rest = pending.partition(b"\r\n\r\n")
                    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")))
                    if len(rest) < length:
                        break
                    pending = rest[length:]
                    connection.sendall(answer)

    threading.Thread(target=serve, daemon=True).start()
    endpoint = f"http://127.0.0.1:{listener.getsockname()[1]}"
    sqs, url = client(endpoint), f"{endpoint}/000000000000/alone"
    times = []
    with listener:
        for _ in range(requests):
            started = time.perf_counter()
            sqs.send_message(QueueUrl=url, MessageBody=BODY)
            times.append(time.perf_counter() - started)
    sqs.close()
    return statistics.median(times) * 1000


@contextlib.contextmanager
def running_fauxqs(prefix: str, node: str) -> Iterator[Server]:
    """fauxqs from its install prefix, on a loopback port and a temporary data directory."""
    with tempfile.TemporaryDirectory(prefix="dovecote-bench-fauxqs-") as data_dir:
        port = free_port()
        process = subprocess.Popen(
            [node, "--no-warnings", "--input-type=module", "-e", FAUXQS_START],
            cwd=prefix,
            env={**os.environ, "PORT": str(port), "DATA_DIR": data_dir, "FAUXQS_HOST": "127.0.0.1"},
        )
        try:
            endpoint = f"http://127.0.0.1:{port}"
            _wait_serving(process, endpoint)
            yield Server("fauxqs", endpoint, process.pid)
        finally:
            stop_process(process)


def _wait_serving(process: subprocess.Popen, endpoint: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"fauxqs exited with code {process.returncode} before it served (it needs Node 22.5 or later)")
        try:
            client(endpoint).list_queues()
            return
        except Exception:  # noqa: BLE001 - not listening yet
            time.sleep(0.05)
    raise SystemExit("fauxqs did not serve within 30 s")


@contextlib.contextmanager
def running_dovecote() -> Iterator[Server]:
    with running_broker() as broker:
        assert broker.process is not None
        yield Server("dovecote", broker.http_endpoint, broker.process.pid)


def fauxqs_prefix(option: str | None) -> str | None:
    """The fauxqs install prefix named, checked; None when none is."""
    prefix = option or os.environ.get("DOVECOTE_BENCH_FAUXQS")
    if prefix and not os.path.isdir(os.path.join(prefix, "node_modules", "fauxqs")):
        raise SystemExit(f"no fauxqs under {prefix}: install it with `npm install --prefix {prefix} fauxqs`")
    return prefix or None


def table(results: dict[str, list[Figures]]) -> str:
    """Medians per server and workload, and dovecote against fauxqs when both ran."""
    names = list(results)
    lines = [f"{'workload':<16}" + "".join(f"{name:>14}" for name in names) + ("   ratio" if len(names) == 2 else "")]
    for workload in (*WORKLOADS, "CPU ms/request"):
        values = [
            statistics.median(f.cpu_ms_per_request if workload == "CPU ms/request" else f.rates[workload] for f in results[name])
            for name in names
        ]
        unit = " ms" if workload in ("round trip p50", "CPU ms/request") else "/s"
        line = f"{workload:<16}" + "".join(f"{value:>11,.2f}{unit:<3}" if unit == " ms" else f"{value:>12,.0f}{unit}" for value in values)
        if len(values) == 2:
            ours, theirs = values
            line += f"  {(theirs / ours if unit == ' ms' else ours / theirs):6.2f}x"
        lines.append(line)
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=2000, help="per send and consume workload (default 2000)")
    parser.add_argument("--round-trips", type=int, default=500)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--fauxqs", help="fauxqs's npm install prefix (or DOVECOTE_BENCH_FAUXQS)")
    parser.add_argument("--node", default=os.environ.get("DOVECOTE_BENCH_NODE", "node"), help="Node 22.5+ to run fauxqs")
    args = parser.parse_args()
    prefix = fauxqs_prefix(args.fauxqs)
    servers: list[Callable[[], contextlib.AbstractContextManager[Server]]] = [running_dovecote]
    if prefix is not None:
        servers.append(lambda: running_fauxqs(prefix, args.node))
    results: dict[str, list[Figures]] = {}
    alone: list[float] = []
    for run in range(args.runs):
        alone.append(client_alone_ms(args.round_trips))
        for start in servers if run % 2 == 0 else servers[::-1]:  # turn about: neither always goes first
            with start() as server:
                results.setdefault(server.name, []).append(measure(server, args.messages, args.round_trips))
    print(f"one boto3 client, one request at a time, 256 B bodies; medians of {args.runs} runs")
    print(table({name: results[name] for name in ("dovecote", "fauxqs") if name in results}))
    print(f"boto3 alone (a server that answers at once): {statistics.median(alone):.2f} ms a request, p50")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
