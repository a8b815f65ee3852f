"""Start-up of an embedded broker: `dovecote.embedded()` on an empty (temporary) data directory,
from the call to its first answered request (`GET /health` answering 200), in a fresh process each
run; beside it, what importing dovecote's embedding costs that process first, and the stop.

    python -m dovecote.bench.embedded            # medians of 9 runs
    python -m dovecote.bench.embedded --runs 15

Each figure is the median of --runs processes, run one after another.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

from .harness import Figure, print_figures

TARGET_MS = 150

# One run, in a process of its own: times in milliseconds, as JSON on standard output.
RUN = r"""
import http.client, json, time

started = time.perf_counter()
import dovecote
embedded = dovecote.embedded
imported = time.perf_counter()
with embedded() as broker:
    connection = http.client.HTTPConnection(*broker.endpoint_url.removeprefix("http://").split(":"))
    connection.request("GET", "/health")
    assert connection.getresponse().status == 200
    answered = time.perf_counter()
stopped = time.perf_counter()
print(json.dumps({"import": (imported - started) * 1000, "start": (answered - imported) * 1000, "stop": (stopped - answered) * 1000}))
"""


def run_once() -> dict[str, float]:
    finished = subprocess.run([sys.executable, "-c", RUN], capture_output=True, text=True, timeout=60, check=False)
    if finished.returncode != 0:
        raise RuntimeError(f"an embedded start failed: {finished.stderr.strip()}")
    return json.loads(finished.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=9, help="processes to start, one after another (default 9)")
    args = parser.parse_args()
    runs = [run_once() for _ in range(args.runs)]
    median = {name: statistics.median(run[name] for run in runs) for name in runs[0]}
    start_ms = median["start"]
    print_figures([
        Figure("embedded(): call to the first answer (/health), empty directory", start_ms, "ms", f"<= {TARGET_MS}", start_ms <= TARGET_MS),
        Figure("import dovecote and its embedding, first in a process", median["import"], "ms", "(reported)", True),
        Figure("leaving the block: a clean stop", median["stop"], "ms", "(reported)", True),
    ])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
