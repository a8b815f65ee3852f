"""Start-up of the broker: exec to `/health` answering 200, on an empty data directory and on one
holding 100,000 messages; idle memory; what a start writes to disk; the size of what is installed.
The installed package (this Python's venv) and the single-file build side by side, in one run.

    python -m dovecote.bench.startup                       # the package, and dist/dovecote if built
    python -m dovecote.bench.startup --binary PATH --runs 9 --messages 100000

Each figure is the median of --runs starts, the two commands taking turns.
"""

from __future__ import annotations

import argparse
import http.client
import importlib.metadata
import os
import re
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import trio

from dovecote.net.client import BlockingClient

from .harness import PACKAGE_COMMAND, BrokerProcess, Figure, print_figures, produce

MIB = 1 << 20


def wait_healthy(broker: BrokerProcess, started: float) -> float:
    """Seconds from `started` (just before exec) until /health answers 200."""
    deadline = started + 30
    while time.perf_counter() < deadline:
        connection = http.client.HTTPConnection("127.0.0.1", broker.http_port, timeout=1)
        try:
            connection.request("GET", "/health")
            if connection.getresponse().status == 200:
                return time.perf_counter() - started
        except OSError:
            time.sleep(0.002)
        finally:
            connection.close()
    raise RuntimeError("the broker did not answer /health")


def written_bytes(pid: int) -> int:
    """What the process has caused to be written to storage (the kernel's count)."""
    with open(f"/proc/{pid}/io") as io:
        return next(int(line.split()[1]) for line in io if line.startswith("write_bytes:"))


class Start:
    __slots__ = ("seconds", "rss_bytes", "written_bytes")

    def __init__(self, seconds: float, rss_bytes: int, written: int) -> None:
        self.seconds, self.rss_bytes, self.written_bytes = seconds, rss_bytes, written


def start_once(command: tuple[str, ...], data_dir: str) -> Start:
    broker = BrokerProcess(data_dir, command=command)
    started = time.perf_counter()
    broker.launch()
    try:
        seconds = wait_healthy(broker, started)
        assert broker.process is not None
        written = written_bytes(broker.process.pid)
        time.sleep(0.5)  # idle: what it holds once it has settled
        return Start(seconds, broker.rss_bytes(), written)
    finally:
        broker.stop()


def fill(data_dir: str, messages: int) -> None:
    broker = BrokerProcess(data_dir)
    broker.start()
    try:
        with BlockingClient("127.0.0.1", broker.port) as client:
            client.create_queue("stored")
        trio.run(produce, broker.port, "stored", messages, 4, 8)
    finally:
        broker.stop()


def installed_bytes(distribution: str) -> int:
    """The files of a distribution and of everything it requires, as installed here (the Python
    that runs them not counted)."""
    seen: set[str] = set()
    waiting = [distribution]
    total = 0
    while waiting:
        name = canonical(waiting.pop())
        if name in seen:
            continue
        seen.add(name)
        try:
            found = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue  # required only on other Pythons (a marker), so not installed here
        total += sum(f.size or 0 for f in found.files or [])
        for requirement in found.requires or []:
            if "extra ==" not in requirement:
                waiting.append(re.split(r"[ ;<>=!~\[(]", requirement, maxsplit=1)[0])
    return total


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def tree_bytes(path: Path) -> int:
    return sum(entry.stat().st_size for entry in path.rglob("*") if entry.is_file() and not entry.is_symlink())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", default="dist/dovecote", help="the single-file build (skipped when absent)")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--messages", type=int, default=100_000)
    args = parser.parse_args()
    commands: dict[str, tuple[str, ...]] = {"package": PACKAGE_COMMAND}
    binary = Path(args.binary).resolve()
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="dovecote-startup-") as scratch:
        if binary.exists():
            unpack_dir = Path(scratch) / "unpacked"
            os.environ["DOVECOTE_UNPACK_DIR"] = str(unpack_dir)
            commands["binary"] = (str(binary),)
            first = start_once(commands["binary"], str(Path(scratch) / "first"))
            unpacked = tree_bytes(unpack_dir)
            figures.append(Figure("binary: file size", binary.stat().st_size / MIB, "MiB", "<= 25", binary.stat().st_size <= 25 * MIB))
            figures.append(Figure("binary: unpacked once, at a build's first start", unpacked / MIB, "MiB", "(reported)", True))
            figures.append(Figure("binary: first start, exec to /health", first.seconds * 1000, "ms", "(reported)", True))
        installed = installed_bytes("dovecote")
        figures.append(Figure("package: installed size (it and what it requires)", installed / MIB, "MiB", "(reported)", True))
        stored = str(Path(scratch) / "stored")
        fill(stored, args.messages)
        starts: dict[tuple[str, str], list[Start]] = {}
        for run in range(args.runs):
            for name, command in commands.items():
                empty = str(Path(scratch) / f"empty-{name}-{run}")
                starts.setdefault((name, "empty"), []).append(start_once(command, empty))
                starts.setdefault((name, "stored"), []).append(start_once(command, stored))
                shutil.rmtree(empty, ignore_errors=True)
        for name in commands:
            empty, full = starts[(name, "empty")], starts[(name, "stored")]
            empty_ms = statistics.median(s.seconds for s in empty) * 1000
            full_ms = statistics.median(s.seconds for s in full) * 1000
            rss = statistics.median(s.rss_bytes for s in empty) / MIB
            written = statistics.median(s.written_bytes for s in empty) / MIB
            figures += [
                Figure(f"{name}: exec to /health 200, empty data directory", empty_ms, "ms", "<= 300", empty_ms <= 300),
                Figure(f"{name}: exec to /health 200, {args.messages:,} stored", full_ms, "ms", "<= 500", full_ms <= 500),
                Figure(f"{name}: idle RSS, empty data directory", rss, "MiB", "<= 40", rss <= 40),
                Figure(f"{name}: written by a start to /health", written, "MiB", "(reported)", True),
            ]
    print_figures(figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
