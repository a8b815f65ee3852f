"""`python -m dovecote.bench.peers`: the one-request-at-a-time workloads against a real broker and,
where redis-server is installed, a real Redis with every write synced, stopped by its PID."""

import os
import shutil
import sys

import pytest

from dovecote.bench import peers

TINY = peers.Counts(singles=20, batches=10, round_trips=20)
REDIS = shutil.which("redis-server")
needs_redis = pytest.mark.skipif(REDIS is None, reason="redis-server is not installed on this machine (Debian: redis-server)")


def assert_measured(figures):
    assert set(figures.rates) == set(peers.RATE_WORKLOADS)
    assert all(rate > 0 for rate in figures.rates.values())
    assert 0 < figures.round_trip_p50_ms <= figures.round_trip_p99_ms


def test_the_workloads_run_against_dovecote():
    assert_measured(peers.measure_dovecote(TINY))


@needs_redis
def test_redis_runs_with_every_write_synced_and_is_stopped_by_its_pid():
    with peers.running_redis(REDIS) as (client, pid):
        assert client.config_get("appendfsync") == {"appendfsync": "always"}
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert_measured(peers.measure(peers.Redis(client, pid), TINY))
        assert client.xpending(peers.REDIS_STREAM, peers.REDIS_GROUP)["pending"] == 0  # every message acknowledged
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


@needs_redis
def test_a_run_prints_both_and_their_ratio(monkeypatch, capsys):
    monkeypatch.setattr(peers, "QUICK", TINY)
    monkeypatch.setattr(sys, "argv", ["peers", "--quick", "--runs", "1"])
    assert peers.main() == 0
    lines = capsys.readouterr().out.splitlines()
    produce = next(line for line in lines if line.startswith("produce b=1,"))
    ours, theirs, ratio = (float(field.replace(",", "")) for field in produce.split()[3:6])
    assert ratio == pytest.approx(ours / theirs, abs=0.01)
    assert any(line.startswith("round trip p50") for line in lines)
