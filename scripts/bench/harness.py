"""What the benchmarks share: a `dovecote serve` subprocess on a fresh data directory, producers and
consumers over the native protocol, and the table of figures against their targets.

`--tls` and `--auth` (for the benchmarks that take them) serve with a certificate of a throwaway CA
(made by tests/tls_certificates.py, so run from the checkout's root) and with an access key, and
the clients connect with TLS and prove the key."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import ssl
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import anyio

from dovecote.net.client import BlockingClient, DeleteEntry, SendEntry, open_client

BODY = "x" * 256


class Figure(NamedTuple):
    name: str
    value: float
    unit: str
    target: str
    met: bool


class Security(NamedTuple):
    """How a benchmark's broker is served and its clients connect."""

    serve_args: tuple[str, ...] = ()  # the broker's TLS files and keys
    tls: ssl.SSLContext | None = None  # the clients'
    access_key: tuple[str, str] | None = None
    ca_file: str | None = None  # for clients that take a CA file (boto3's verify)

    @property
    def client_options(self) -> dict[str, Any]:
        return {"tls": self.tls, "access_key": self.access_key}

    @property
    def label(self) -> str:
        return " + ".join(name for name, on in (("TLS", self.tls is not None), ("auth", self.access_key is not None)) if on) or "plain"


PLAIN = Security()
BENCH_KEY = ("bench", "bench-secret-0123456789")


def make_security(tls: bool, auth: bool, directory: str) -> Security:
    """TLS with a certificate of a throwaway CA written under directory, and/or an access key."""
    serve_args: list[str] = []
    context = ca_file = None
    if tls:
        try:
            from tests.tls_certificates import CertificateAuthority
        except ImportError:
            raise SystemExit("--tls makes its certificates with tests/tls_certificates.py: run from the checkout's root") from None
        authority = CertificateAuthority(directory, "bench CA")
        server = authority.issue("server", server=True)
        serve_args += ["--tls-cert", server.certificate_file, "--tls-key", server.key_file]
        ca_file = authority.certificate_file
        context = ssl.create_default_context(cafile=ca_file)
    if auth:
        serve_args += ["--access-key", ":".join(BENCH_KEY)]
    return Security(tuple(serve_args), context, BENCH_KEY if auth else None, ca_file)


def percentile(samples: Sequence[float], fraction: float) -> float:
    """The sample at that fraction of the sorted samples (0.99: the p99), by nearest rank."""
    ordered = sorted(samples)
    return ordered[min(int(len(ordered) * fraction), len(ordered) - 1)]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


PACKAGE_COMMAND = (sys.executable, "-m", "dovecote")  # the package installed in this Python


def broker_cpu_s(pid: int) -> float:
    """User and system CPU seconds of a process so far, all its threads."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stop_process(process: subprocess.Popen) -> None:
    """SIGTERM to a process this benchmark started, and SIGKILL if it is not gone within 10 s."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class BrokerProcess:
    """A `dovecote serve` subprocess on a data directory: the installed package by default, or
    another command (the single-file build)."""

    def __init__(
        self,
        data_dir: str,
        extra_args: tuple[str, ...] = (),
        command: tuple[str, ...] = PACKAGE_COMMAND,
        security: Security = PLAIN,
    ) -> None:
        self.command = command
        self.data_dir = data_dir
        self.port = free_port()
        self.http_port = free_port()
        self.extra_args = (*security.serve_args, *extra_args)
        self.security = security
        self.process: subprocess.Popen | None = None

    def launch(self) -> None:
        """Exec the broker; it serves a moment later. Its Python keeps compiled bytecode, as an
        installed package has it, whatever this environment says (PYTHONDONTWRITEBYTECODE would
        have every start compile every module again)."""
        environment = {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}
        self.process = subprocess.Popen(
            [*self.command, "serve", "--data-dir", self.data_dir,
             "--port", str(self.port), "--http-port", str(self.http_port), "--log-level", "WARNING",
             *self.extra_args],
            env=environment,
        )

    def start(self) -> float:
        """Start and wait until the native port answers; returns seconds from exec to serving."""
        started = time.perf_counter()
        self.launch()
        deadline = started + 30
        while time.perf_counter() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:  # e.g. its port, picked free a moment ago, was taken meanwhile
                raise RuntimeError(f"the broker exited with code {self.process.returncode}")
            try:
                with BlockingClient("127.0.0.1", self.port, timeout_s=1, **self.security.client_options):
                    return time.perf_counter() - started
            except OSError:
                time.sleep(0.002)
        raise RuntimeError("the broker did not start")

    def client(self) -> BlockingClient:
        return BlockingClient("127.0.0.1", self.port, **self.security.client_options)

    @property
    def http_endpoint(self) -> str:
        return f"{'https' if self.security.tls is not None else 'http'}://127.0.0.1:{self.http_port}"

    def rss_bytes(self) -> int:
        assert self.process is not None
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=30)


@contextlib.contextmanager
def running_broker(*serve_args: str, security: Security = PLAIN) -> Iterator[BrokerProcess]:
    with tempfile.TemporaryDirectory(prefix="dovecote-bench-") as data_dir:
        broker = BrokerProcess(data_dir, serve_args, security=security)
        broker.start()
        try:
            yield broker
        finally:
            broker.stop()


def standard_batch() -> list[SendEntry]:
    return [SendEntry(f"e{i}", BODY) for i in range(10)]


async def produce(
    port: int,
    queue: str,
    messages: int,
    connections: int,
    pipeline: int,
    make_batch: Callable[[], list[SendEntry]] = standard_batch,
    security: Security = PLAIN,
    opener: Callable = open_client,
) -> float:
    """Send `messages` in batches of 10 (from make_batch) over `connections` connections, each
    with `pipeline` batches in flight; returns messages per second. Under asyncio or Trio; opener:
    the client's open_client (another version's, to compare)."""
    batches = messages // 10
    per_task = batches // (connections * pipeline)

    async def worker(client) -> None:
        for _ in range(per_task):
            result = await client.send_message_batch(queue, make_batch())
            assert not result.failed

    started = time.perf_counter()
    async with anyio.create_task_group() as connecting:
        for _ in range(connections):
            connecting.start_soon(_with_client, port, worker, pipeline, security, opener)
    return per_task * connections * pipeline * 10 / (time.perf_counter() - started)


async def _with_client(port: int, worker: Callable, tasks: int, security: Security, opener: Callable) -> None:
    async with opener("127.0.0.1", port, **security.client_options) as client:
        async with anyio.create_task_group() as working:
            for _ in range(tasks):
                working.start_soon(worker, client)


async def consume(
    port: int,
    queue: str,
    messages: int,
    connections: int,
    pipeline: int,
    security: Security = PLAIN,
    opener: Callable = open_client,
) -> float:
    """Receive and delete in batches of 10 until `messages` are gone; messages per second. Empty
    receives are retried for a while (a FIFO queue's groups may all be locked for a moment).
    Under asyncio or Trio; opener as produce's."""
    done = 0
    finished_at = time.perf_counter()

    async def worker(client) -> None:
        nonlocal done, finished_at
        empty = 0
        while done < messages and empty < 200:
            received = await client.receive_message(queue, max_number_of_messages=10)
            if not received:
                empty += 1
                await anyio.sleep(0.001)
                continue
            empty = 0
            finished_at = time.perf_counter()
            result = await client.delete_message_batch(
                queue, [DeleteEntry(str(i), m.receipt_handle) for i, m in enumerate(received)]
            )
            assert not result.failed
            done += len(received)
            finished_at = time.perf_counter()

    started = time.perf_counter()
    async with anyio.create_task_group() as connecting:
        for _ in range(connections):
            connecting.start_soon(_with_client, port, worker, pipeline, security, opener)
    return done / (finished_at - started)


def main(run_benchmark: Callable[..., list[Figure]], description: str, *, transport_flags: bool = False) -> int:
    """Run a benchmark (`--quick` for smaller counts) and print its figures against their targets.
    transport_flags: it takes --tls and --auth, and is called with a Security as well."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    if transport_flags:
        add_transport_flags(parser)
    args = parser.parse_args()
    if not transport_flags:
        print_figures(run_benchmark(args.quick))
        return 0
    with tempfile.TemporaryDirectory(prefix="dovecote-bench-pki-") as directory:
        security = make_security(args.tls, args.auth, directory)
        print(f"transport: {security.label}")
        print_figures(run_benchmark(args.quick, security))
    return 0


def add_transport_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tls", action="store_true", help="serve both ports with TLS (a throwaway CA's certificate)")
    parser.add_argument("--auth", action="store_true", help="serve with an access key, which the clients prove")


def print_figures(figures: list[Figure]) -> None:
    """A benchmark's figures against their targets, and what they were measured on."""
    width = max(58, *(len(figure.name) for figure in figures))
    print(f"{'scenario':<{width}} {'figure':>12}  {'target':<12} met")
    for figure in figures:
        print(f"{figure.name:<{width}} {figure.value:>9,.2f} {figure.unit:<5} {figure.target:<12} {'yes' if figure.met else 'NO'}")
    print(f"(python {sys.version.split()[0]}, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')})")

