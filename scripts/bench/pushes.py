"""The HTTP push benchmark: a real `dovecote serve` process pushing to a fast local HTTP endpoint
(another process: a minimal asyncio HTTP/1.1 server that answers 200 on keep-alive connections),
and the broker's memory while pushes wait for an endpoint that is down.

    python -m dovecote.bench.pushes            # every scenario, a table of figures against targets
    python -m dovecote.bench.pushes --quick    # smaller counts, for a smoke run

Each scenario is bounded in messages and stops by itself.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import time
from multiprocessing.sharedctypes import Synchronized

import trio

from dovecote.net.client import BlockingClient

from .harness import Figure, broker_cpu_s, free_port, main, running_broker
from .sns import publish

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"


class _Endpoint(asyncio.Protocol):
    """Counts requests and answers each with 200 (while the gate is open; the answers wait while
    it is shut); passes on the tokens of confirmations."""

    def __init__(self, count: Synchronized, tokens: multiprocessing.Queue, gate: multiprocessing.Event) -> None:
        self._count = count
        self._tokens = tokens
        self._gate = gate
        self._buffer = b""
        self._unanswered = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        answered = 0
        while True:
            head_end = self._buffer.find(b"\r\n\r\n")
            if head_end < 0:
                break
            head = self._buffer[:head_end].decode("latin-1")
            length = next((int(line.split(":", 1)[1]) for line in head.split("\r\n") if line.lower().startswith("content-length:")), 0)
            end = head_end + 4 + length
            if len(self._buffer) < end:
                break
            body, self._buffer = self._buffer[head_end + 4 : end], self._buffer[end:]
            if b'"SubscriptionConfirmation"' in body:
                self._tokens.put(json.loads(body)["Token"])
            answered += 1
        self._unanswered += answered
        if self._gate.is_set():
            self.answer()
        else:
            asyncio.get_running_loop().call_later(0.01, self.answer)

    def answer(self) -> None:
        if not self._unanswered:
            return
        if not self._gate.is_set():
            asyncio.get_running_loop().call_later(0.01, self.answer)
            return
        answered, self._unanswered = self._unanswered, 0
        self._transport.write(RESPONSE * answered)
        with self._count.get_lock():
            self._count.value += answered


def _serve_endpoint(port: int, count: Synchronized, tokens: multiprocessing.Queue, gate: multiprocessing.Event) -> None:
    async def serve() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _Endpoint(count, tokens, gate), "127.0.0.1", port, backlog=1024)
        async with server:
            await server.serve_forever()

    asyncio.run(serve())


class Endpoint:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.count = multiprocessing.Value("q", 0)
        self.tokens: multiprocessing.Queue = multiprocessing.Queue()
        self.gate = multiprocessing.Event()  # shut: requests are read, answers wait
        self.gate.set()
        self.process = multiprocessing.Process(
            target=_serve_endpoint, args=(self.port, self.count, self.tokens, self.gate), daemon=True
        )

    def __enter__(self) -> Endpoint:
        self.process.start()
        time.sleep(0.3)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.process.is_alive():
            self.process.terminate()
            self.process.join()


def subscribe_confirmed(client: BlockingClient, endpoint: Endpoint, subscriptions: int, attributes: dict[str, str]) -> None:
    """Subscribe `subscriptions` paths of the endpoint to topic "bench" and confirm each with the
    token it received."""
    for i in range(subscriptions):
        client.subscribe("bench", "http", f"{endpoint.url}s{i}", attributes)
    for _ in range(subscriptions):
        client.confirm_subscription("bench", endpoint.tokens.get(timeout=30))


def deliveries_per_second(subscriptions: int, publishes: int, backlog: bool) -> tuple[float, float]:
    """Deliveries per second until the endpoint has counted every one (`publishes` a multiple of
    80: 8 publishers send batches of 10): from the first publish, with pushes going out while
    publishing goes on; or, with `backlog`, from the moment an endpoint that held back its
    answers while everything was published starts answering: the push gateway's own rate. With
    it, the broker's CPU time per push in microseconds, over the same span."""
    assert publishes % 80 == 0
    with running_broker("--push-timeout", "600") as broker, Endpoint() as endpoint, BlockingClient("127.0.0.1", broker.port) as client:
        client.create_topic("bench")
        subscribe_confirmed(client, endpoint, subscriptions, {})
        expected = endpoint.count.value + publishes * subscriptions
        if backlog:
            endpoint.gate.clear()
        assert broker.process is not None
        cpu_before = broker_cpu_s(broker.process.pid)
        started = time.perf_counter()
        trio.run(publish, broker.port, "bench", publishes, 2, 4)
        if backlog:
            time.sleep(1.0)
            cpu_before = broker_cpu_s(broker.process.pid)
            started = time.perf_counter()
            endpoint.gate.set()
        deadline = started + 600
        while endpoint.count.value < expected:
            if time.perf_counter() > deadline:
                raise RuntimeError(f"{expected - endpoint.count.value} pushes did not arrive")
            time.sleep(0.005)
        elapsed = time.perf_counter() - started
        return publishes * subscriptions / elapsed, (broker_cpu_s(broker.process.pid) - cpu_before) / (publishes * subscriptions) * 1e6


def memory_mib(pid: int) -> dict[str, float]:
    """VmRSS, and its parts: RssAnon (the process's own memory) and RssFile (here, pages of the
    LMDB file mapped in, which the kernel may reclaim)."""
    with open(f"/proc/{pid}/status") as status:
        fields = dict(line.split(":", 1) for line in status if line.startswith(("VmRSS", "RssAnon", "RssFile")))
    return {name: int(value.split()[0]) / 1024 for name, value in fields.items()}


def rss_with_pending(pending: int) -> tuple[dict[str, float], dict[str, float]]:
    """The broker's memory (MiB) idle with a confirmed subscription, and after `pending`
    publishes to it once its endpoint went down (their first attempts failed, retries wait)."""
    with running_broker() as broker, Endpoint() as endpoint, BlockingClient("127.0.0.1", broker.port) as client:
        client.create_topic("bench")
        policy = {"healthyRetryPolicy": {"minDelayTarget": 600, "maxDelayTarget": 600, "numRetries": 3}}
        subscribe_confirmed(client, endpoint, 1, {"DeliveryPolicy": json.dumps(policy)})
        endpoint.stop()
        time.sleep(1.0)
        assert broker.process is not None
        idle = memory_mib(broker.process.pid)
        trio.run(publish, broker.port, "bench", pending, 2, 4)
        time.sleep(5.0)  # the first attempts fail (connection refused) and are stored
        return idle, memory_mib(broker.process.pid)


def run(quick: bool) -> list[Figure]:
    scale = 10 if quick else 1
    figures: list[Figure] = []
    for subscriptions, publishes, target in ((1, 32_000, 3_000), (100, 800, 5_000)):
        spread = "1 subscription" if subscriptions == 1 else f"spread over {subscriptions} subscriptions"
        rate, cpu_us = deliveries_per_second(subscriptions, publishes // scale, backlog=True)
        figures.append(Figure(f"HTTP pushes, {spread}", rate, "msg/s", f">= {target:,}", rate >= target))
        figures.append(Figure("  the broker's CPU per push", cpu_us, "us", "(reported)", True))
        rate, _ = deliveries_per_second(subscriptions, publishes // scale, backlog=False)
        figures.append(Figure("  the same while publishing (end to end)", rate, "msg/s", "(reported)", True))
    idle, loaded = rss_with_pending(100_000 // scale)
    figures.append(Figure("RSS idle, 1 subscription", idle["VmRSS"], "MiB", "(reported)", True))
    growth = loaded["VmRSS"] - idle["VmRSS"]
    figures.append(Figure(f"RSS growth, {100_000 // scale:,} pushes pending, endpoint down", growth, "MiB", "<= 64", growth <= 64))
    own = loaded["RssAnon"] - idle["RssAnon"]
    figures.append(Figure("  of it the broker's own memory (RssAnon)", own, "MiB", "(reported)", True))
    mapped = loaded["RssFile"] - idle["RssFile"]
    figures.append(Figure("  of it LMDB's mapped file (RssFile)", mapped, "MiB", "(reported)", True))
    return figures


if __name__ == "__main__":
    raise SystemExit(main(run, __doc__))
