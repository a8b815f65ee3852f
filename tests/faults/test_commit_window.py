"""`dovecote serve --commit-delay-ms`: a real process gathers concurrent requests into one commit
and answers none of them before it."""

import threading
import time

import httpx

from .serve import ServeProcess


def commits(broker) -> int:
    for line in httpx.get(f"http://127.0.0.1:{broker.http_port}/metrics", timeout=5).text.splitlines():
        if line.startswith("dovecote_log_commits_total "):
            return int(line.split()[1])
    raise AssertionError("no dovecote_log_commits_total in /metrics")


def test_a_commit_window_gathers_four_clients_sends_into_one_commit(tmp_path):
    broker = ServeProcess(tmp_path / "data", "--commit-delay-ms", "300").start()
    try:
        clients = [broker.client() for _ in range(4)]
        clients[0].create_queue("q")
        before = commits(broker)
        barrier = threading.Barrier(len(clients))
        took = []

        def send(client, number):
            barrier.wait()
            started = time.monotonic()
            client.send_message("q", f"m{number}")
            took.append(time.monotonic() - started)

        threads = [threading.Thread(target=send, args=(client, number)) for number, client in enumerate(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert len(took) == 4
        assert commits(broker) - before == 1
        assert min(took) >= 0.25  # each waited for the window (less the others' head start)
        assert int(clients[0].get_queue_attributes("q")["ApproximateNumberOfMessages"]) == 4
        for client in clients:
            client.close()
    finally:
        assert broker.terminate() == 0
