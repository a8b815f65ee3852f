"""GET /metrics, read with prometheus_client's parser of the text format: after a known workload every
figure is checked exactly (in-process broker on the autojump clock, real HTTP push endpoints); the
LMDB figures on a served broker; and the cap that keeps a scrape's size bounded with many queues."""

import json
import time

import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from dovecote.actors.ops import (
    CreateQueue,
    CreateTopic,
    DeleteMessage,
    Failure,
    GetQueueAttributes,
    GetTopicAttributes,
    Publish,
    ReceiveMessage,
    SendMessage,
    SetSubscriptionAttributes,
    Subscribe,
)
from dovecote.actors.mailbox import ReplySlot
from dovecote.actors.queue_core import QueueCore
from dovecote.actors.topic_core import TopicCore
from dovecote.net.broker_endpoints import BrokerEndpoints
from dovecote.net.client import open_client
from dovecote.net.http_server import HttpRequest
from dovecote.net.metrics import OTHER, escape
from dovecote.storage.tables import LOG

from ..actors.test_functions import CODE as FUNCTION_CODE, PARAMS as FUNCTION_PARAMS, ScriptedRunner
from ..actors.test_push import confirmed
from ..conftest import running_broker
from ..push_endpoint import trio_endpoint
from .test_servers import broker as served_broker

QUEUE = "arn:aws:sqs:us-east-1:000000000000:"
SCRAPE = HttpRequest("GET", "/metrics", [], b"")


class Scrape:
    """One scrape, parsed: every sample by its name and labels, and every family's type and help."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.families = {family.name: family for family in text_string_to_metric_families(text)}
        self.samples: dict[tuple[str, frozenset], float] = {}
        for family in self.families.values():
            for sample in family.samples:
                key = (sample.name, frozenset(sample.labels.items()))
                assert key not in self.samples, f"{key} twice"
                self.samples[key] = sample.value

    def __call__(self, name: str, **labels: str) -> float:
        return self.samples[(name, frozenset(labels.items()))]

    def queue(self, name: str, queue: str, **labels: str) -> float:
        return self(name, region="us-east-1", queue=queue, **labels)

    def topic(self, name: str, topic: str, **labels: str) -> float:
        return self(name, region="us-east-1", topic=topic, **labels)

    def labelled(self, name: str, label: str) -> dict[str, float]:
        """label value -> value of the samples of `name` that have that label."""
        return {dict(labels)[label]: value for (sample, labels), value in self.samples.items() if sample == name and label in dict(labels)}


async def scrape(endpoints: BrokerEndpoints) -> Scrape:
    response = await endpoints.handle(SCRAPE)
    assert response.status == 200
    assert dict(response.headers)["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    return Scrape(response.body.decode())


def assert_well_formed(parsed: Scrape) -> None:
    """Every family has its HELP and TYPE; names follow Prometheus's conventions."""
    for name, family in parsed.families.items():
        assert family.type in ("counter", "gauge", "histogram"), name
        assert family.documentation, name
        assert name.startswith(("dovecote_", "process_")), name
        if family.type == "counter":
            assert all(sample.name == name + "_total" for sample in family.samples), name
    assert "# TYPE dovecote_queue_messages_sent_total counter" in parsed.text


async def test_every_figure_after_a_known_workload(autojump_clock):
    """5 sends, 3 receives, 2 deletes, a dead-letter move, an expiry, a delayed send; a publish to
    an SQS subscription, to one whose queue does not exist, to an HTTP endpoint that takes it and
    to one that fails until the push goes to its dead-letter queue."""
    refusing = lambda pushed: 500 if pushed.headers["x-amz-sns-message-type"] == "Notification" else 200  # noqa: E731
    async with trio_endpoint() as taking, trio_endpoint(refusing) as failing, running_broker() as h:
        endpoints = BrokerEndpoints(h.writer, h.broker, b"")
        await h.ok(CreateQueue("dead"))
        redrive = json.dumps({"deadLetterTargetArn": QUEUE + "dead", "maxReceiveCount": 1})
        await h.ok(CreateQueue("work", {"RedrivePolicy": redrive, "VisibilityTimeout": "30"}))
        await h.ok(CreateQueue("brief", {"MessageRetentionPeriod": "60"}))
        await h.ok(CreateQueue("fanout"))
        await h.ok(CreateQueue("pushes-dead"))
        await h.ok(CreateTopic("news"))
        await h.ok(Subscribe("news", "sqs", QUEUE + "fanout"))
        await h.ok(Subscribe("news", "sqs", QUEUE + "ghost"))  # no such queue
        await confirmed(h, taking, "news")
        policy = {"healthyRetryPolicy": {"minDelayTarget": 1, "maxDelayTarget": 1, "numRetries": 1}}
        failing_arn = await confirmed(h, failing, "news", DeliveryPolicy=json.dumps(policy))
        await h.ok(SetSubscriptionAttributes("news", failing_arn, "RedrivePolicy", json.dumps({"deadLetterTargetArn": QUEUE + "pushes-dead"})))

        started = trio.current_time()
        await h.ok(SendMessage("brief", "short-lived"))
        for i in range(5):
            await h.ok(SendMessage("work", f"m{i}"))
        received = (await h.ok(ReceiveMessage("work", max_number_of_messages=3))).messages
        assert [m.body for m in received] == ["m0", "m1", "m2"]
        for message in received[:2]:
            await h.ok(DeleteMessage("work", message.receipt_handle))
        await h.ok(Publish("news", "headline"))
        await trio.sleep(31)  # m2 is visible again, and the pushes are over
        again = (await h.ok(ReceiveMessage("work", max_number_of_messages=10, visibility_timeout=300))).messages
        assert [m.body for m in again] == ["m3", "m4"]  # m2 went to the dead-letter queue instead
        await trio.sleep(31)  # past the brief queue's retention
        await h.ok(SendMessage("work", "later", delay_seconds=600))
        age_s = trio.current_time() - started
        metrics = await scrape(endpoints)

    assert_well_formed(metrics)
    queue, topic = metrics.queue, metrics.topic
    for name, (visible, in_flight, delayed) in {
        "work": (0, 2, 1), "dead": (1, 0, 0), "brief": (0, 0, 0), "fanout": (1, 0, 0), "pushes-dead": (1, 0, 0),
    }.items():
        assert [queue("dovecote_queue_messages", name, state=state) for state in ("visible", "in_flight", "delayed")] == [
            visible, in_flight, delayed,
        ], name
    work = {
        "sent": 6, "received": 5, "deleted": 2, "dead_lettered": 1, "expired": 0, "moved_in": 0, "purged": 0, "moved_out": 0,
    }
    assert {event: queue(f"dovecote_queue_messages_{event}_total", "work") for event in work} == work
    assert queue("dovecote_queue_messages_moved_in_total", "dead") == 1 and queue("dovecote_queue_messages_sent_total", "dead") == 0
    assert queue("dovecote_queue_messages_sent_total", "brief") == 1 and queue("dovecote_queue_messages_expired_total", "brief") == 1
    assert queue("dovecote_queue_messages_sent_total", "fanout") == 1  # the topic's delivery
    assert queue("dovecote_queue_messages_moved_in_total", "pushes-dead") == 1
    assert queue("dovecote_queue_oldest_message_age_seconds", "work") == pytest.approx(age_s, abs=0.01)  # m3, sent first of those left
    assert queue("dovecote_queue_oldest_message_age_seconds", "brief") == 0
    assert queue("dovecote_queue_restarts_total", "work") == 0 and queue("dovecote_queue_stopped", "work") == 0

    assert topic("dovecote_topic_publishes_total", "news") == 1
    deliveries = {
        (dict(labels)["protocol"], dict(labels)["outcome"]): value
        for (name, labels), value in metrics.samples.items()
        if name == "dovecote_topic_deliveries_total"
    }
    assert deliveries == {
        ("sqs", "delivered"): 1, ("sqs", "dropped"): 1,  # ghost: its queue does not exist
        ("http", "delivered"): 1, ("http", "retried"): 1, ("http", "dead_lettered"): 1,
    }
    assert topic("dovecote_topic_pushes_pending", "news") == 0 and topic("dovecote_topic_subscriptions", "news") == 4
    assert topic("dovecote_topic_delivery_actors", "news") == 2
    assert metrics("dovecote_queues") == 5 and metrics("dovecote_topics") == 1
    assert metrics("dovecote_metrics_folded_queues") == 0

    log = list(h.store._scan(LOG))
    assert metrics("dovecote_log_last_lsn") == h.store.last_lsn == len(log)
    assert metrics("dovecote_log_records_total") == len(log) == metrics("dovecote_log_commit_records_sum")
    assert metrics("dovecote_log_written_bytes_total") == sum(len(key) + len(value) for key, value in log)
    commits = metrics("dovecote_log_commits_total")
    assert commits == metrics("dovecote_log_commit_duration_seconds_count") == metrics("dovecote_log_commit_records_count")
    assert metrics("dovecote_log_commit_duration_seconds_bucket", le="+Inf") == commits
    assert metrics("dovecote_log_fsyncs_total") == 0  # the memory store does not sync
    assert metrics("dovecote_accepting_sends") == 1

    assert metrics("process_cpu_seconds_total") > 0
    assert metrics("process_resident_memory_bytes") > 10 << 20
    assert 0 < metrics("process_open_fds") < metrics("process_max_fds")
    assert time.time() - 3600 < metrics("process_start_time_seconds") < time.time()


async def test_lmdb_figures_on_a_served_broker(tmp_path):
    async with served_broker(tmp_path) as ports:
        async with open_client("127.0.0.1", ports.native) as client:
            await client.create_queue("q")
            for i in range(20):
                await client.send_message("q", f"m{i}")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports.http}") as http:
            metrics = Scrape((await http.get("/metrics")).text)
    assert_well_formed(metrics)
    commits = metrics("dovecote_log_commits_total")
    assert commits == metrics("dovecote_log_commit_duration_seconds_count") >= 2
    assert metrics("dovecote_log_fsyncs_total") >= commits  # sync mode full: every commit, and any trim
    buckets = sorted(
        (float(dict(labels)["le"]), value) for (name, labels), value in metrics.samples.items()
        if name == "dovecote_log_commit_duration_seconds_bucket"
    )
    assert [count for _, count in buckets] == sorted(count for _, count in buckets) and buckets[-1] == (float("inf"), commits)
    assert 0 < metrics("dovecote_log_commit_duration_seconds_sum") < 60
    assert metrics("dovecote_log_written_bytes_total") > 20 * 20
    assert metrics("dovecote_store_file_bytes") > 0
    assert metrics("dovecote_data_dir_bytes") >= metrics("dovecote_store_file_bytes") + (16 << 20)  # and the reserve
    assert 0 < metrics("dovecote_data_dir_disk_free_bytes") < metrics("dovecote_data_dir_disk_size_bytes")
    assert metrics.queue("dovecote_queue_messages_sent_total", "q") == 20


async def test_queues_and_topics_past_the_cap_are_added_up(autojump_clock):
    async with running_broker() as h:
        for i in range(30):
            await h.ok(CreateQueue(f"q{i:02d}"))
            for _ in range(i % 3):
                await h.ok(SendMessage(f"q{i:02d}", "x"))
        for i in range(4):
            await h.ok(CreateTopic(f"t{i}"))
            await h.ok(Subscribe(f"t{i}", "sqs", QUEUE + "q00"))
            await h.ok(Publish(f"t{i}", "x"))
        await trio.sleep(1)
        capped = await scrape(BrokerEndpoints(h.writer, h.broker, b"", metrics_max_queues=10, metrics_max_topics=1))
        every = await scrape(BrokerEndpoints(h.writer, h.broker, b"", metrics_max_queues=30, metrics_max_topics=4))
        for i in range(30, 300):
            await h.ok(CreateQueue(f"q{i:03d}"))
        many = await scrape(BrokerEndpoints(h.writer, h.broker, b"", metrics_max_queues=10, metrics_max_topics=1))

    assert_well_formed(capped)
    sent = capped.labelled("dovecote_queue_messages_sent_total", "queue")
    assert sorted(sent) == [OTHER] + [f"q{i:02d}" for i in range(10)]  # the oldest ten have their own
    every_sent = every.labelled("dovecote_queue_messages_sent_total", "queue")
    folded = sum(i % 3 for i in range(10, 30))
    assert sent[OTHER] == sum(every_sent[f"q{i:02d}"] for i in range(10, 30)) == folded
    assert capped("dovecote_queue_messages_sent_total", queue=OTHER) == folded  # the folded series has no region
    assert capped("dovecote_queue_messages", queue=OTHER, state="visible") == folded
    assert capped("dovecote_metrics_folded_queues") == 20 and every("dovecote_metrics_folded_queues") == 0
    assert capped("dovecote_metrics_folded_topics") == 3
    assert capped("dovecote_topic_publishes_total", topic=OTHER) == 3
    assert capped("dovecote_topic_deliveries_total", topic=OTHER, protocol="sqs", outcome="delivered") == 3
    assert capped.topic("dovecote_topic_deliveries_total", "t0", protocol="sqs", outcome="delivered") == 1
    assert capped.queue("dovecote_queue_messages_sent_total", "q00") == 4  # the four topics' deliveries
    # 270 more queues change no line's count: a scrape stays as long as the cap makes it.
    assert many.text.count("\n") == capped.text.count("\n")
    assert many("dovecote_metrics_folded_queues") == 290 and many("dovecote_queue_messages_sent_total", queue=OTHER) == folded


async def test_gathering_in_steps_reads_what_one_snapshot_reads(autojump_clock):
    async with running_broker() as h:
        for i in range(7):
            await h.ok(CreateQueue(f"q{i}"))
        await h.ok(CreateTopic("t"))
        await trio.sleep(1)  # every actor is running
        assert await h.broker.gather_statistics(per_step=2) == h.broker.statistics()


def test_label_values_are_escaped():
    assert escape('a"b\\c\nd') == 'a\\"b\\\\c\\nd'
    assert escape("orders.fifo") == "orders.fifo"


async def test_counters_outlive_a_restart_of_their_actor(autojump_clock, monkeypatch):
    """A queue or topic rebuilt from the store after a failure keeps counting from where it was;
    the topic keeps what its delivery actors counted, though they are started anew."""
    async with trio_endpoint() as taking, running_broker() as h:
        endpoints = BrokerEndpoints(h.writer, h.broker, b"")
        await h.ok(CreateQueue("q"))
        await h.ok(CreateTopic("t"))
        await h.ok(Subscribe("t", "sqs", QUEUE + "q"))
        await confirmed(h, taking, "t")
        await h.ok(SendMessage("q", "one"))
        await h.ok(Publish("t", "two"))
        await trio.sleep(1)
        before = await scrape(endpoints)
        for core in (QueueCore, TopicCore):
            monkeypatch.setattr(core, "get_attributes", crash)
        assert isinstance(await h.call(GetQueueAttributes("q", ["All"])), Failure)
        h.session.submit(GetTopicAttributes("t"), ReplySlot())  # a failing topic leaves it unanswered
        await trio.sleep(1)  # restarted
        monkeypatch.undo()
        await h.ok(SendMessage("q", "three"))
        after = await scrape(endpoints)
    assert before.queue("dovecote_queue_messages_sent_total", "q") == 2
    assert after.queue("dovecote_queue_messages_sent_total", "q") == 3
    assert after.queue("dovecote_queue_restarts_total", "q") == 1 and after.topic("dovecote_topic_restarts_total", "t") == 1
    for protocol in ("sqs", "http"):
        labels = {"protocol": protocol, "outcome": "delivered"}
        assert before.topic("dovecote_topic_deliveries_total", "t", **labels) == 1
        assert after.topic("dovecote_topic_deliveries_total", "t", **labels) == 1
    assert after.topic("dovecote_topic_publishes_total", "t") == 1


def crash(*_):
    raise RuntimeError("a bug")


async def test_each_function_has_its_series(autojump_clock, tmp_path):
    async def answer(spec, payload):
        return (b'{"errorType": "ValueError"}', "ValueError") if payload == b'"fail"' else payload

    async with running_broker(runner=ScriptedRunner(answer), functions_dir=str(tmp_path)) as h:
        endpoints = BrokerEndpoints(h.writer, h.broker, b"")
        assert "dovecote_function" not in (await scrape(endpoints)).text  # none until there is a function
        await h.broker.functions.create("", FUNCTION_PARAMS, FUNCTION_CODE)
        for payload in (b"1", b"2", b'"fail"'):
            await h.broker.functions.invoke("echo", payload)
        parsed = await scrape(endpoints)
        assert_well_formed(parsed)
        labels = {"region": "us-east-1", "function": "echo"}
        assert parsed("dovecote_function_invocations_total", **labels) == 3
        assert parsed("dovecote_function_errors_total", **labels) == 1
        assert parsed("dovecote_function_instances", **labels) == 1 and parsed("dovecote_function_instances_busy", **labels) == 0
        assert parsed("dovecote_function_timeouts_total", **labels) == parsed("dovecote_function_start_failures_total", **labels) == 0
