"""The embedded broker (dovecote.embedded, dovecote.open_broker) and its controllable clock, end to
end: real sockets, boto3 and the native client, from a plain script, from asyncio and from Trio."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request

import boto3
import httpx
import pytest
import trio
import trio.testing

import dovecote
from dovecote.app import ListenerError
from dovecote.config import ConfigError
from dovecote.embedded_broker import ClockNotControllable
from dovecote.net.client import BlockingClient, open_client
from tests.push_endpoint import ThreadedEndpoint


def sqs_client(broker, region: str = "us-east-1"):
    return boto3.client(
        "sqs", endpoint_url=broker.endpoint_url, region_name=region, aws_access_key_id="test", aws_secret_access_key="test"
    )


def sent_timestamp(message: dict) -> int:
    return int(message["Attributes"]["SentTimestamp"])


def wait_parked(broker, queue: str) -> None:
    """Until a long poll on `queue` waits in the broker (as /metrics counts them)."""
    parked = f'dovecote_queue_long_polls_waiting{{region="us-east-1",queue="{queue}"}} 1'
    deadline = time.monotonic() + 10
    while parked not in httpx.get(f"{broker.endpoint_url}/metrics").text:
        assert time.monotonic() < deadline, f"no long poll parked on {queue}"
        time.sleep(0.01)


# --- from each kind of program ------------------------------------------------------------------------

SCRIPT = """
import json, os, boto3, dovecote
from dovecote.net.client import BlockingClient

with dovecote.embedded() as broker:
    sqs = boto3.client("sqs", endpoint_url=broker.endpoint_url, region_name="us-east-1",
                       aws_access_key_id="test", aws_secret_access_key="test")
    url = sqs.create_queue(QueueName="orders")["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="from boto3")
    with BlockingClient(*broker.native_address) as client:
        bodies = [message.body for message in client.receive_message("orders")]
    print(json.dumps({"bodies": bodies, "data_dir": broker.data_dir, "existed": os.path.isdir(broker.data_dir)}))
"""


def test_a_plain_script_embeds_a_broker_and_its_temporary_directory_goes_with_it(tmp_path):
    script = tmp_path / "app.py"
    script.write_text(SCRIPT)
    finished = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False)
    assert finished.returncode == 0, finished.stderr
    result = json.loads(finished.stdout)
    assert result["bodies"] == ["from boto3"]
    assert result["existed"] and not os.path.exists(result["data_dir"])


def test_an_asyncio_program_embeds_a_broker_in_a_thread():
    async def main() -> list[str]:
        with dovecote.embedded() as broker:
            async with httpx.AsyncClient(base_url=broker.endpoint_url) as http:

                async def sqs(action: str, **body) -> dict:
                    headers = {"X-Amz-Target": f"AmazonSQS.{action}", "Content-Type": "application/x-amz-json-1.0"}
                    response = await http.post("/", headers=headers, content=json.dumps(body))
                    assert response.status_code == 200, response.text
                    return response.json()

                url = (await sqs("CreateQueue", QueueName="jobs"))["QueueUrl"]
                # The asyncio loop keeps running while the broker works in its own thread.
                await asyncio.gather(*(sqs("SendMessage", QueueUrl=url, MessageBody=str(n)) for n in range(5)))
                received = await sqs("ReceiveMessage", QueueUrl=url, MaxNumberOfMessages=10)
                return sorted(message["Body"] for message in received["Messages"])

    assert asyncio.run(main()) == ["0", "1", "2", "3", "4"]


async def test_a_trio_program_opens_a_broker_in_its_own_nursery(tmp_path):
    async with dovecote.open_broker(str(tmp_path / "data")) as broker:
        async with open_client(*broker.native_address) as client:
            await client.create_queue("native")
            await client.send_message("native", "from trio")
        sqs = sqs_client(broker)
        url = await trio.to_thread.run_sync(lambda: sqs.get_queue_url(QueueName="native")["QueueUrl"])
        received = await trio.to_thread.run_sync(lambda: sqs.receive_message(QueueUrl=url)["Messages"])
        assert [message["Body"] for message in received] == ["from trio"]
    assert (tmp_path / "data").is_dir()  # a directory given is the caller's: kept


def test_two_brokers_side_by_side_are_independent():
    with dovecote.embedded() as first, dovecote.embedded(clock="controllable") as second:
        assert first.data_dir != second.data_dir
        assert first.native_address != second.native_address and first.endpoint_url != second.endpoint_url
        one, two = sqs_client(first), sqs_client(second)
        one.create_queue(QueueName="only-in-first")
        assert "QueueUrls" not in two.list_queues()
        before = int(time.time() * 1000)
        second.advance(3600)  # the second's clock only
        for sqs, within in ((one, range(before, before + 600_000)), (two, range(before + 3_600_000, before + 4_200_000))):
            url = sqs.create_queue(QueueName="stamped")["QueueUrl"]
            sqs.send_message(QueueUrl=url, MessageBody="now")
            assert sent_timestamp(sqs.receive_message(QueueUrl=url, AttributeNames=["All"])["Messages"][0]) in within


def test_leaving_the_block_stops_the_broker_cleanly_and_the_log_reads_back(tmp_path):
    data_dir = str(tmp_path / "data")
    with dovecote.embedded(data_dir) as broker:
        sqs = sqs_client(broker)
        url = sqs.create_queue(QueueName="kept")["QueueUrl"]
        sqs.send_message(QueueUrl=url, MessageBody="durable")
        answered: list[object] = []
        client = BlockingClient(*broker.native_address)
        polling = threading.Thread(target=lambda: answered.append(client.receive_message("empty-or-not", wait_time_seconds=20)))
        client.create_queue("empty-or-not")
        polling.start()
        wait_parked(broker, "empty-or-not")
        stopping_at = time.monotonic()
    assert time.monotonic() - stopping_at < 10, "a parked long poll held up the stop"
    polling.join(10)
    client.close()
    assert answered == [[]], "the long poll in flight was answered before the broker stopped"
    records = subprocess.run(
        [sys.executable, "-m", "dovecote", "log", "--data-dir", data_dir, "--json", "--queue", "kept"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert records.returncode == 0, records.stderr
    kinds = [json.loads(line)["kind"] for line in records.stdout.splitlines()]
    assert "MessageSent" in kinds
    with dovecote.embedded(data_dir) as again:
        assert [m["Body"] for m in sqs_client(again).receive_message(QueueUrl=url.replace(broker.endpoint_url, again.endpoint_url))["Messages"]] == ["durable"]


def fsyncs(broker) -> float:
    for line in httpx.get(f"{broker.endpoint_url}/metrics").text.splitlines():
        if line.startswith("dovecote_log_fsyncs_total "):
            return float(line.split()[1])
    raise AssertionError("no dovecote_log_fsyncs_total in /metrics")


def test_a_given_directory_is_fsynced_and_a_temporary_one_is_not(tmp_path):
    """A directory the application gives outlives the process: its commits are durable, as serve's;
    a temporary one is removed with the broker, so fsyncing it would only cost time."""
    with dovecote.embedded(str(tmp_path / "kept")) as broker:
        sqs_client(broker).create_queue(QueueName="durable")
        assert fsyncs(broker) > 0
    with dovecote.embedded() as broker:
        sqs_client(broker).create_queue(QueueName="throwaway")
        assert fsyncs(broker) == 0


async def test_a_trio_callers_own_error_leaves_open_broker_with_its_cause():
    with pytest.raises(KeyError) as raised:
        async with dovecote.open_broker():
            try:
                raise ValueError("the cause")
            except ValueError as cause:
                raise KeyError("mine") from cause
    assert isinstance(raised.value.__cause__, ValueError)


# --- the controllable clock --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def timed_broker():
    with dovecote.embedded(clock="controllable") as broker:
        yield broker


def test_a_30_second_visibility_timeout_expires_after_advancing_31_in_milliseconds(timed_broker):
    sqs = sqs_client(timed_broker, "visibility")
    url = sqs.create_queue(QueueName="v", Attributes={"VisibilityTimeout": "30"})["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="again")
    first = sqs.receive_message(QueueUrl=url, AttributeNames=["All"])["Messages"][0]
    started = time.monotonic()
    timed_broker.advance(25)  # short of 30 by more than the real time a loaded machine may add
    assert "Messages" not in sqs.receive_message(QueueUrl=url)
    timed_broker.advance(6)
    again = sqs.receive_message(QueueUrl=url, AttributeNames=["All"])["Messages"][0]
    assert time.monotonic() - started < 5
    assert again["MessageId"] == first["MessageId"] and again["Attributes"]["ApproximateReceiveCount"] == "2"


def test_a_delayed_message_appears_after_its_delay_and_timestamps_move_with_the_clock(timed_broker):
    sqs = sqs_client(timed_broker, "delay")
    url = sqs.create_queue(QueueName="d", Attributes={"DelaySeconds": "900"})["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="later")
    timed_broker.advance(895)
    assert "Messages" not in sqs.receive_message(QueueUrl=url)
    timed_broker.advance(6)
    delayed = sqs.receive_message(QueueUrl=url, AttributeNames=["All"])["Messages"][0]
    sqs.send_message(QueueUrl=url, MessageBody="stamped", DelaySeconds=0)
    timed_broker.advance(3600)
    sqs.send_message(QueueUrl=url, MessageBody="an hour on", DelaySeconds=0)
    by_body = {m["Body"]: m for m in sqs.receive_message(QueueUrl=url, AttributeNames=["All"], MaxNumberOfMessages=10)["Messages"]}
    assert delayed["Body"] == "later"
    assert sent_timestamp(by_body["an hour on"]) - sent_timestamp(by_body["stamped"]) >= 3_600_000


def test_retention_drops_a_message_once_the_clock_passes_it(timed_broker):
    sqs = sqs_client(timed_broker, "retention")
    url = sqs.create_queue(QueueName="r", Attributes={"MessageRetentionPeriod": "60"})["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="short-lived")
    timed_broker.advance(61)
    assert "Messages" not in sqs.receive_message(QueueUrl=url)
    assert sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"] == {
        "ApproximateNumberOfMessages": "0"
    }


def test_a_long_poll_ends_when_the_clock_passes_its_wait(timed_broker):
    client = BlockingClient(*timed_broker.native_address)
    client.create_queue("polled")
    answered: list[object] = []
    polling = threading.Thread(target=lambda: answered.append(client.receive_message("polled", wait_time_seconds=20)))
    polling.start()
    wait_parked(timed_broker, "polled")
    started = time.monotonic()
    timed_broker.advance(20)
    polling.join(5)
    client.close()
    assert answered == [[]] and time.monotonic() - started < 5


def test_a_failed_push_is_retried_when_the_clock_passes_its_delay(timed_broker):
    sns = boto3.client("sns", endpoint_url=timed_broker.endpoint_url, region_name="us-east-1",
                       aws_access_key_id="test", aws_secret_access_key="test")
    with ThreadedEndpoint().running() as endpoint:

        def arrived(message_type: str, count: int) -> list:
            deadline = time.monotonic() + 5
            while len(of_type := [r for r in endpoint.received() if r.headers.get("x-amz-sns-message-type") == message_type]) < count:
                assert time.monotonic() < deadline, f"{count} {message_type} did not arrive"
                time.sleep(0.01)
            return of_type

        topic = sns.create_topic(Name="hooks")["TopicArn"]
        sns.subscribe(TopicArn=topic, Protocol="http", Endpoint=endpoint.url)
        (confirmation,) = arrived("SubscriptionConfirmation", 1)
        with urllib.request.urlopen(confirmation.json()["SubscribeURL"]) as response:  # it names the bound port
            assert response.status == 200
        endpoint.status = 500
        sns.publish(TopicArn=topic, Message="retry me")
        arrived("Notification", 1)
        endpoint.status = 200
        time.sleep(0.3)
        assert len(arrived("Notification", 1)) == 1  # the default policy waits 20 s before retrying
        started = time.monotonic()
        timed_broker.advance(21)
        assert [pushed.json()["Message"] for pushed in arrived("Notification", 2)] == ["retry me", "retry me"]
        assert time.monotonic() - started < 5


async def test_open_broker_advances_the_trio_programs_mock_clock(tmp_path, mock_clock):
    mock_clock.rate = 1
    async with dovecote.open_broker(clock="controllable") as broker:
        async with open_client(*broker.native_address) as client:
            await client.create_queue("trio-timed", {"VisibilityTimeout": "30"})
            await client.send_message("trio-timed", "m")
            assert len(await client.receive_message("trio-timed")) == 1
            broker.advance(31)  # from the loop's own thread
            assert len(await client.receive_message("trio-timed")) == 1


# --- mistakes: one clear error each ------------------------------------------------------------------


def test_an_unknown_setting_is_one_clear_error():
    with pytest.raises(ConfigError, match=r"^dovecote.embedded: unknown setting 'sync_mode' \(did you mean 'sync'\?\)$"):
        with dovecote.embedded(sync_mode="os"):
            pass


def test_a_setting_of_the_wrong_type_or_choice_is_one_clear_error():
    with pytest.raises(ConfigError, match=r"dovecote.embedded: sync: expected one of full, os, not 'fast'"):
        with dovecote.embedded(sync="fast"):
            pass
    with pytest.raises(ConfigError, match=r"http_port: expected an integer, not"):
        with dovecote.embedded(http_port="7481"):
            pass


def test_logging_is_left_to_the_application():
    with pytest.raises(ConfigError, match="log_level is the application's to set"):
        with dovecote.embedded(log_level="DEBUG"):
            pass


def test_a_port_in_use_is_one_listener_error_not_a_group():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(ListenerError, match="already in use"):
            with dovecote.embedded(http_port=taken.getsockname()[1]):
                pass


def test_the_clock_is_advanced_only_when_it_is_controllable():
    with pytest.raises(ValueError, match="clock must be one of system, controllable"):
        with dovecote.embedded(clock="manual"):
            pass
    with dovecote.embedded() as broker:
        with pytest.raises(ClockNotControllable, match="clock='controllable'"):
            broker.advance(1)
    with dovecote.embedded(clock="controllable") as broker:
        with pytest.raises(ValueError, match="only moves forward"):
            broker.advance(-1)


async def test_open_broker_needs_a_mock_clock_to_control():
    with pytest.raises(ValueError, match="MockClock"):
        async with dovecote.open_broker(clock="controllable"):
            pass


def test_importing_dovecote_loads_no_broker():
    loaded = subprocess.run(
        [sys.executable, "-c", textwrap.dedent("""
            import sys, dovecote
            print(sorted(name for name in ("trio", "lmdb", "dovecote.embedded_broker") if name in sys.modules))
        """)],
        capture_output=True, text=True, timeout=60, check=True,
    )
    assert loaded.stdout.strip() == "[]"


# --- what the migration page says --------------------------------------------------------------------


def test_localstack_queue_urls_the_sdk_variables_and_the_health_check(monkeypatch):
    with dovecote.embedded() as broker:
        for name, value in {
            "AWS_ENDPOINT_URL_SQS": broker.endpoint_url, "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
        }.items():
            monkeypatch.setenv(name, value)
        monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
        sqs = boto3.client("sqs")
        own_url = sqs.create_queue(QueueName="orders")["QueueUrl"]
        assert own_url == f"{broker.endpoint_url}/000000000000/orders"
        localstack_urls = [  # SQS_ENDPOINT_STRATEGY standard, off
            "http://sqs.us-east-1.localhost.localstack.cloud:4566/000000000000/orders",
            "http://localhost:4566/000000000000/orders",
        ]
        for url in localstack_urls:
            sqs.send_message(QueueUrl=url, MessageBody=url)
        with pytest.raises(sqs.exceptions.ClientError, match="InvalidAddress"):  # the path strategy's shape
            sqs.send_message(QueueUrl="http://localhost:4566/queue/us-east-1/000000000000/orders", MessageBody="-")
        received = sqs.receive_message(QueueUrl=own_url, MaxNumberOfMessages=10)["Messages"]
        assert sorted(message["Body"] for message in received) == sorted(localstack_urls)
        health = httpx.get(f"{broker.endpoint_url}/health")
        assert health.status_code == 200 and health.json()["accepting_sends"] is True


def test_settings_reach_the_broker_as_serve_would_take_them():
    with dovecote.embedded(access_key=["AKIDEMBEDDED:secret"], region="eu-west-1") as broker:
        signed = boto3.client(
            "sqs", endpoint_url=broker.endpoint_url, region_name="eu-west-1",
            aws_access_key_id="AKIDEMBEDDED", aws_secret_access_key="secret",
        )
        url = signed.create_queue(QueueName="keyed")["QueueUrl"]
        assert signed.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"] == (
            "arn:aws:sqs:eu-west-1:000000000000:keyed"
        )
        with pytest.raises(signed.exceptions.ClientError, match="InvalidClientTokenId"):
            sqs_client(broker, "eu-west-1").list_queues()  # the key's id is not the broker's: refused
        assert broker.region == "eu-west-1"
    with pytest.raises(ConfigError, match="commit_delay_ms: expected 0 to 1000 milliseconds"):
        with dovecote.embedded(commit_delay_ms=5000):
            pass


def test_the_urls_a_topic_hands_out_name_the_port_bound():
    with dovecote.embedded() as broker:
        sqs = sqs_client(broker)
        sns = boto3.client("sns", endpoint_url=broker.endpoint_url, region_name="us-east-1",
                           aws_access_key_id="test", aws_secret_access_key="test")
        url = sqs.create_queue(QueueName="envelopes")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        topic = sns.create_topic(Name="news")["TopicArn"]
        sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn)
        sns.publish(TopicArn=topic, Message="hello")
        envelope = json.loads(sqs.receive_message(QueueUrl=url, WaitTimeSeconds=5)["Messages"][0]["Body"])
        assert envelope["UnsubscribeURL"].startswith(broker.endpoint_url + "/")
        assert envelope["SigningCertURL"].startswith(broker.endpoint_url + "/")
        assert httpx.get(envelope["SigningCertURL"]).status_code == 200
