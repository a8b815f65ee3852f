"""Real `dovecote serve` processes: damage on disk, a second broker, clean shutdown, the CLI."""

import json
import subprocess
import sys

import httpx
import lmdb

from dovecote.storage import keys

from .serve import ServeProcess


def flip_last_byte(data_dir, table: bytes, key: bytes) -> None:
    env = lmdb.open(str(data_dir / "lmdb"), max_dbs=8)
    try:
        with env.begin(write=True, db=env.open_db(table)) as txn:
            value = bytearray(txn.get(key))
            value[-1] ^= 0xFF
            txn.put(key, bytes(value))
    finally:
        env.close()


def test_damage_stops_the_broker_with_a_clear_message_unless_salvaging(tmp_path):
    data_dir = tmp_path / "data"
    broker = ServeProcess(data_dir).start()
    with broker.client() as client:
        client.create_queue("q")
        for i in range(5):
            client.send_message("q", f"m{i}")
    assert broker.terminate() == 0
    flip_last_byte(data_dir, b"messages", keys.message_key(1, 3))

    refused = subprocess.run(ServeProcess(data_dir).command(), capture_output=True, text=True, timeout=60)
    assert refused.returncode == 3
    assert "damaged" in refused.stderr and "messages rows queue 1 seq 3" in refused.stderr
    assert "--salvage" in refused.stderr

    check = subprocess.run(
        [sys.executable, "-m", "dovecote", "check", "--data-dir", str(data_dir)], capture_output=True, text=True
    )
    assert check.returncode == 1 and "seq 3" in check.stdout

    salvaged = ServeProcess(data_dir, "--salvage").start()
    with salvaged.client() as client:
        bodies = {m.body for m in client.receive_message("q", max_number_of_messages=10)}
    assert salvaged.terminate() == 0
    assert "salvage dropped messages rows queue 1 seq 3" in salvaged.process.stderr.read()
    assert len(bodies) == 4 and all(body.startswith("m") for body in bodies)


def test_a_second_broker_on_the_same_directory_is_refused(tmp_path):
    broker = ServeProcess(tmp_path / "data").start()
    try:
        second = subprocess.run(ServeProcess(tmp_path / "data").command(), capture_output=True, text=True, timeout=60)
        assert second.returncode == 3 and "in use by another dovecote process" in second.stderr
        with broker.client() as client:
            client.list_queues()  # the first one is unharmed
    finally:
        assert broker.terminate() == 0


def test_sigterm_shuts_down_cleanly_and_health_answers_while_up(tmp_path):
    broker = ServeProcess(tmp_path / "data").start()
    health = httpx.get(f"http://127.0.0.1:{broker.http_port}/health", timeout=5)
    assert health.status_code == 200 and health.json()["accepting_sends"] is True
    with broker.client() as client:
        client.create_queue("counted", {"SqsManagedSseEnabled": "false"})  # no data key among the records counted
        client.send_message("counted", "one")
    metrics = dict(
        line.split(" ")
        for line in httpx.get(f"http://127.0.0.1:{broker.http_port}/metrics", timeout=5).text.splitlines()
        if not line.startswith("#")
    )
    assert metrics["dovecote_log_last_lsn"] == "2" and metrics["dovecote_log_records_total"] == "2"
    assert int(metrics["dovecote_log_commits_total"]) in (1, 2) and metrics["dovecote_accepting_sends"] == "1"
    assert broker.terminate() == 0


def run_cli(broker, *args):
    result = subprocess.run(
        [sys.executable, "-m", "dovecote", *args, "--port", str(broker.port)], capture_output=True, text=True, timeout=60
    )
    return result.returncode, result.stdout, result.stderr


def test_cli_client_commands(tmp_path):
    broker = ServeProcess(tmp_path / "data").start()
    try:
        code, out, _ = run_cli(broker, "create-queue", "jobs", "--attribute", "VisibilityTimeout=5")
        assert code == 0 and json.loads(out)["QueueUrl"].endswith("/000000000000/jobs")
        code, out, _ = run_cli(broker, "send", "jobs", "hello", "--attribute", "kind=String:greeting")
        sent = json.loads(out)
        assert code == 0 and sent["MessageId"] and sent["MD5OfMessageBody"] == "5d41402abc4b2a76b9719d911017c592"
        code, out, _ = run_cli(broker, "receive", "jobs", "--max", "10", "--delete")
        (message,) = json.loads(out)["Messages"]  # AWS's names throughout, as aws-cli prints them
        assert message["Body"] == "hello" and message["MessageAttributes"]["kind"]["StringValue"] == "greeting"
        assert message["Attributes"]["ApproximateReceiveCount"] == "1" and message["ReceiptHandle"]
        code, out, _ = run_cli(broker, "get-queue-attributes", "jobs")
        assert json.loads(out)["Attributes"]["ApproximateNumberOfMessages"] == "0"
        for command in (("set-queue-attributes", "jobs", "VisibilityTimeout=6"), ("purge-queue", "jobs")):
            assert run_cli(broker, *command)[:2] == (0, "")  # an answer with nothing in it prints nothing
        code, _, err = run_cli(broker, "delete-message", "jobs", "not-a-handle")
        assert code == 1 and json.loads(err)["error"] == "ReceiptHandleIsInvalid"
        code, _, err = run_cli(broker, "get-queue-url", "missing")
        assert code == 1 and json.loads(err)["error"] == "QueueDoesNotExist"
    finally:
        assert broker.terminate() == 0


def test_peek_from_the_cli_and_over_http(tmp_path):
    broker = ServeProcess(tmp_path / "data").start()
    try:
        with broker.client() as client:
            client.create_queue("browse")
            for i in range(3):
                client.send_message("browse", f"m{i}")
            client.receive_message("browse")
        code, out, _ = run_cli(broker, "peek", "browse", "--max", "2")
        page = json.loads(out)
        assert code == 0 and [m["Body"] for m in page["Messages"]] == ["m0", "m1"]
        assert page["Messages"][0]["State"] == "in_flight" and page["NextAfterSeq"]
        url = f"http://127.0.0.1:{broker.http_port}/peek"
        visible = httpx.get(url, params={"queue": "browse", "state": "visible"}, timeout=5).json()
        assert [m["body"] for m in visible["messages"]] == ["m1", "m2"]
        missing = httpx.get(url, params={"queue": "nowhere"}, timeout=5)
        assert missing.status_code == 400 and missing.json()["code"] == "QueueDoesNotExist"
        assert httpx.get(url, timeout=5).status_code == 400
        with broker.client() as client:  # peeking changed nothing
            assert client.get_queue_attributes("browse")["ApproximateNumberOfMessages"] == "2"
    finally:
        assert broker.terminate() == 0


def test_sigint_shuts_down_cleanly_too(tmp_path):
    import signal

    broker = ServeProcess(tmp_path / "data").start()
    with broker.client() as client:
        client.create_queue("kept")
        client.send_message("kept", "survives a clean stop")
    broker.process.send_signal(signal.SIGINT)
    assert broker.process.wait(timeout=30) == 0
    again = ServeProcess(tmp_path / "data").start()
    with again.client() as client:
        assert [m.body for m in client.receive_message("kept")] == ["survives a clean stop"]
    assert again.terminate() == 0


def test_an_operator_confirms_a_subscription_with_the_token_from_the_log(tmp_path):
    broker = ServeProcess(tmp_path / "data").start()
    try:
        assert run_cli(broker, "create-topic", "news")[0] == 0
        code, out, _ = run_cli(broker, "subscribe", "news", "https://hooks.example.com/sns", "--protocol", "https")
        assert code == 0
        subscription_arn = json.loads(out)["SubscriptionArn"]
        pending = subprocess.run(
            [sys.executable, "-m", "dovecote", "log", "pending", "--topic", "news", "--data-dir", broker.data_dir],
            capture_output=True, text=True, timeout=60,
        )
        ((arn, protocol, endpoint, token),) = [line.split("\t") for line in pending.stdout.splitlines()]
        assert (arn, protocol, endpoint, len(token)) == (subscription_arn, "https", "https://hooks.example.com/sns", 128)
        code, out, _ = run_cli(broker, "confirm-subscription", "news", token)
        assert code == 0 and json.loads(out)["SubscriptionArn"] == arn
        pending = subprocess.run(
            [sys.executable, "-m", "dovecote", "log", "pending", "--data-dir", broker.data_dir],
            capture_output=True, text=True, timeout=60,
        )
        assert pending.returncode == 0 and pending.stdout == ""
    finally:
        assert broker.terminate() == 0
