"""What encryption at rest costs: native produce in batches of 10 to a queue with SqsManagedSseEnabled
and to one without, side by side on the same broker, and receive + delete from each; then the cost
of sealing and opening one message, measured alone in this process.

    python -m dovecote.bench.sse                 # 5 runs, medians
    python -m dovecote.bench.sse --runs 9
    python -m dovecote.bench.sse --quick         # smaller counts, for a smoke run

Each run starts a fresh `dovecote serve` (default sync mode, 256-byte bodies, 4 connections x 8
batches in flight, as `python -m dovecote.bench`) and measures both queues in it, in ten turns
each, the queues alternating, so a slow moment of the machine falls on both alike. Beside throughput, the
broker's own CPU time per message (user and system, all its threads, from /proc), which other
load on the machine disturbs less. The target: encryption costs at most 10% of produce throughput.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import timeit
from typing import NamedTuple

import trio

from dovecote.net.client import BlockingClient

from .harness import BODY, Figure, broker_cpu_s, consume, print_figures, produce, running_broker

QUEUES = {"plain": {"SqsManagedSseEnabled": "false"}, "sse": {"SqsManagedSseEnabled": "true"}}  # plain: new queues encrypt by default


class Measured(NamedTuple):
    produce: float  # msg/s
    produce_cpu_us: float  # the broker's CPU time (all its threads) per message produced
    consume: float  # msg/s, receive + delete
    consume_cpu_us: float


def one_run(messages: int, sse_first: bool, rounds: int = 10) -> dict[str, Measured]:
    """Each queue's figures, on one fresh broker: `messages` to each, produced (then received and
    deleted) in `rounds` turns of a tenth, the queues alternating, so that whatever else the
    machine does falls on both alike."""
    order = ["sse", "plain"] if sse_first else ["plain", "sse"]
    seconds = {(name, step): 0.0 for name in order for step in ("produce", "consume")}
    cpu = dict(seconds)
    with running_broker() as broker:
        assert broker.process is not None
        pid = broker.process.pid
        with BlockingClient("127.0.0.1", broker.port) as client:
            for name, attributes in QUEUES.items():
                client.create_queue(name, attributes)
            client.send_message("sse", "make the data key before measuring")
            (warm,) = client.receive_message("sse")
            client.delete_message("sse", warm.receipt_handle)
        share = messages // rounds
        for step, function, pipeline in (("produce", produce, 8), ("consume", consume, 16)):
            for _ in range(rounds):
                for name in order:
                    used = broker_cpu_s(pid)
                    rate = trio.run(function, broker.port, name, share, 4, pipeline)
                    seconds[name, step] += share / rate
                    cpu[name, step] += broker_cpu_s(pid) - used
                order.reverse()
    return {
        name: Measured(
            messages / seconds[name, "produce"], cpu[name, "produce"] / messages * 1e6,
            messages / seconds[name, "consume"], cpu[name, "consume"] / messages * 1e6,
        )
        for name in order
    }


def seal_and_open_us(repeat: int = 20_000) -> tuple[float, float]:
    """Microseconds to seal, and to open, one MessageSent of a 256-byte body in this process (the
    best of 5 rounds: what it costs when nothing else runs)."""
    from dovecote.actors.sse_policy import key_policy
    from dovecote.storage.records import MessageSent, QueueCreated
    from dovecote.storage.sse import KeyFile, Sealer

    with tempfile.TemporaryDirectory() as scratch:
        sealer = Sealer(KeyFile(f"{scratch}/master.key"), key_policy)
        sealer.load([QueueCreated(0, 1, "q", QUEUES["sse"])], [])
        record = MessageSent(1_700_000_000_000, 1, "q", 2, 0, "4baeb215-3dab-8715-9051-1403b5e49695", "", BODY, {})
        sealer.begin()
        key = sealer.key_for(record, 0, 1)
        sealer.done()
        sealer.begin()
        sealed = sealer.seal(record, key, 2)

        def seal() -> None:
            sealer.key_for(record, 0, 3)
            sealer.seal(record, key, 2)

        seal_s = min(timeit.repeat(seal, number=repeat, repeat=5)) / repeat
        open_s = min(timeit.repeat(lambda: sealer.open(sealed), number=repeat, repeat=5)) / repeat
    return seal_s * 1e6, open_s * 1e6


def run(runs: int, quick: bool) -> list[Figure]:
    messages = 20_000 if quick else 200_000
    results: list[dict[str, Measured]] = []
    for number in range(runs):
        measured = one_run(messages, sse_first=number % 2 == 1)
        results.append(measured)
        plain, sse = measured["plain"], measured["sse"]
        print(
            f"run {number + 1}: produce plain {plain.produce:,.0f} msg/s ({plain.produce_cpu_us:.1f} us CPU/msg), "
            f"sse {sse.produce:,.0f} msg/s ({sse.produce_cpu_us:.1f} us); receive + delete plain {plain.consume:,.0f} "
            f"({plain.consume_cpu_us:.1f} us), sse {sse.consume:,.0f} ({sse.consume_cpu_us:.1f} us)",
            flush=True,
        )

    def median(name: str, field: str) -> float:
        return statistics.median(getattr(r[name], field) for r in results)

    def lost(field: str) -> float:
        """Throughput lost, the median of each run's pair (the pairs ran on the same broker)."""
        return statistics.median(1 - getattr(r["sse"], field) / getattr(r["plain"], field) for r in results) * 100

    def added(field: str) -> float:
        return statistics.median(getattr(r["sse"], field) - getattr(r["plain"], field) for r in results)

    produce_lost, consume_lost = lost("produce"), lost("consume")
    seal_us, open_us = seal_and_open_us()
    return [
        Figure(f"produce, batches of 10, without encryption (median of {runs})", median("plain", "produce"), "msg/s", "(reported)", True),
        Figure(f"produce, batches of 10, SqsManagedSseEnabled (median of {runs})", median("sse", "produce"), "msg/s", "(reported)", True),
        Figure("produce: throughput lost to encryption (median of pairs)", produce_lost, "%", "<= 10", produce_lost <= 10),
        Figure("produce: broker CPU per message, without encryption", median("plain", "produce_cpu_us"), "us", "(reported)", True),
        Figure("produce: broker CPU per message added by encryption", added("produce_cpu_us"), "us", "(reported)", True),
        Figure(f"receive + delete, without encryption (median of {runs})", median("plain", "consume"), "msg/s", "(reported)", True),
        Figure(f"receive + delete, SqsManagedSseEnabled (median of {runs})", median("sse", "consume"), "msg/s", "(reported)", True),
        Figure("receive + delete: throughput lost to encryption", consume_lost, "%", "(reported)", True),
        Figure("receive + delete: broker CPU per message added", added("consume_cpu_us"), "us", "(reported)", True),
        Figure("seal one message (key choice, AES-256-GCM, encoding), alone", seal_us, "us", "(reported)", True),
        Figure("open one message, alone", open_us, "us", "(reported)", True),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    started = time.perf_counter()
    print_figures(run(max(1, args.runs), args.quick))
    print(f"({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
