"""HTTP pushes from a real `dovecote serve`, driven by unmodified boto3: the confirmation handshake
through the SubscribeURL, signatures checked against the certificate the broker serves, and pending
pushes that survive `kill -9`."""

import json
import subprocess
import sys
import time
import urllib.request

import boto3
from botocore.config import Config

from ..push_endpoint import ThreadedEndpoint
from ..sns_verify import verify_sns_message
from .serve import ServeProcess


def sns_client(broker: ServeProcess):
    return boto3.client(
        "sns", endpoint_url=f"http://127.0.0.1:{broker.http_port}", region_name="us-east-1",
        aws_access_key_id="test", aws_secret_access_key="test", config=Config(retries={"max_attempts": 1}),
    )


def wait_until(condition, timeout_s=30.0):
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def of_type(endpoint: ThreadedEndpoint, message_type: str):
    return [r for r in endpoint.received() if r.headers.get("x-amz-sns-message-type") == message_type]


def test_boto3_subscribes_an_http_endpoint_which_confirms_by_its_subscribe_url(tmp_path):
    broker = ServeProcess(tmp_path / "data").start()
    try:
        with ThreadedEndpoint().running() as endpoint:
            sns = sns_client(broker)
            topic = sns.create_topic(Name="alerts")["TopicArn"]
            assert sns.subscribe(TopicArn=topic, Protocol="http", Endpoint=endpoint.url)["SubscriptionArn"] == "pending confirmation"
            wait_until(lambda: of_type(endpoint, "SubscriptionConfirmation"))
            confirmation = of_type(endpoint, "SubscriptionConfirmation")[0].json()
            with urllib.request.urlopen(confirmation["SigningCertURL"]) as response:
                certificate = response.read()
            verify_sns_message(confirmation, certificate)
            with urllib.request.urlopen(confirmation["SubscribeURL"]) as response:  # what an endpoint does
                answer = response.read().decode()
            assert "<ConfirmSubscriptionResult><SubscriptionArn>arn:aws:sns:us-east-1:000000000000:alerts:" in answer
            (subscription,) = sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]
            assert subscription["SubscriptionArn"].startswith(topic + ":")

            sns.publish(TopicArn=topic, Message="disk full", Subject="host-1")
            wait_until(lambda: of_type(endpoint, "Notification"))
            (notification,) = of_type(endpoint, "Notification")
            assert notification.headers["x-amz-sns-subscription-arn"] == subscription["SubscriptionArn"]
            message = notification.json()
            assert (message["Message"], message["Subject"]) == ("disk full", "host-1")
            verify_sns_message(message, certificate)
    finally:
        assert broker.terminate() == 0


def cli(broker: ServeProcess, *args: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-m", "dovecote", *args, "--port", str(broker.port)], capture_output=True, text=True, timeout=60, check=True
    )
    return json.loads(done.stdout)


def push_outcomes(data_dir) -> dict[str, int]:
    """`dovecote log stats`' count of pushes by outcome (it reads a running broker's log too)."""
    stats = subprocess.run(
        [sys.executable, "-m", "dovecote", "log", "stats", "--data-dir", str(data_dir)], capture_output=True, text=True, timeout=60, check=True
    )
    return json.loads(stats.stdout)["push_outcomes"]


def test_pending_pushes_survive_kill_9_and_arrive_after_restart(tmp_path):
    data_dir = tmp_path / "data"
    broker = ServeProcess(data_dir).start()
    with ThreadedEndpoint().running() as endpoint:
        sns = sns_client(broker)
        topic = sns.create_topic(Name="jobs")["TopicArn"]
        policy = {"healthyRetryPolicy": {"minDelayTarget": 1, "maxDelayTarget": 1, "numRetries": 100}}
        # Subscribed and confirmed from the command line this time.
        cli(broker, "subscribe", "jobs", endpoint.url, "--protocol", "http", "--attribute", f"DeliveryPolicy={json.dumps(policy)}")
        wait_until(lambda: of_type(endpoint, "SubscriptionConfirmation"))
        token = of_type(endpoint, "SubscriptionConfirmation")[0].json()["Token"]
        arn = cli(broker, "confirm-subscription", "jobs", token)["SubscriptionArn"]
        assert arn.startswith(topic + ":")
        endpoint.status = 500
        sent = [f"job-{i}" for i in range(200)]
        for start in range(0, len(sent), 10):
            entries = [{"Id": str(i), "Message": body} for i, body in enumerate(sent[start : start + 10])]
            assert not sns.publish_batch(TopicArn=topic, PublishBatchRequestEntries=entries).get("Failed")
        wait_until(lambda: len(of_type(endpoint, "Notification")) >= 400)  # every push failed at least once
        broker.kill9()
        endpoint.status = 200
        failed_before = len(of_type(endpoint, "Notification"))
        broker = ServeProcess(data_dir).start()
        try:
            def delivered():
                return {r.json()["Message"] for r in of_type(endpoint, "Notification")[failed_before:]}

            wait_until(lambda: delivered() == set(sent))
            # An answer can reach the endpoint's log before the broker has read it: wait for the
            # broker to have stored every delivery before stopping it.
            wait_until(lambda: push_outcomes(data_dir).get("delivered", 0) >= len(sent), timeout_s=60)
        finally:
            assert broker.terminate() == 0
    # The log tells each push's story: queued, failed attempts (before and after the kill), delivered.
    history = subprocess.run(
        [sys.executable, "-m", "dovecote", "log", "--data-dir", str(data_dir), "--subscription", arn, "--json"],
        capture_output=True, text=True, timeout=60, check=True,
    )
    records = [json.loads(line) for line in history.stdout.splitlines()]
    kinds = {record["kind"] for record in records}
    assert {"PushQueued", "PushAttempted", "PushDone"} <= kinds
    assert sum(1 for r in records if r["kind"] == "PushDone" and r["outcome"] == "delivered") >= 200
    assert push_outcomes(data_dir)["delivered"] >= 200
