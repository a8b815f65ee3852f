"""The broker's shape under stress: mailboxes that stay bounded, actors that fail too often, lookups
that never wait, and stored times read back after the wall clock was set while the broker was down.
On trio's autojump clock, with a memory store."""

import pytest
import trio

from dovecote.actors.config import BrokerConfig
from dovecote.actors.mailbox import Mailbox, MailboxFull, ReplySlot
from dovecote.actors.messages import Adopt, AdoptedMessage, MovedOut, Request, ignore
from dovecote.actors.ops import (
    CreateQueue,
    CreateTopic,
    DeleteQueue,
    Failure,
    GetQueueAttributes,
    ListSubscriptions,
    PublishBatch,
    PublishEntry,
    ReceiveMessage,
    SendMessage,
    Subscribe,
    SubscriptionList,
)
from dovecote.actors.queue_core import QueueCore
from dovecote.storage.memory_store import MemoryStore
from dovecote.storage.store import StorageError

from ..conftest import running_broker

QUEUE_ARN = "arn:aws:sqs:us-east-1:000000000000:"


async def bodies(h, queue, wanted):
    found = []
    while len(found) < wanted:
        messages = (await h.ok(ReceiveMessage(queue, 10, 600, 1))).messages
        assert messages, f"only {len(found)} of {wanted} messages arrived"
        found += [m.body for m in messages]
    return found


def test_a_mailbox_holds_no_more_than_its_capacities():
    async def main():
        mailbox = Mailbox(request_capacity=2, actor_capacity=10)
        mailbox.submit(Request(GetQueueAttributes("q"), ignore))
        mailbox.submit(Request(GetQueueAttributes("q"), ignore))
        with pytest.raises(MailboxFull):
            mailbox.submit(Request(GetQueueAttributes("q"), ignore))
        adopt = Adopt([AdoptedMessage(seq, "id", 0, "", "") for seq in range(6)])
        assert mailbox.post(adopt)  # 6 of 10
        assert not mailbox.post(adopt)  # 12 would pass the capacity
        assert not mailbox.missed
        assert not mailbox.post(adopt, must_arrive=True)
        assert mailbox.missed  # its owner rebuilds from the store
        for _ in range(100):  # answers to the owner's own work always get in
            mailbox.post_answer(MovedOut([1], ""))
        assert mailbox.statistics().requests == 2 and mailbox.statistics().carried == 106
        taken: list[Request] = []
        mailbox.receive_waiting(taken)
        assert len(taken) == 103 and mailbox.statistics()[:2] == (0, 0)
        heavy = Adopt([AdoptedMessage(seq, "id", 0, "", "") for seq in range(50)])
        assert mailbox.post(heavy)  # heavier than the capacity, into an empty mailbox: delayed, not refused
        left = mailbox.close()
        assert [request.op for request in left] == [heavy]
        assert not mailbox.post(adopt)
        with pytest.raises(trio.ClosedResourceError):
            mailbox.submit(Request(GetQueueAttributes("q"), ignore))

    trio.run(main)


async def test_a_fan_out_to_a_queue_that_cannot_take_its_mail_is_not_lost(autojump_clock):
    """While a queue's actor waits to be restarted, a topic keeps publishing to it: its mailbox
    holds no more than its capacity, and the messages refused at the door reach the queue when it
    rebuilds itself from the store."""
    store = MemoryStore()
    config = BrokerConfig(restart_backoff_s=(30.0,), actor_mail_capacity=25)
    async with running_broker(store, config=config) as h:
        await h.ok(CreateQueue("q"))
        await h.ok(CreateTopic("t"))
        await h.ok(Subscribe("t", "sqs", QUEUE_ARN + "q", {"RawMessageDelivery": "true"}))
        await h.ok(SendMessage("q", "before"))
        store.fail_next_commits.append(StorageError("injected I/O error"))
        assert isinstance(await h.call(ReceiveMessage("q")), Failure)  # the queue's actor fails
        (entry,) = [e for e in h.broker.directory.entries() if e.name == "q"]
        most_carried = 0
        for batch in range(10):
            entries = [PublishEntry(f"e{i}", f"m{batch}-{i}") for i in range(10)]
            result = await h.ok(PublishBatch("t", entries))
            assert len(result.successful) == 10
            most_carried = max(most_carried, entry.mailbox.statistics().carried)
        assert most_carried <= 25
        assert entry.mailbox.missed
        await trio.sleep(31)  # the restart reads what the store holds
        found = await bodies(h, "q", 101)
        assert sorted(found) == sorted(["before"] + [f"m{b}-{i}" for b in range(10) for i in range(10)])


async def test_an_actor_that_fails_too_often_is_stopped_and_says_so(autojump_clock, monkeypatch):
    config = BrokerConfig(restart_backoff_s=(0.0, 1.0), max_restarts=3, restart_window_s=60.0)
    async with running_broker(config=config) as h:
        await h.ok(CreateQueue("sick"))
        await h.ok(CreateQueue("healthy"))
        original = QueueCore.get_attributes

        def always_crash(self, names, now):
            if self.name == "sick":
                raise RuntimeError("a bug")
            return original(self, names, now)

        monkeypatch.setattr(QueueCore, "get_attributes", always_crash)
        for _ in range(3):
            failed = await h.call(GetQueueAttributes("sick", ["All"]))
            assert isinstance(failed, Failure) and failed.code == "InternalError"
            await trio.sleep(2)  # past the back-off: the next request reaches the next actor
        stopped = await h.call(SendMessage("sick", "refused"))
        assert isinstance(stopped, Failure) and stopped.code == "ServiceUnavailable"
        assert "failed 3 times in a row and is stopped" in stopped.message
        report = {r.name: r for r in h.broker.statistics()}
        assert report["sick"].health.stopped and report["sick"].health.restarts == 3
        assert "RuntimeError: a bug" in report["sick"].health.last_error and report["sick"].actor is None
        assert not report["healthy"].health.stopped and report["healthy"].actor is not None
        await h.ok(SendMessage("healthy", "unaffected"))
        await h.ok(DeleteQueue("sick"))  # a stopped queue can still be deleted
        assert isinstance(await h.call(GetQueueAttributes("sick")), Failure)
        await h.ok(CreateQueue("sick"))
        monkeypatch.setattr(QueueCore, "get_attributes", original)
        assert (await h.ok(GetQueueAttributes("sick", ["ApproximateNumberOfMessages"]))).attributes == {
            "ApproximateNumberOfMessages": "0"
        }


async def test_lookups_do_not_wait_for_a_listing_of_every_topic(autojump_clock):
    """ListSubscriptions asks topic after topic; a new connection's first send meanwhile is served
    at once, not after the listing (the directory answers without waiting for anyone)."""
    async with running_broker() as h:
        await h.ok(CreateQueue("q"))
        for i in range(150):
            await h.ok(CreateTopic(f"t{i:03d}"))
            await h.ok(Subscribe(f"t{i:03d}", "sqs", QUEUE_ARN + "q"))
        order: list[str] = []
        listing: ReplySlot = ReplySlot()
        sending: ReplySlot = ReplySlot()
        h.session.submit(ListSubscriptions(), lambda result: (order.append("listing"), listing(result)))
        h.broker.session().submit(SendMessage("q", "first of a new connection"), lambda r: (order.append("send"), sending(r)))
        page = await listing.wait()
        await sending.wait()
        assert order == ["send", "listing"]
        assert isinstance(page, SubscriptionList) and len(page.subscriptions) == 100 and page.next_token
        rest = await h.ok(ListSubscriptions(page.next_token))
        assert len(rest.subscriptions) == 50 and rest.next_token is None
        topics = {s.topic_arn for s in page.subscriptions + rest.subscriptions}
        assert len(topics) == 150


async def test_a_message_stored_before_the_clock_was_set_does_not_expire_at_the_restart(autojump_clock):
    """A device without a real-time clock boots in 1970; a message sent then, with a retention of
    a minute, is still there after a restart that follows NTP setting the clock to today."""
    store = MemoryStore()
    async with running_broker(store, start_wall_ms=5_000) as h:  # 1970
        await h.ok(CreateQueue("q", {"MessageRetentionPeriod": "60"}))
        await h.ok(SendMessage("q", "sent in 1970"))
    async with running_broker(store, start_wall_ms=1_764_000_000_000) as h:  # today
        (message,) = (await h.ok(ReceiveMessage("q"))).messages
        assert message.body == "sent in 1970"
        await trio.sleep(61)  # its retention counts from the restart, and runs out
        assert (await h.ok(ReceiveMessage("q"))).messages == []


async def test_a_message_older_than_its_retention_expires_across_a_restart(autojump_clock):
    store = MemoryStore()
    async with running_broker(store, start_wall_ms=1_764_000_000_000) as h:
        await h.ok(CreateQueue("q", {"MessageRetentionPeriod": "60"}))
        await h.ok(SendMessage("q", "old"))
    async with running_broker(store, start_wall_ms=1_764_000_000_000 + 120_000) as h:  # two minutes on
        assert (await h.ok(ReceiveMessage("q"))).messages == []


@pytest.mark.parametrize(
    ("stored_ms", "last_written_ms", "wall_ms", "expected_ms"),
    [
        (1_764_000_000_000, 1_764_000_060_000, 1_764_000_120_000, 120_000),  # a clock that ran on: all of it
        (5_000, 65_000, 1_764_000_000_000, 60_000),  # set while stopped: the stop is not counted
        (5_000, 1_764_000_000_000, 1_764_000_001_000, 1_000),  # set after the send: only the stop is
        (1_764_000_000_000, 1_764_000_000_000, 5_000, 0),  # booted in 1970 again: nothing is known
        (1_764_000_060_000, 1_764_000_000_000, 1_764_000_000_000, 0),  # a clock that went back: never negative
    ],
)
def test_elapsed_time_counts_only_what_one_set_clock_measured(stored_ms, last_written_ms, wall_ms, expected_ms):
    from dovecote.actors.stored_time import elapsed_since

    assert elapsed_since(last_written_ms, wall_ms)(stored_ms) == expected_ms
