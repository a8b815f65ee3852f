"""`python -m dovecote.bench.client`: the client under asyncio and under Trio, and another version's
client beside them, on one real broker."""

import sys
from pathlib import Path

import pytest

from dovecote.bench import client as bench
from dovecote.net.client import open_client

ROOT = Path(__file__).resolve().parents[1]


def test_both_loops_and_a_baseline_are_measured_and_compared():
    baseline = bench.load_baseline(ROOT / "net")
    assert baseline.open_client is not open_client  # loaded beside this checkout's, not instead of it
    contenders = [
        bench.Contender("asyncio", "asyncio", open_client),
        bench.Contender("trio", "trio", open_client),
        bench.Contender("trio, baseline", "trio", baseline.open_client),
    ]
    figures = {figure.name: figure for figure in bench.measure(contenders, rounds=1, messages=640)}
    for workload in ("produce, batches of 10", "receive + delete, batches of 10"):
        for name in ("asyncio", "trio", "trio, baseline"):
            assert figures[f"{workload}: {name}, median of 1"].value > 0
            assert figures[f"{workload}: {name}, client CPU per message"].value > 0
        share = figures[f"{workload}: asyncio / trio, throughput"]
        assert share.target == ">= 90" and share.met == (share.value >= 90)
        assert figures[f"{workload}: trio / trio baseline, throughput"].value > 0


def test_a_baseline_without_a_client_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["dovecote.bench.client", "--baseline", str(tmp_path)])
    with pytest.raises(SystemExit) as exited:
        bench.main()
    assert exited.value.code == 2
    assert f"--baseline: {tmp_path} holds no client.py" in capsys.readouterr().err
