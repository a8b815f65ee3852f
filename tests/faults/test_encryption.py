"""Encryption at rest with a real `dovecote serve`: message contents of encrypted queues and topics
never reach the data file, and are there after kill -9, after data keys were replaced and after the
master key was rotated while the broker served; `dovecote log` opens them with the key file and
shows <encrypted> without it."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

from dovecote.net.client import MessageAttributeValue

from .serve import ServeProcess

MARKER = "MARKER-c3a7"
ARN = "arn:aws:sqs:us-east-1:000000000000:"


def dovecote(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "dovecote", *args], capture_output=True, text=True, timeout=60)
    assert not check or result.returncode == 0, result.stderr
    return result


def data_file(data_dir) -> bytes:
    return (data_dir / "lmdb" / "data.mdb").read_bytes()


def receive_bodies(client, queue: str, count: int, timeout_s: float = 10) -> list[str]:
    bodies: list[str] = []
    deadline = time.monotonic() + timeout_s
    while len(bodies) < count and time.monotonic() < deadline:
        for message in client.receive_message(queue, max_number_of_messages=10, wait_time_seconds=1):
            bodies.append(message.body)
            client.delete_message(queue, message.receipt_handle)
    return bodies


def test_encrypted_contents_never_reach_the_data_file_and_survive_kill_9(tmp_path):
    data_dir = tmp_path / "data"
    broker = ServeProcess(data_dir).start()
    with broker.client() as client:
        client.create_queue("managed", {"SqsManagedSseEnabled": "true"})
        client.create_queue("kms", {"KmsMasterKeyId": "alias/orders"})
        client.create_queue("plain", {"SqsManagedSseEnabled": "false"})  # new queues encrypt by default
        client.create_topic("news", {"KmsMasterKeyId": "alias/aws/sns"})
        client.subscribe("news", "sqs", ARN + "plain", {"RawMessageDelivery": "true"})
        for queue in ("managed", "kms"):
            for number in range(3):
                client.send_message(queue, f"{queue} {number} {MARKER}", message_attributes={"tag": MessageAttributeValue("String", MARKER)})
        client.publish("news", f"published {MARKER}")
        client.send_message("plain", "PLAIN-BODY-IN-CLEAR")
    broker.kill9()
    data = data_file(data_dir)
    assert MARKER.encode() not in data
    assert b"PLAIN-BODY-IN-CLEAR" in data  # the grep sees what is stored in clear
    assert (data_dir / "sse-master.key").stat().st_mode & 0o777 == 0o600

    broker = ServeProcess(data_dir).start()
    with broker.client() as client:
        assert sorted(receive_bodies(client, "managed", 3)) == [f"managed {n} {MARKER}" for n in range(3)]
        assert sorted(receive_bodies(client, "kms", 3)) == [f"kms {n} {MARKER}" for n in range(3)]
        assert sorted(receive_bodies(client, "plain", 2)) == sorted([f"published {MARKER}", "PLAIN-BODY-IN-CLEAR"])
    assert broker.terminate() == 0

    # the key beside the data: `dovecote log` opens with it, and shows <encrypted> without it
    opened = [json.loads(line) for line in dovecote("log", "--data-dir", str(data_dir), "--json", "--kind", "MessageSent").stdout.splitlines()]
    assert sorted(line["body"] for line in opened if line["queue"] == "kms") == [f"kms {n} {MARKER}" for n in range(3)]
    assert all(line["encrypted"] == {"data_key": line["encrypted"]["data_key"], "opened": True} for line in opened if line["queue"] != "plain" or "published" in line["body"])
    (data_dir / "sse-master.key").rename(tmp_path / "master.key")
    closed = dovecote("log", "--data-dir", str(data_dir), "--queue", "kms", "--kind", "MessageSent").stdout
    assert MARKER not in closed and closed.count("body=<encrypted>") == 3
    published = json.loads(dovecote("log", "--data-dir", str(data_dir), "--json", "--kind", "Published").stdout)
    assert published["message"] == "<encrypted>" and published["encrypted"]["opened"] is False
    with_key = dovecote("log", "--data-dir", str(data_dir), "--kind", "Published", "--sse-master-key-file", str(tmp_path / "master.key"), "--json").stdout
    assert json.loads(with_key)["message"] == f"published {MARKER}"
    refused = dovecote("replay", "--data-dir", str(data_dir), "--queue", "kms", "--into", "x", "--port", "1", check=False)
    assert refused.returncode == 1 and "stored encrypted" in refused.stderr
    # a broker without its master key does not start, and makes no new key in its place
    failed = subprocess.run(ServeProcess(data_dir).command(), capture_output=True, text=True, timeout=60)
    assert failed.returncode == 3 and "master key file" in failed.stderr
    assert not (data_dir / "sse-master.key").exists()


def test_the_master_key_is_rotated_while_the_broker_serves(tmp_path):
    data_dir, key_file = tmp_path / "data", tmp_path / "keys" / "master.key"
    key_file.parent.mkdir()
    broker = ServeProcess(data_dir, "--sse-master-key-file", str(key_file)).start()
    sent = []
    with broker.client() as client:
        client.create_queue("q", {"KmsMasterKeyId": "alias/q", "KmsDataKeyReusePeriodSeconds": "60"})
        for number in range(5):
            client.send_message("q", f"before rotation {number} {MARKER}")
            sent.append(f"before rotation {number} {MARKER}")
        old_key = key_file.read_text()
        added = dovecote("rotate-key", "--data-dir", str(data_dir), "--sse-master-key-file", str(key_file)).stdout
        assert "new master key mk-" in added
        refused = dovecote("rotate-key", "--data-dir", str(data_dir), "--sse-master-key-file", str(key_file), "--drop-old", check=False)
        assert refused.returncode == 1 and "still wrapped" in refused.stderr  # not before the broker re-wrapped them
        broker.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # the broker serves on meanwhile
            client.send_message("q", f"during rotation {len(sent)} {MARKER}")
            sent.append(f"during rotation {len(sent)} {MARKER}")
            log = dovecote("log", "--data-dir", str(data_dir), "--kind", "DataKeyRewrapped").stdout
            if log:
                break
        assert "DataKeyRewrapped" in log
        dropped = dovecote("rotate-key", "--data-dir", str(data_dir), "--sse-master-key-file", str(key_file), "--drop-old").stdout
        assert "dropped mk-" in dropped and old_key.splitlines()[-1] not in key_file.read_text()
        client.send_message("q", f"after rotation {MARKER}")
        sent.append(f"after rotation {MARKER}")
    broker.kill9()
    assert MARKER.encode() not in data_file(data_dir)
    # only the new master key is left, and it reads everything
    broker = ServeProcess(data_dir, "--sse-master-key-file", str(key_file)).start()
    with broker.client() as client:
        assert sorted(receive_bodies(client, "q", len(sent))) == sorted(sent)
    assert broker.terminate() == 0
    # no key beside the data: the log reads <encrypted> unless it is given the key file
    closed = dovecote("log", "--data-dir", str(data_dir), "--kind", "MessageSent").stdout
    assert MARKER not in closed and closed.count("<encrypted>") >= len(sent)
    opened = dovecote("log", "--data-dir", str(data_dir), "--kind", "MessageSent", "--sse-master-key-file", str(key_file)).stdout
    assert "<encrypted>" not in opened and opened.count("encrypted=data-key-") == len(sent)
