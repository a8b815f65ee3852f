"""Benchmark of GET /metrics with many queues: what one scrape costs (the time it holds the event
loop, and its size) with every queue labelled and with caps, rendered by this broker's own renderer
and, for comparison, by prometheus_client from the same reports (if it is installed).

    python -m dovecote.bench.metrics [--queues 10000] [--scrapes 5]

The broker is in-process, on an LMDB store in a fresh directory under /tmp (sync mode os, so making
the queues is quick), with one message in every tenth queue and a topic per 100 queues. A scrape is
BrokerEndpoints.handle for GET /metrics, called directly (no socket), beside a task that notes the
longest it had to wait: how long the scrape held the event loop at once.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import tempfile
import time

import trio

from dovecote.actors.broker import Broker
from dovecote.actors.clock import Clock
from dovecote.actors.config import BrokerConfig
from dovecote.actors.mailbox import ReplySlot
from dovecote.actors.ops import CreateQueue, CreateTopic, Op, SendMessage
from dovecote.actors.recovery import recover
from dovecote.net import metrics
from dovecote.net.broker_endpoints import METRICS_MAX_QUEUES, BrokerEndpoints
from dovecote.net.http_server import HttpRequest
from dovecote.storage.lmdb_store import LmdbStore
from dovecote.storage.writer import LogWriter

SCRAPE = HttpRequest("GET", "/metrics", [], b"")


def prometheus_client_text(endpoints: BrokerEndpoints, reports: list) -> bytes:
    """The same per-queue and per-topic families through prometheus_client: a collector yielding
    metric families, rendered by generate_latest (its import is timed separately)."""
    from prometheus_client.core import CollectorRegistry, CounterMetricFamily, GaugeMetricFamily
    from prometheus_client.exposition import generate_latest

    class Collector:
        def collect(self):
            for kind, families, index in (
                ("queue", metrics.QUEUE_FAMILIES, metrics._QUEUE_INDEX),
                ("topic", metrics.TOPIC_FAMILIES, metrics._TOPIC_INDEX),
            ):
                rows = [(r, metrics._row(r) + tuple(r.actor)) for r in reports if r.kind == kind and r.actor is not None]
                for family in families:
                    extra = ["state"] if family.values[0][0] else []
                    make = CounterMetricFamily if family.kind == "counter" else GaugeMetricFamily
                    out = make(family.name.removesuffix("_total"), family.help, labels=["region", kind, *extra])
                    for report, row in rows:
                        for labels, field in family.values:
                            value = [labels.split('"')[1]] if labels else []
                            out.add_metric([report.region, report.name, *value], row[index[field]])
                    yield out

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collector())
    return generate_latest(registry)


async def scrape_beside_a_ticker(endpoints: BrokerEndpoints):
    """One scrape, while another task checks in at every chance it gets: the scrape's wall time and
    the longest that task waited (how long the scrape held the event loop at once), in ms."""
    done = trio.Event()
    longest = 0.0

    async def ticker(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        nonlocal longest
        last = time.perf_counter()
        task_status.started()
        while not done.is_set():
            await trio.lowlevel.checkpoint()
            now = time.perf_counter()
            longest = max(longest, now - last)
            last = now

    async with trio.open_nursery() as nursery:
        await nursery.start(ticker)  # checking in from now on
        begun = time.perf_counter()
        response = await endpoints.handle(SCRAPE)
        wall = time.perf_counter() - begun
        done.set()
    return wall * 1000, longest * 1000, response


def timed(function, scrapes: int) -> tuple[float, float, object]:
    """The least wall and CPU time of `scrapes` calls, in ms (the least: this shared machine's other
    work only ever adds), and the last result."""
    walls, cpus = [], []
    result = None
    for _ in range(scrapes):
        wall, cpu = time.perf_counter(), time.process_time()
        result = function()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return min(walls) * 1000, min(cpus) * 1000, result


async def run(queues: int, scrapes: int) -> None:
    store = LmdbStore(tempfile.mkdtemp(prefix="dovecote-bench-metrics-"), sync_mode="os")
    clock = Clock()
    config = BrokerConfig(max_queues=max(queues, 10_000))
    cores, _ = recover(store, config, clock, salvage=False)
    writer = LogWriter(store, wall_ms=clock.wall_ms)
    async with trio.open_nursery() as storage_nursery:
        await storage_nursery.start(writer.run)
        broker = Broker(store, writer, clock, config, cores)
        async with trio.open_nursery() as broker_nursery:
            await broker_nursery.start(broker.run)
            session = broker.session()

            async def call(op: Op) -> None:
                slot: ReplySlot = ReplySlot()
                session.submit(op, slot)
                await slot.wait()

            async def make(indices: range) -> None:
                for i in indices:
                    await call(CreateQueue(f"queue-{i:05d}"))
                    if i % 10 == 0:
                        await call(SendMessage(f"queue-{i:05d}", "x" * 256))
                    if i % 100 == 0:
                        await call(CreateTopic(f"topic-{i:05d}"))

            begun = time.perf_counter()
            async with trio.open_nursery() as making:
                for worker in range(16):
                    making.start_soon(make, range(worker, queues, 16))
            print(f"{queues} queues and {queues // 100} topics made in {time.perf_counter() - begun:.1f} s\n")
            print(f"| scrape | wall time (least of {scrapes}) | longest hold of the event loop | size | lines |")
            print("|---|---|---|---|---|")
            for label, cap in ((f"every queue labelled ({queues})", queues), (f"default cap ({METRICS_MAX_QUEUES})", METRICS_MAX_QUEUES),
                               ("cap 100", 100)):
                endpoints = BrokerEndpoints(writer, broker, b"", data_dir=str(store.data_dir), metrics_max_queues=cap,
                                            metrics_max_topics=cap)
                await endpoints.handle(SCRAPE)  # the first one reads /proc/stat once
                walls, holds = [], []
                for _ in range(scrapes):
                    wall, hold, response = await scrape_beside_a_ticker(endpoints)
                    walls.append(wall)
                    holds.append(hold)
                lines = response.body.count(b"\n")
                print(f"| {label} | {min(walls):.1f} ms | {min(holds):.1f} ms | {len(response.body) / 1e6:.2f} MB | {lines} |")
            reading_ms, _, _ = timed(broker.statistics, scrapes)
            print(f"\nreading every actor's report in one go (Broker.statistics): {reading_ms:.1f} ms")
            reports = broker.statistics()
            for cap in (queues, METRICS_MAX_QUEUES, 100):
                render_ms, _, _ = timed(lambda: metrics.render(writer.statistics(), reports, max_queues=cap, max_topics=cap), scrapes)
                print(f"rendering from those reports, cap {cap}: {render_ms:.1f} ms")
            endpoints = BrokerEndpoints(writer, broker, b"", metrics_max_queues=queues, metrics_max_topics=queues)
            reports = broker.statistics()
            ours_ms, _, text = timed(
                lambda: metrics.render(writer.statistics(), reports, max_queues=queues, max_topics=queues), scrapes
            )
            print("\nthe per-queue and per-topic families, every queue labelled, from the same reports (least wall time):")
            print(f"- this renderer: {ours_ms:.1f} ms, {len(text.encode()) / 1e6:.2f} MB (the whole scrape)")
            if importlib.util.find_spec("prometheus_client") is None:
                print("- prometheus_client: not installed")
            else:
                theirs_ms, _, body = timed(lambda: prometheus_client_text(endpoints, reports), scrapes)
                print(f"- prometheus_client {importlib.metadata.version('prometheus_client')}: {theirs_ms:.1f} ms, {len(body) / 1e6:.2f} MB "
                      "(queues and topics only)")
            broker.stop()
        writer.close()
    store.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queues", type=int, default=10_000)
    parser.add_argument("--scrapes", type=int, default=5)
    args = parser.parse_args()
    trio.run(run, args.queues, args.scrapes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
