"""The native client under asyncio next to the same client under Trio, on one broker in one run:
produce (batches of 10, 4 connections x 8 pipelined) and receive + delete (batches of 10,
4 connections x 16), as `python -m dovecote.bench` measures them. The clients take turns, each
round in another order. The figures are medians over the rounds: each client's throughput and its
own CPU time per message (this process's; the broker is another), which a shared machine's load
moves far less than the throughput; and of the ratio of two clients' throughputs in each round.

    python -m dovecote.bench.client                         # 9 rounds of 20,000 messages
    python -m dovecote.bench.client --quick                 # 2 rounds of 10,000
    python -m dovecote.bench.client --baseline OLD/net      # also another version's client, under Trio

--baseline names the net/ directory of another checkout (its client.py and outbox.py are loaded
beside this one's; the rest is this checkout's), to see that a change did not slow the client:

    mkdir /tmp/main && git archive main net | tar -x -C /tmp/main
    python -m dovecote.bench.client --baseline /tmp/main/net

The broker runs as a subprocess on a fresh data directory under /tmp; the clients in this process.
Each run is bounded in messages and stops by itself.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import ModuleType
from typing import NamedTuple

import anyio

from dovecote.net.client import open_client

from .harness import Figure, consume, print_figures, produce, running_broker

ASYNCIO_SHARE_TARGET = 0.9  # asyncio's throughput at least 90% of Trio's


class Contender(NamedTuple):
    name: str
    backend: str
    opener: Callable

    @property
    def queue(self) -> str:
        return self.name.replace(", ", "-")


def load_baseline(net_directory: Path) -> ModuleType:
    """Another version's client module, with that version's outbox, under a name of its own."""

    def load(name: str, path: Path) -> ModuleType:
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    outbox = load("dovecote.net.baseline_outbox", net_directory / "outbox.py")
    ours = sys.modules["dovecote.net.outbox"]
    sys.modules["dovecote.net.outbox"] = outbox  # what the baseline's `from .outbox import Outbox` finds
    try:
        return load("dovecote.net.baseline_client", net_directory / "client.py")
    finally:
        sys.modules["dovecote.net.outbox"] = ours


class Run(NamedTuple):
    rate: float  # messages per second
    client_cpu_us: float  # this process's CPU time per message: the client's own cost, which the
    # machine's other load does not change as it changes the rate


def timed(backend: str, workload: Callable[[], Awaitable[float]], messages: int) -> Run:
    started = time.process_time()
    rate = anyio.run(workload, backend=backend)
    return Run(rate, (time.process_time() - started) / messages * 1e6)


def measure(contenders: list[Contender], rounds: int, messages: int) -> list[Figure]:
    produced: dict[str, list[Run]] = {contender.name: [] for contender in contenders}
    consumed: dict[str, list[Run]] = {contender.name: [] for contender in contenders}
    with running_broker() as broker:
        with broker.client() as client:
            for contender in contenders:
                client.create_queue(contender.queue)
        for round_number in range(rounds):
            turn = round_number % len(contenders)
            for contender in contenders[turn:] + contenders[:turn]:
                producing = functools.partial(produce, broker.port, contender.queue, messages, 4, 8, opener=contender.opener)
                produced[contender.name].append(timed(contender.backend, producing, messages))
                consuming = functools.partial(consume, broker.port, contender.queue, messages, 4, 16, opener=contender.opener)
                consumed[contender.name].append(timed(contender.backend, consuming, messages))
    figures = []
    for label, runs in (("produce, batches of 10", produced), ("receive + delete, batches of 10", consumed)):
        for name, results in runs.items():
            figures.append(Figure(f"{label}: {name}, median of {rounds}", statistics.median(r.rate for r in results), "msg/s", "(reported)", True))
            figures.append(Figure(f"{label}: {name}, client CPU per message", statistics.median(r.client_cpu_us for r in results), "us", "(reported)", True))
        share = paired_share(runs["asyncio"], runs["trio"])
        figures.append(Figure(f"{label}: asyncio / trio, throughput", share * 100, "%", ">= 90", share >= ASYNCIO_SHARE_TARGET))
        if "trio, baseline" in runs:
            share = paired_share(runs["trio"], runs["trio, baseline"])
            figures.append(Figure(f"{label}: trio / trio baseline, throughput", share * 100, "%", "(reported)", True))
    return figures


def paired_share(runs: list[Run], others: list[Run]) -> float:
    """The median, over the rounds, of one client's rate over the other's in the same round: the
    load of a shared machine drifts between rounds more than within one."""
    return statistics.median(run.rate / other.rate for run, other in zip(runs, others))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 rounds of 10,000 messages")
    parser.add_argument("--rounds", type=int, help="how many turns each client takes (default 9)")
    parser.add_argument("--baseline", type=Path, help="another checkout's net/ directory: its client runs too, under Trio")
    args = parser.parse_args()
    contenders = [Contender("asyncio", "asyncio", open_client), Contender("trio", "trio", open_client)]
    if args.baseline is not None:
        if not (args.baseline / "client.py").is_file():
            parser.error(f"--baseline: {args.baseline} holds no client.py (give a checkout's net/ directory)")
        contenders.append(Contender("trio, baseline", "trio", load_baseline(args.baseline).open_client))
    rounds = args.rounds or (2 if args.quick else 9)
    print_figures(measure(contenders, rounds, 10_000 if args.quick else 20_000))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
