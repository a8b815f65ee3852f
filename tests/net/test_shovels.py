"""Shovels end to end: a real `dovecote serve` linked to real, independent remotes that the tests
start — moto's server (SQS and SNS) and a second `dovecote serve` with keys — through outages,
a fault proxy that answers 5xx and throttling, and kill -9 of the local broker. Ledgers check that
every acknowledged local send arrives, FIFO groups in order and without duplicates."""

from __future__ import annotations

import contextlib
import http.server
import json
import ssl
import subprocess
import sys
import threading
import time
import urllib.request

import boto3
import httpx
import pytest

from dovecote.actors.ops import CreateQueue, SendMessage, SendMessageBatch, SendEntry, MessageAttributeValue

from ..faults.serve import ServeProcess, free_port
from ..tls_certificates import CertificateAuthority

REMOTE_KEY = ("AKIDREMOTE", "remote-secret")
ACCOUNT = "000000000000"


def wait_until(predicate, timeout_s: float = 30, step_s: float = 0.05):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step_s)
    raise AssertionError(f"not within {timeout_s} s")


def shovel_state(broker) -> dict:
    """The one shovel's entry in the broker's /actors."""
    [shovel] = [a for a in httpx.get(f"http://127.0.0.1:{broker.http_port}/actors").json() if a["kind"] == "shovel"]
    return shovel


@pytest.fixture(scope="module")
def moto():
    """moto's server, on a loopback port of its own; its URL."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _answers(url + "/moto-api/"), timeout_s=60)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except OSError:
        return False


def client(service: str, endpoint: str, key=("test", "test")):
    return boto3.client(service, endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id=key[0], aws_secret_access_key=key[1])


def config_file(tmp_path, endpoint: str, key, shovels: list[dict], name="remote", verify: bool | str = True) -> str:
    """A configuration file with one remote (its secret in $REMOTE_SECRET) and the shovels."""
    lines = [f"[remote.{name}]", f'endpoint_url = "{endpoint}"', 'region = "us-east-1"', f'access_key_id = "{key[0]}"',
             'secret_access_key_env = "REMOTE_SECRET"', "timeout_s = 5", f"verify = {json.dumps(verify)}"]
    for shovel in shovels:
        lines += ["", "[[shovel]]"] + [f"{field} = {json.dumps(value)}" for field, value in shovel.items()]
    path = tmp_path / f"shovels-{time.monotonic_ns()}.toml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def local_broker(tmp_path, config: str, secret: str, data="local") -> ServeProcess:
    import os

    return ServeProcess(tmp_path / data, "--config", config, env={**os.environ, "REMOTE_SECRET": secret}).start()


def drain(sqs, url: str, expected: int, timeout_s: float = 60, **options) -> list[dict]:
    """Receive and delete until `expected` messages came (or the time is up); in arrival order."""
    got: list[dict] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < expected and time.monotonic() < deadline:
        messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1, **options).get("Messages", [])
        if messages:
            got += messages
            sqs.delete_message_batch(QueueUrl=url, Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)
            ])
    return got


def metrics(serve: ServeProcess) -> dict[str, float]:
    text = httpx.get(f"http://127.0.0.1:{serve.http_port}/metrics").text
    return {line.rpartition(" ")[0]: float(line.rpartition(" ")[2]) for line in text.splitlines() if line.startswith("dovecote_shovel")}


def test_up_to_moto_sqs_queues_and_an_sns_topic_and_down_from_moto(tmp_path, moto):
    remote_sqs, remote_sns = client("sqs", moto), client("sns", moto)
    standard = remote_sqs.create_queue(QueueName="telemetry")["QueueUrl"]
    fifo = remote_sqs.create_queue(QueueName="events.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
    topic = remote_sns.create_topic(Name="alerts")["TopicArn"]
    subscriber = remote_sqs.create_queue(QueueName="alert-inbox")["QueueUrl"]
    subscriber_arn = remote_sqs.get_queue_attributes(QueueUrl=subscriber, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    remote_sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=subscriber_arn, Attributes={"RawMessageDelivery": "true"})
    commands = remote_sqs.create_queue(QueueName="commands")["QueueUrl"]
    for i in range(12):
        remote_sqs.send_message(QueueUrl=commands, MessageBody=f"command {i}",
                                MessageAttributes={"n": {"DataType": "Number", "StringValue": str(i)}})
    config = config_file(tmp_path, moto, ("test", "test"), [
        {"name": "telemetry-up", "from": "telemetry", "to": f"remote:{standard}"},
        {"name": "events-up", "from": "events.fifo", "to": f"remote:{fifo}"},
        {"name": "alerts-up", "from": "alerts", "to": f"remote:{topic}"},
        {"name": "commands-down", "from": f"remote:{commands}", "to": "commands", "wait_time_s": 1},
    ])
    local = local_broker(tmp_path, config, "test")
    try:
        with local.client() as native:
            for queue in ("telemetry", "alerts", "commands"):
                native.call(CreateQueue(queue))
            native.call(CreateQueue("events.fifo", {"FifoQueue": "true", "ContentBasedDeduplication": "true"}))
            attributes = {"kind": MessageAttributeValue("String", "reading"), "raw": MessageAttributeValue("Binary", binary_value=b"\x00\x01")}
            for first in (0, 10):
                native.call(SendMessageBatch("telemetry", [
                    SendEntry(str(i), f"reading {i}", message_attributes=attributes) for i in range(first, min(first + 10, 15))
                ]))
            for i in range(9):
                native.call(SendMessage("events.fifo", f"event {i}", message_group_id=f"g{i % 3}"))
            native.call(SendMessage("alerts", "overheating"))
        readings = drain(remote_sqs, standard, 15, MessageAttributeNames=["All"])
        assert sorted(m["Body"] for m in readings) == sorted(f"reading {i}" for i in range(15))
        assert readings[0]["MessageAttributes"] == {
            "kind": {"DataType": "String", "StringValue": "reading"}, "raw": {"DataType": "Binary", "BinaryValue": b"\x00\x01"},
        }
        events = drain(remote_sqs, fifo, 9, AttributeNames=["MessageGroupId"])
        for group in ("g0", "g1", "g2"):
            assert [m["Body"] for m in events if m["Attributes"]["MessageGroupId"] == group] == [
                f"event {i}" for i in range(9) if f"g{i % 3}" == group
            ]
        assert [m["Body"] for m in drain(remote_sqs, subscriber, 1)] == ["overheating"]
        local_sqs = client("sqs", f"http://127.0.0.1:{local.http_port}")
        stored = drain(local_sqs, f"http://127.0.0.1:{local.http_port}/{ACCOUNT}/commands", 12, MessageAttributeNames=["All"])
        assert sorted(m["Body"] for m in stored) == sorted(f"command {i}" for i in range(12))
        assert {m["MessageAttributes"]["n"]["StringValue"] for m in stored} == {str(i) for i in range(12)}
        wait_until(lambda: "Messages" not in remote_sqs.receive_message(QueueUrl=commands, VisibilityTimeout=0))
        shown = metrics(local)
        assert shown['dovecote_shovel_messages_forwarded_total{shovel="telemetry-up",direction="up"}'] == 15
        assert shown['dovecote_shovel_link_up{shovel="commands-down",direction="down"}'] == 1
        assert shown['dovecote_shovel_backlog_messages{shovel="telemetry-up",direction="up"}'] == 0
    finally:
        local.terminate()
    log = subprocess.run(
        [sys.executable, "-m", "dovecote", "log", "records", "--data-dir", str(tmp_path / "local"), "--kind", "MessageForwarded", "--json"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.splitlines()
    forwards = [json.loads(line) for line in log]
    assert len(forwards) == 15 + 9 + 1 + 12
    assert {f["direction"] for f in forwards if f["queue"] == "commands"} == {"down"}
    assert all(f["remote_message_id"] for f in forwards)


def remote_dovecote(tmp_path) -> ServeProcess:
    return ServeProcess(tmp_path / "remote", "--access-key", ":".join(REMOTE_KEY)).start()


class Ledger:
    """What the local broker acknowledged, by group, in order."""

    def __init__(self) -> None:
        self.sent: dict[str, list[str]] = {}

    def send(self, native, queue: str, count: int, start: int, groups: int) -> None:
        for i in range(start, start + count):
            group = f"g{i % groups}"
            native.call(SendMessage(queue, f"{group}:{i}", message_group_id=group))
            self.sent.setdefault(group, []).append(f"{group}:{i}")

    def check_fifo(self, received: list[dict]) -> None:
        bodies = [m["Body"] for m in received]
        assert len(bodies) == len(set(bodies)), "a message arrived twice"
        for group, sent in self.sent.items():
            assert [body for body in bodies if body.startswith(group + ":")] == sent


def test_fifo_up_to_a_second_dovecote_through_its_outage_and_a_kill9_of_the_local_broker(tmp_path):
    remote = remote_dovecote(tmp_path)
    remote_sqs = client("sqs", f"http://127.0.0.1:{remote.http_port}", REMOTE_KEY)
    url = remote_sqs.create_queue(QueueName="orders.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
    config = config_file(tmp_path, f"http://127.0.0.1:{remote.http_port}", REMOTE_KEY, [
        {"name": "orders-up", "from": "orders.fifo", "to": f"remote:{url}", "batch_size": 7,
         "backoff_initial_s": 0.05, "backoff_max_s": 0.5, "visibility_timeout_s": 2},
    ])
    local = local_broker(tmp_path, config, REMOTE_KEY[1])
    ledger = Ledger()
    try:
        with local.client() as native:
            native.call(CreateQueue("orders.fifo", {"FifoQueue": "true", "ContentBasedDeduplication": "true"}))
            ledger.send(native, "orders.fifo", 60, 0, 4)
        remote.kill9()  # the remote goes away mid-stream; local senders go on
        with local.client() as native:
            ledger.send(native, "orders.fifo", 60, 60, 4)
        wait_until(lambda: metrics(local)['dovecote_shovel_link_up{shovel="orders-up",direction="up"}'] == 0)
        remote.start()
        with local.client() as native:
            ledger.send(native, "orders.fifo", 60, 120, 4)
        local.kill9()  # mid-stream: messages in hand are forwarded again after the restart
        local.start()
        with local.client() as native:
            ledger.send(native, "orders.fifo", 20, 180, 4)
        received = drain(remote_sqs, url, 200, timeout_s=90)
        ledger.check_fifo(received)
        assert len(received) == 200
    finally:
        local.terminate()
        remote.terminate()


class FaultProxy:
    """An HTTP proxy in front of a remote that answers some requests itself: a 500, or AWS's
    throttling error (400 with x-amzn-query-error ThrottlingException), in turns; the others it
    passes on as they came (the signature covers the Host header, which it keeps)."""

    def __init__(self, upstream: str, fail_every: int = 2) -> None:
        self.upstream = upstream
        self.fail_every = fail_every
        self.requests = 0
        self.faults = 0
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                proxy.requests += 1
                if proxy.requests % proxy.fail_every == 0:
                    proxy.faults += 1
                    throttled = proxy.faults % 2 == 0
                    status = 400 if throttled else 500
                    answer = json.dumps({"__type": "ThrottlingException" if throttled else "InternalError", "message": "injected"})
                    self.send_response(status)
                    self.send_header("x-amzn-query-error", ("ThrottlingException;Sender" if throttled else "InternalError;Receiver"))
                    self.send_header("Content-Length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer.encode())
                    return
                response = httpx.post(proxy.upstream + self.path, content=body, headers=dict(self.headers), timeout=30)
                self.send_response(response.status_code)
                for name, value in response.headers.items():
                    if name.lower() not in ("content-length", "transfer-encoding", "connection", "date", "server"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(response.content)))
                self.end_headers()
                self.wfile.write(response.content)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    @contextlib.contextmanager
    def running(self):
        thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self.server.shutdown()
            self.server.server_close()


def test_5xx_and_throttling_from_the_remote_are_retried_and_nothing_is_lost_either_way(tmp_path):
    remote = remote_dovecote(tmp_path)
    remote_sqs = client("sqs", f"http://127.0.0.1:{remote.http_port}", REMOTE_KEY)
    up_url = remote_sqs.create_queue(QueueName="readings")["QueueUrl"]
    down_url = remote_sqs.create_queue(QueueName="commands")["QueueUrl"]
    remote_sqs.send_message_batch(QueueUrl=down_url, Entries=[{"Id": str(i), "MessageBody": f"command {i}"} for i in range(10)])
    remote_sqs.send_message_batch(QueueUrl=down_url, Entries=[{"Id": str(i), "MessageBody": f"command {i + 10}"} for i in range(10)])
    with FaultProxy(f"http://127.0.0.1:{remote.http_port}").running() as proxy:
        config = config_file(tmp_path, proxy.url, REMOTE_KEY, [
            {"name": "readings-up", "from": "readings", "to": f"remote:{up_url}", "backoff_initial_s": 0.05, "backoff_max_s": 0.2},
            {"name": "commands-down", "from": f"remote:{down_url}", "to": "commands", "wait_time_s": 1,
             "visibility_timeout_s": 1, "backoff_initial_s": 0.05, "backoff_max_s": 0.2},
        ])
        local = local_broker(tmp_path, config, REMOTE_KEY[1])
        try:
            with local.client() as native:
                native.call(CreateQueue("readings"))
                native.call(CreateQueue("commands"))
                for i in range(5):
                    native.call(SendMessageBatch("readings", [SendEntry(str(j), f"reading {i * 10 + j}") for j in range(10)]))
            readings = drain(remote_sqs, up_url, 50)
            # The proxy refuses before the remote sees a request, so an accepted batch is never sent again.
            assert sorted(m["Body"] for m in readings) == sorted(f"reading {i}" for i in range(50))
            local_sqs = client("sqs", f"http://127.0.0.1:{local.http_port}")
            commands = drain(local_sqs, f"http://127.0.0.1:{local.http_port}/{ACCOUNT}/commands", 20)
            assert sorted({m["Body"] for m in commands}) == sorted(f"command {i}" for i in range(20))
            # Standard queues, at least once: a refused remote delete brings its batch again, no more.
            assert len(commands) - 20 <= 10 * proxy.faults
            shown = metrics(local)
            assert proxy.faults >= 4 and shown['dovecote_shovel_failures_total{shovel="readings-up",direction="up"}'] >= 1
        finally:
            local.terminate()
    remote.terminate()


def test_wrong_credentials_are_a_logged_retried_failure_and_the_broker_serves_on(tmp_path):
    remote = remote_dovecote(tmp_path)
    remote_sqs = client("sqs", f"http://127.0.0.1:{remote.http_port}", REMOTE_KEY)
    url = remote_sqs.create_queue(QueueName="readings")["QueueUrl"]
    config = config_file(tmp_path, f"http://127.0.0.1:{remote.http_port}", REMOTE_KEY, [
        {"name": "readings-up", "from": "readings", "to": f"remote:{url}", "backoff_initial_s": 0.05, "backoff_max_s": 0.2},
    ])
    local = local_broker(tmp_path, config, "not-the-secret")
    try:
        with local.client() as native:
            native.call(CreateQueue("readings"))
            native.call(SendMessage("readings", "kept"))
        # The first failures may be the local queue not existing yet; the signature must come next.
        wait_until(lambda: "SignatureDoesNotMatch" in (shovel_state(local)["last_error"] or ""))
        assert shovel_state(local)["link_up"] is False
        shown = metrics(local)
        assert shown['dovecote_shovel_backlog_messages{shovel="readings-up",direction="up"}'] == 1
        assert "Messages" not in remote_sqs.receive_message(QueueUrl=url)
    finally:
        assert local.terminate() == 0
        remote.terminate()
    assert "SignatureDoesNotMatch" in local.process.stderr.read()


def test_fifo_down_from_a_second_dovecote_through_its_outage_and_a_kill9_of_the_local_broker(tmp_path):
    remote = remote_dovecote(tmp_path)
    remote_sqs = client("sqs", f"http://127.0.0.1:{remote.http_port}", REMOTE_KEY)
    url = remote_sqs.create_queue(QueueName="commands.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
    sent: dict[str, list[str]] = {}

    def remote_sends(start: int, count: int) -> None:
        for first in range(start, start + count, 10):
            entries = [{"Id": str(i), "MessageBody": f"g{i % 3}:{i}", "MessageGroupId": f"g{i % 3}", "MessageDeduplicationId": str(i)}
                       for i in range(first, min(first + 10, start + count))]
            remote_sqs.send_message_batch(QueueUrl=url, Entries=entries)
            for entry in entries:
                sent.setdefault(entry["MessageGroupId"], []).append(entry["MessageBody"])

    remote_sends(0, 90)
    config = config_file(tmp_path, f"http://127.0.0.1:{remote.http_port}", REMOTE_KEY, [
        {"name": "commands-down", "from": f"remote:{url}", "to": "commands.fifo", "batch_size": 10, "wait_time_s": 1,
         "visibility_timeout_s": 2, "backoff_initial_s": 0.05, "backoff_max_s": 0.5},
    ])
    local = local_broker(tmp_path, config, REMOTE_KEY[1])
    try:
        with local.client() as native:
            native.call(CreateQueue("commands.fifo", {"FifoQueue": "true"}))
        local_sqs = client("sqs", f"http://127.0.0.1:{local.http_port}")
        local_url = f"http://127.0.0.1:{local.http_port}/{ACCOUNT}/commands.fifo"
        remote.kill9()  # the remote goes away mid-stream
        remote.start()
        remote_sends(90, 60)
        local.kill9()  # mid-stream: what was stored and not yet deleted remotely comes again, and is dropped as a duplicate
        local.start()
        received = drain(local_sqs, local_url, 150, timeout_s=90)
        bodies = [m["Body"] for m in received]
        assert len(bodies) == len(set(bodies)) == 150
        for group, bodies_sent in sent.items():
            assert [body for body in bodies if body.startswith(group + ":")] == bodies_sent
        wait_until(lambda: "Messages" not in remote_sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1))
    finally:
        local.terminate()
        remote.terminate()


def test_up_over_https_checks_the_remotes_certificate(tmp_path):
    ca = CertificateAuthority(tmp_path / "ca", "test CA")
    server = ca.issue("server", server=True)
    remote = ServeProcess(
        tmp_path / "remote", "--access-key", ":".join(REMOTE_KEY), "--tls-cert", server.certificate_file, "--tls-key", server.key_file,
        tls=ssl.create_default_context(cafile=ca.certificate_file),
    ).start()
    endpoint = f"https://127.0.0.1:{remote.http_port}"
    remote_sqs = boto3.client("sqs", endpoint_url=endpoint, region_name="us-east-1", verify=ca.certificate_file,
                              aws_access_key_id=REMOTE_KEY[0], aws_secret_access_key=REMOTE_KEY[1])
    url = remote_sqs.create_queue(QueueName="readings")["QueueUrl"]
    trusted = config_file(tmp_path, endpoint, REMOTE_KEY, [{"name": "up", "from": "readings", "to": f"remote:{url}"}],
                          verify=ca.certificate_file)
    untrusted = config_file(tmp_path, endpoint, REMOTE_KEY, [{"name": "up", "from": "readings", "to": f"remote:{url}",
                                                              "backoff_initial_s": 0.05, "backoff_max_s": 0.2}])
    try:
        local = local_broker(tmp_path, untrusted, REMOTE_KEY[1], data="untrusting")
        try:  # certifi's CAs do not know the test CA: refused, said, retried
            with local.client() as native:
                native.call(CreateQueue("readings"))
                native.call(SendMessage("readings", "over TLS"))
            # The shovel may first fail on the local queue not existing yet; the certificate must come next.
            wait_until(lambda: "CERTIFICATE_VERIFY_FAILED" in (shovel_state(local)["last_error"] or ""))
            assert remote_sqs.receive_message(QueueUrl=url).get("Messages", []) == []
        finally:
            local.terminate()
        local = local_broker(tmp_path, trusted, REMOTE_KEY[1], data="trusting")
        try:
            with local.client() as native:
                native.call(CreateQueue("readings"))
                native.call(SendMessage("readings", "over TLS"))
            assert [m["Body"] for m in drain(remote_sqs, url, 1)] == ["over TLS"]
        finally:
            local.terminate()
    finally:
        remote.terminate()
