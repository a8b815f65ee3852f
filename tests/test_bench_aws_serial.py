"""The one-request-at-a-time AWS benchmark (python -m dovecote.bench.aws_serial): its workloads on a
real `dovecote serve` through boto3, the peer found or refused in one line, and its table's ratios."""

from __future__ import annotations

import os

import pytest

from dovecote.bench.aws_serial import WORKLOADS, Figures, fauxqs_prefix, measure, running_dovecote, running_fauxqs, table


def test_every_workload_runs_against_a_real_broker():
    with running_dovecote() as server:
        figures = measure(server, messages=20, round_trips=5)
    assert set(figures.rates) == set(WORKLOADS)
    assert all(value > 0 for value in figures.rates.values()) and figures.cpu_ms_per_request > 0


def test_a_fauxqs_prefix_without_fauxqs_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.delenv("DOVECOTE_BENCH_FAUXQS", raising=False)
    assert fauxqs_prefix(None) is None
    with pytest.raises(SystemExit) as refused:
        fauxqs_prefix(str(tmp_path))
    assert str(refused.value) == f"no fauxqs under {tmp_path}: install it with `npm install --prefix {tmp_path} fauxqs`"
    monkeypatch.setenv("DOVECOTE_BENCH_FAUXQS", str(tmp_path))
    with pytest.raises(SystemExit):
        fauxqs_prefix(None)


def test_the_table_gives_medians_and_ratios_that_favour_the_faster():
    def figures(rate: float, round_trip: float, cpu: float) -> Figures:
        return Figures({**{w: rate for w in WORKLOADS}, "round trip p50": round_trip}, cpu)

    text = table({"dovecote": [figures(100, 2.0, 0.5), figures(300, 4.0, 0.7), figures(200, 3.0, 0.6)], "fauxqs": [figures(50, 6.0, 1.2)]})
    lines = {line.split("  ")[0].strip(): line for line in text.splitlines()}
    assert lines["produce b=1"].split() == ["produce", "b=1", "200/s", "50/s", "4.00x"]
    assert lines["round trip p50"].split() == ["round", "trip", "p50", "3.00", "ms", "6.00", "ms", "2.00x"]
    assert lines["CPU ms/request"].split() == ["CPU", "ms/request", "0.60", "ms", "1.20", "ms", "2.00x"]


FAUXQS = os.environ.get("DOVECOTE_BENCH_FAUXQS")


@pytest.mark.skipif(not FAUXQS, reason="fauxqs is not installed here (DOVECOTE_BENCH_FAUXQS names its npm prefix)")
def test_the_same_workloads_run_against_fauxqs():
    with running_fauxqs(FAUXQS, os.environ.get("DOVECOTE_BENCH_NODE", "node")) as server:
        pid = server.pid
        figures = measure(server, messages=20, round_trips=5)
    assert set(figures.rates) == set(WORKLOADS)
    assert not os.path.exists(f"/proc/{pid}")  # stopped and reaped
