"""Lambda functions: a cold start (the first invoke after a change of the function, which starts a
new python3 process under dovecote's runtime client) and a warm invoke (its instance reused), each
the round trip of boto3's Invoke of a no-op Python handler against a real `dovecote serve`.

    python -m dovecote.bench.lambda_invoke            # 20 cold starts, 1,000 warm invokes
    python -m dovecote.bench.lambda_invoke --quick
"""

from __future__ import annotations

import shutil
import statistics
import sys
import time


from .harness import Figure, main, percentile, running_broker
from .lambda_esm import handler_zip, lambda_client

HANDLER = "def main(event, context):\n    return event\n"
COLD_TARGET_MS = 1000.0
WARM_TARGET_MS = 10.0


def run(quick: bool) -> list[Figure]:
    cold_runs, warm_runs = (3, 100) if quick else (20, 1000)
    python = shutil.which("python3") or sys.executable
    with running_broker("--function-python", python) as broker:
        lam = lambda_client(broker.http_endpoint)
        lam.create_function(
            FunctionName="noop", Runtime="python3.12", Role="arn:aws:iam::000000000000:role/bench", Handler="handler.main",
            Code={"ZipFile": handler_zip(HANDLER)},
        )
        cold: list[float] = []
        for run_number in range(cold_runs):
            # a changed configuration retires the instance: the next invoke starts a new one
            lam.update_function_configuration(FunctionName="noop", Environment={"Variables": {"RUN": str(run_number)}})
            started = time.perf_counter()
            lam.invoke(FunctionName="noop", Payload=b"{}")["Payload"].read()
            cold.append((time.perf_counter() - started) * 1000)
        warm: list[float] = []
        for _ in range(warm_runs):
            started = time.perf_counter()
            lam.invoke(FunctionName="noop", Payload=b'{"n": 1}')["Payload"].read()
            warm.append((time.perf_counter() - started) * 1000)
    cold_p50 = statistics.median(cold)
    warm_p50, warm_p99 = statistics.median(warm), percentile(warm, 0.99)
    return [
        Figure(f"cold start: first invoke after a change, p50 of {cold_runs}", cold_p50, "ms", f"< {COLD_TARGET_MS:g} ms", cold_p50 < COLD_TARGET_MS),
        Figure(f"warm invoke (boto3 round trip), p50 of {warm_runs}", warm_p50, "ms", f"< {WARM_TARGET_MS:g} ms", warm_p50 < WARM_TARGET_MS),
        Figure(f"warm invoke (boto3 round trip), p99 of {warm_runs}", warm_p99, "ms", "(recorded)", True),
    ]


if __name__ == "__main__":
    raise SystemExit(main(run, __doc__))
