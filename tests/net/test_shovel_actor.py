"""A shovel's rules, on the autojump clock: an in-process broker, and a remote that is a test
double answering as SQS's and SNS's batch calls answer (the real remotes are in test_shovels.py)."""

from __future__ import annotations

import contextlib
import json

import trio

from dovecote.actors.ops import (
    CreateQueue, DeleteEntry, DeleteMessageBatch, GetQueueAttributes, ReceiveMessage, SendEntry, SendMessage, SendMessageBatch,
)
from dovecote.actors.shovel_core import RemoteConfig, ShovelConfig, check_shovels
from dovecote.net.remote_api import BatchOutcome, EntryFailure, RemoteError
from dovecote.net.shovel import Shovel
from dovecote.storage.records import MessageForwarded

from ..conftest import running_broker

REMOTES = {"cloud": RemoteConfig("cloud", "http://127.0.0.1:1", "eu-west-1", "AKID", "secret")}
REMOTE_URL = "http://127.0.0.1:1/123456789012/"
ARN = "arn:aws:sqs:us-east-1:000000000000:"


class FakeRemote:
    """Takes batches like SendMessageBatch, except while `down` (unreachable) or for bodies in
    `refused` (a sender fault); keeps what it took, in order. As a source queue, hands out `inbox`."""

    def __init__(self) -> None:
        self.down = False
        self.refused: set[str] = set()
        self.taken: list[dict] = []
        self.attempts = 0
        self.inbox: list[dict] = []
        self.in_flight: dict[str, dict] = {}
        self.deleted: list[str] = []
        self.released: list[str] = []

    async def send_batch(self, queue_url, entries):
        self.attempts += 1
        if self.down:
            raise RemoteError(0, "Unreachable", "connection refused")
        successful, failed = {}, []
        for entry in entries:
            if entry["MessageBody"] in self.refused:
                failed.append(EntryFailure(entry["Id"], "InvalidMessageContents", "no", True))
            else:
                self.taken.append(entry)
                successful[entry["Id"]] = f"remote-{len(self.taken)}"
        return BatchOutcome(successful, failed)

    async def receive(self, queue_url, max_messages, wait_s, visibility_s):
        if self.down:
            raise RemoteError(503, "ServiceUnavailable", "down")
        # As a FIFO queue: a group with a message in flight is not handed out.
        locked = {message["Attributes"].get("MessageGroupId") for message in self.in_flight.values()}
        batch = [message for message in self.inbox if message["Attributes"].get("MessageGroupId") not in locked][:max_messages]
        if not batch:
            await trio.sleep(wait_s)
            return []
        self.inbox = [message for message in self.inbox if message not in batch]
        for message in batch:
            self.in_flight[message["ReceiptHandle"]] = message
        return batch

    async def delete_batch(self, queue_url, handles):
        self.deleted += handles
        for handle in handles:
            del self.in_flight[handle]
        return []

    async def release_batch(self, queue_url, handles):
        self.released += handles
        self.inbox = [self.in_flight.pop(handle) for handle in handles] + self.inbox
        return []


def shovel(h, remote, source, destination, **options) -> Shovel:
    config = ShovelConfig("link", source, destination, **options)
    [route] = check_shovels([config], REMOTES)
    return Shovel(config, route, lambda: contextlib.nullcontext(remote), h.broker.session(), h.writer, h.clock)


async def forwarded_records(h) -> list[MessageForwarded]:
    return [record for _, record in h.store.read_log(0, limit=100_000) if isinstance(record, MessageForwarded)]


async def counts(h, queue):
    attributes = (await h.ok(GetQueueAttributes(queue, ["All"]))).attributes
    return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])


async def test_an_outage_holds_the_batch_and_never_counts_as_a_receive(autojump_clock):
    remote = FakeRemote()
    async with running_broker() as h:
        await h.ok(CreateQueue("dlq"))
        await h.ok(CreateQueue("up", {"RedrivePolicy": json.dumps({"deadLetterTargetArn": ARN + "dlq", "maxReceiveCount": 2}),
                                      "VisibilityTimeout": "30"}))
        for i in range(25):
            await h.ok(SendMessage("up", f"m{i}"))
        remote.down = True
        link = shovel(h, remote, "up", "cloud:" + REMOTE_URL + "telemetry", visibility_timeout_s=30,
                      backoff_initial_s=0.5, backoff_max_s=60)
        async with trio.open_nursery() as nursery:
            await nursery.start(link.run)
            await trio.sleep(600)  # ten minutes down: twenty visibility timeouts
            assert link.statistics().link_up is False
            assert link.statistics().in_hand == 25  # three of the workers hold batches of 10, 10 and 5
            attributes = (await h.ok(GetQueueAttributes("up", ["All"]))).attributes
            # still hidden from other consumers: their visibility is extended while the remote is away
            assert attributes["ApproximateNumberOfMessagesNotVisible"] == "25"
            assert remote.attempts < 3 * 30  # backed off to the cap, not retried in a loop
            remote.down = False
            await trio.sleep(120)
            nursery.cancel_scope.cancel()
        assert sorted(entry["MessageBody"] for entry in remote.taken) == sorted(f"m{i}" for i in range(25))
        assert await counts(h, "up") == 0 and await counts(h, "dlq") == 0  # nothing dead-lettered by the outage
        records = await forwarded_records(h)
        assert sorted(r.remote_message_id for r in records) == sorted(f"remote-{i}" for i in range(1, 26))
        assert {r.direction for r in records} == {"up"} and {r.queue for r in records} == {"up"}
        stats = link.statistics()
        assert stats.link_up and stats.forwarded == 25 and stats.in_hand == 0 and "connection refused" in stats.last_error


async def test_a_message_the_remote_refuses_for_good_follows_the_redrive_policy(autojump_clock):
    remote = FakeRemote()
    remote.refused = {"bad"}
    async with running_broker() as h:
        await h.ok(CreateQueue("dlq"))
        await h.ok(CreateQueue("up", {"RedrivePolicy": json.dumps({"deadLetterTargetArn": ARN + "dlq", "maxReceiveCount": 3})}))
        await h.ok(SendMessageBatch("up", [SendEntry("0", "good"), SendEntry("1", "bad"), SendEntry("2", "fine")]))
        link = shovel(h, remote, "up", "cloud:" + REMOTE_URL + "telemetry")
        async with trio.open_nursery() as nursery:
            await nursery.start(link.run)
            await trio.sleep(60)
            nursery.cancel_scope.cancel()
        assert sorted(entry["MessageBody"] for entry in remote.taken) == ["fine", "good"]
        [dead] = (await h.ok(ReceiveMessage("dlq", 10))).messages
        assert dead.body == "bad" and await counts(h, "up") == 0
        assert link.statistics().rejected == 3  # once per receive, until the redrive policy took it


async def test_fifo_groups_keep_their_order_and_each_message_its_deduplication_id_across_an_outage(autojump_clock):
    remote = FakeRemote()
    async with running_broker() as h:
        await h.ok(CreateQueue("up.fifo", {"FifoQueue": "true", "ContentBasedDeduplication": "true"}))
        link = shovel(h, remote, "up.fifo", "cloud:" + REMOTE_URL + "telemetry.fifo", batch_size=4)
        sent_ids = []
        async with trio.open_nursery() as nursery:
            await nursery.start(link.run)
            for i in range(30):
                if i == 10:
                    remote.down = True
                if i == 20:
                    remote.down = False
                sent = await h.ok(SendMessage("up.fifo", f"{i % 3}:{i}", message_group_id=f"g{i % 3}"))
                sent_ids.append(sent.message_id)
                await trio.sleep(1)
            await trio.sleep(120)
            nursery.cancel_scope.cancel()
        bodies = [entry["MessageBody"] for entry in remote.taken]
        assert sorted(bodies) == sorted(f"{i % 3}:{i}" for i in range(30))  # all, once each
        for group in "012":
            numbers = [int(body.split(":")[1]) for body in bodies if body.startswith(group + ":")]
            assert numbers == sorted(numbers)
        assert [entry["MessageDeduplicationId"] for entry in remote.taken] == [
            sent_ids[int(body.split(":")[1])] for body in bodies
        ]
        assert {entry["MessageGroupId"] for entry in remote.taken} == {"g0", "g1", "g2"}


async def test_the_rate_cap_spreads_a_backlog_over_time(autojump_clock):
    remote = FakeRemote()
    async with running_broker() as h:
        await h.ok(CreateQueue("up"))
        for i in range(10):
            await h.ok(SendMessageBatch("up", [SendEntry(str(j), f"m{i}-{j}") for j in range(10)]))
        link = shovel(h, remote, "up", "cloud:" + REMOTE_URL + "telemetry", max_rate=10)
        started = trio.current_time()
        async with trio.open_nursery() as nursery:
            await nursery.start(link.run)
            while len(remote.taken) < 100:
                await trio.sleep(0.1)
            nursery.cancel_scope.cancel()
        # One second's worth at once, then ten a second.
        assert 8.5 <= trio.current_time() - started <= 10.5


async def test_down_stores_locally_before_it_deletes_remotely_and_gives_back_what_it_could_not_store(autojump_clock):
    remote = FakeRemote()
    remote.inbox = [
        {"MessageId": f"r{i}", "ReceiptHandle": f"h{i}", "Body": f"c{i}",
         "Attributes": {"MessageGroupId": "device", "SequenceNumber": str(100 + i)},
         "MessageAttributes": {"n": {"DataType": "Number", "StringValue": str(i)}}}
        for i in [1, 0, 2, 4, 3, 5, 6, 7, 9, 8, 11, 10]  # a remote may answer a group out of its order
    ]
    async with running_broker() as h:
        link = shovel(h, remote, "cloud:" + REMOTE_URL + "commands.fifo", "commands.fifo")
        async with trio.open_nursery() as nursery:
            await nursery.start(link.run)
            await trio.sleep(5)  # the local queue does not exist yet
            assert remote.deleted == [] and sorted(remote.released[:10]) == sorted(f"h{i}" for i in range(10))
            await h.ok(CreateQueue("commands.fifo", {"FifoQueue": "true"}))
            await trio.sleep(60)
            nursery.cancel_scope.cancel()
        assert sorted(remote.deleted) == sorted(f"h{i}" for i in range(12))
        got = []
        while batch := (await h.ok(ReceiveMessage("commands.fifo", 10, message_attribute_names=["All"]))).messages:
            got += batch
            await h.ok(DeleteMessageBatch("commands.fifo", [DeleteEntry(str(i), m.receipt_handle) for i, m in enumerate(batch)]))
        assert [m.body for m in got] == [f"c{i}" for i in range(12)]
        assert got[3].message_attributes["n"].string_value == "3"
        records = await forwarded_records(h)
        assert sorted(r.remote_message_id for r in records) == sorted(f"r{i}" for i in range(12))
        assert {r.direction for r in records} == {"down"}


async def test_a_remote_answering_for_part_of_a_batch_or_in_a_shape_no_rule_foresaw_fails_the_link_not_the_broker(autojump_clock):
    remote = FakeRemote()
    answers = iter(["for none", "garbage"])
    real_send = remote.send_batch

    async def send_batch(queue_url, entries):
        answer = next(answers, None)
        if answer == "for none":
            return BatchOutcome({}, [])
        if answer == "garbage":
            raise AttributeError("'str' object has no attribute 'get'")
        return await real_send(queue_url, entries)

    remote.send_batch = send_batch
    async with running_broker() as h:
        await h.ok(CreateQueue("up"))
        await h.ok(SendMessageBatch("up", [SendEntry(str(i), f"m{i}") for i in range(3)]))
        link = shovel(h, remote, "up", "cloud:" + REMOTE_URL + "telemetry", concurrency=1)
        async with trio.open_nursery() as nursery:
            await nursery.start(link.run)
            await trio.sleep(120)
            nursery.cancel_scope.cancel()
        assert sorted(entry["MessageBody"] for entry in remote.taken) == ["m0", "m1", "m2"]
        assert link.statistics().failures == 2 and await counts(h, "up") == 0
