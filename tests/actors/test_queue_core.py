"""The pure queue rules, driven with explicit times: no Trio, no store (reads come from a dict)."""

import itertools

import msgspec
import pytest

from dovecote.actors import sqs_results
from dovecote.actors.errors import BrokerError
from dovecote.actors.messages import Request, ignore
from dovecote.actors.ops import Received, ReceiveMessage, SendMessage
from dovecote.actors.queue_core import Cycle, QueueCore, SendGroup
from dovecote.actors.validation import default_queue_attributes
from dovecote.storage.records import MessageReceived, MessageSent, MessageSentHead, QueueCreated
from dovecote.storage.store import LoadedMessages, LoadedQueue

WALL = 1_700_000_000_000
ARN = "arn:aws:sqs:us-east-1:000000000000:q"


def make_core(**attributes: str) -> QueueCore:
    return QueueCore(7, "q", {**default_queue_attributes(), **attributes}, ARN)


_lsns = itertools.count(1000)
ROWS: dict[int, MessageSent] = {}  # what "the store" holds, by seq


def read(seqs):
    return [ROWS.get(seq) for seq in seqs]


def stored(record):
    """The record as the store returns it: a MessageSent's seq is its LSN."""
    record = msgspec.structs.replace(record, seq=next(_lsns))
    ROWS[record.seq] = record
    return record


def prepare(core: QueueCore, body: str = "m", delay: int | None = None, group: str | None = None):
    return core.prepare_send(SendMessage("q", body, delay, message_group_id=group), "", 0.0, WALL)


def apply(core: QueueCore, record: MessageSent, now: float) -> None:
    """Settle a cycle whose one send was stored as `record`."""
    cycle = Cycle()
    cycle.sends.append(SendGroup(ignore, None, [record], []))
    core.settle(cycle, [record], None, [], None, now)


def send(core: QueueCore, body: str = "m", now: float = 0.0, delay: int | None = None, group: str | None = None):
    record = stored(prepare(core, body, delay, group))
    apply(core, record, now)
    return record


def receive(core: QueueCore, now: float, count: int = 10, visibility: int | None = None):
    return core.deliver(count, visibility, read, now, WALL + int(now * 1000))


def take(core: QueueCore, count: int, now: float, visibility: int | None = None) -> list[MessageReceived]:
    """The receive records of what a receive now gets."""
    return [record for record, _ in receive(core, now, count, visibility)]


def handle_of(received: MessageReceived, row: MessageSent) -> str:
    return sqs_results.received_message(received, row, [], [], fifo=False, account_id="000000000000").receipt_handle


def test_a_send_is_invisible_until_its_record_is_applied():
    core = make_core()
    record = stored(prepare(core, "hello"))
    assert take(core, 10, 0.0) == []
    apply(core, record, 0.0)
    assert [live.seq for live in take(core, 10, 0.0)] == [record.seq]


def test_visibility_timeout_hides_a_received_message_until_it_passes():
    core = make_core(VisibilityTimeout="30")
    record = send(core)
    (received, _), = receive(core, 1.0)
    assert received.seq == record.seq and received.receive_count == 1
    assert received.visible_at_ms == WALL + 1000 + 30_000
    assert take(core, 10, 30.9) == []
    assert core.counts(30.9).in_flight == 1
    (again, _), = receive(core, 31.0)
    assert again.receive_count == 2


def test_per_receive_visibility_timeout_overrides_the_queue_default():
    core = make_core(VisibilityTimeout="30")
    record = send(core)
    receive(core, 0.0, visibility=5)
    assert [received.seq for received in take(core, 10, 5.0)] == [record.seq]


def test_delay_seconds_from_queue_and_message():
    core = make_core(DelaySeconds="10")
    queue_delayed = send(core, now=0.0)
    message_delayed = send(core, now=0.0, delay=3)
    undelayed = send(core, now=0.0, delay=0)
    assert [l.seq for l in take(core, 10, 0.0)] == [undelayed.seq]
    assert core.counts(0.0).delayed == 2
    assert [l.seq for l in take(core, 10, 3.0)] == [message_delayed.seq]
    assert [l.seq for l in take(core, 10, 10.0)] == [queue_delayed.seq]


def test_standard_queue_accepts_superseded_receipt_handle_for_delete():
    """AWS deletes the message with the handle of an earlier receive; the record says which."""
    core = make_core()
    record = send(core)
    first, _ = receive(core, 0.0, visibility=0)[0]
    second, _ = receive(core, 0.0)[0]
    old = handle_of(first, record)
    new = handle_of(second, record)
    deleted = core.delete(old, 0.0, WALL)
    assert deleted is not None and deleted.seq == record.seq
    assert deleted.reason == "deleted with the handle of receive 1"
    assert core.delete(new, 0.0, WALL) is None  # already deleted: success, as SQS has it
    assert take(core, 10, 100.0) == []  # and it stays deleted
    with pytest.raises(BrokerError) as caught:
        core.change_visibility(new, 10, 0.0, WALL)
    assert caught.value.code == "InvalidParameterValue"
    assert "Message does not exist or is not available for visibility timeout change." in caught.value.message


def test_standard_queue_accepts_expired_receipt_handle_for_delete():
    core = make_core(VisibilityTimeout="5")
    record = send(core)
    received, _ = receive(core, 0.0)[0]
    deleted = core.delete(handle_of(received, record), 6.0, WALL)
    assert deleted is not None and deleted.reason == "deleted"
    assert take(core, 10, 6.0) == [] and core.counts(6.0).visible == 0


def test_fifo_queue_refuses_expired_receipt_handle_for_delete():
    """AWS: InvalidParameterValue, "Value ... for parameter ReceiptHandle is invalid. Reason: The
    receipt handle has expired." (its developer guide's troubleshooting page; LocalStack's
    AWS-validated test_fifo_delete_message_with_expired_receipt_handle)."""
    core = make_core(**{**default_queue_attributes(True), "VisibilityTimeout": "5", "ContentBasedDeduplication": "true"})
    record = send(core, group="g")
    received, _ = receive(core, 0.0)[0]
    expired = handle_of(received, record)
    with pytest.raises(BrokerError) as caught:
        core.delete(expired, 6.0, WALL)
    assert caught.value.code == "InvalidParameterValue"
    assert caught.value.message == f"Value {expired} for parameter ReceiptHandle is invalid. Reason: The receipt handle has expired."
    again, _ = receive(core, 6.0)[0]
    with pytest.raises(BrokerError):  # received again since: still expired
        core.delete(expired, 6.0, WALL)
    with pytest.raises(BrokerError) as caught:
        core.change_visibility(expired, 0, 6.0, WALL)
    assert caught.value.code == "InvalidParameterValue"
    assert core.delete(handle_of(again, record), 6.0, WALL) is not None


def test_standard_queue_change_visibility_with_an_earlier_receipt_handle_acts_on_the_message():
    core = make_core(VisibilityTimeout="5")
    record = send(core)
    first, _ = receive(core, 0.0)[0]
    receive(core, 6.0)  # received again: in flight until 11
    changed = core.change_visibility(handle_of(first, record), 100, 7.0, WALL)
    assert changed is not None and changed.receive_count == 2
    assert take(core, 10, 50.0) == []
    assert len(take(core, 10, 107.0)) == 1


def test_a_handle_from_another_queue_or_garbage_is_invalid():
    core = make_core()
    other = QueueCore(8, "other", default_queue_attributes(), ARN)
    send(other, "x")
    (received, row), = receive(other, 0.0, count=1)
    handle = handle_of(received, row)
    for bad in (handle, "garbage", ""):
        with pytest.raises(BrokerError) as caught:
            core.delete(bad, 0.0, WALL)
        assert caught.value.code == "ReceiptHandleIsInvalid"


def test_change_visibility_extends_or_releases_an_in_flight_message():
    core = make_core(VisibilityTimeout="30")
    record = send(core)
    received, _ = receive(core, 0.0)[0]
    handle = handle_of(received, record)
    changed = core.change_visibility(handle, 100, 10.0, WALL)
    assert changed.visible_at_ms == WALL + 100_000 and changed.receive_count == 1
    assert take(core, 10, 50.0) == []
    core.change_visibility(handle, 0, 60.0, WALL)
    assert len(take(core, 10, 60.0)) == 1


def test_standard_queue_change_visibility_of_a_message_no_longer_in_flight_changes_nothing():
    """AWS answers OK and leaves the message visible (LocalStack pull request 9632, checked
    against AWS): its documented MessageNotInflight is not what it is seen to answer."""
    core = make_core(VisibilityTimeout="5")
    record = send(core)
    received, _ = receive(core, 0.0)[0]
    handle = handle_of(received, record)
    assert core.change_visibility(handle, 10, 6.0, WALL) is None
    assert len(take(core, 10, 6.0)) == 1
    with pytest.raises(BrokerError):
        core.change_visibility(handle, 43201, 1.0, WALL)


def test_retention_expires_old_messages_and_never_delivers_them():
    core = make_core(MessageRetentionPeriod="60")
    old = send(core, now=0.0)
    young = send(core, now=30.0)
    assert core.next_deadline(0.0) == 60.0
    assert core.expire(59.0) == []
    assert core.expire(60.0) == [old.seq]
    assert [l.seq for l in take(core, 10, 89.0)] == [young.seq]


def test_purge_drops_messages_sent_before_it_even_if_committed_after():
    core = make_core()
    before = prepare(core, "in flight to the log")
    send(core)
    core.purge(0.0, WALL)
    apply(core, stored(before), 0.0)
    after = send(core)
    assert [l.seq for l in take(core, 10, 0.0)] == [after.seq]


def test_attributes_report_counts_and_changes():
    core = make_core()
    oldest = send(core)
    send(core, delay=60)
    record = send(core)
    (taken, _), = receive(core, 0.0, count=1)  # takes the oldest ready message
    assert taken.seq == oldest.seq
    attributes = core.get_attributes(["All"], 0.0)
    assert attributes["ApproximateNumberOfMessages"] == "1"
    assert attributes["ApproximateNumberOfMessagesNotVisible"] == "1"
    assert attributes["ApproximateNumberOfMessagesDelayed"] == "1"
    assert attributes["QueueArn"] == ARN
    change = core.set_attributes({"VisibilityTimeout": "5"}, WALL + 5000)
    assert change.attributes["VisibilityTimeout"] == "5"
    assert core.get_attributes(["VisibilityTimeout"], 0.0) == {"VisibilityTimeout": "5"}
    with pytest.raises(BrokerError):
        core.get_attributes(["Nope"], 0.0)
    assert record.seq > 0


def test_restore_keeps_receive_counts_and_clamps_deadlines():
    created = QueueCreated(WALL, 7, "q", default_queue_attributes())
    heads = [MessageSentHead(WALL, 7, "q", seq, 0) for seq in (1, 2, 3, 4)]
    in_flight = MessageReceived(WALL, 7, "q", 2, "id", 3, WALL + 20_000, WALL)
    far_future = MessageReceived(WALL, 7, "q", 3, "id", 1, WALL + 10**12, WALL)  # wall clock went back
    expired_visibility = MessageReceived(WALL, 7, "q", 4, "id", 5, WALL - 1, WALL)
    loaded = LoadedQueue(created, LoadedMessages())
    loaded.messages.seqs.extend(head.seq for head in heads)
    loaded.messages.sent_ms.extend(head.at_ms for head in heads)
    loaded.messages.delays.extend(head.delay_seconds for head in heads)
    for delivery in (in_flight, far_future, expired_visibility):
        loaded.messages.deliveries[delivery.seq] = delivery
    for head in heads:
        ROWS[head.seq] = MessageSent(WALL, 7, "q", head.seq, 0, f"id-{head.seq}", "", "body", {})
    core = QueueCore.restore(loaded, ARN, now=1000.0, wall_ms=WALL, last_written_ms=WALL)
    assert core.messages[2].receive_count == 3
    assert core.messages[4].receive_count == 5
    long_s = 13 * 3600  # these receives keep what they take in flight past the end of the test
    assert [l.seq for l in take(core, 10, 1000.0, long_s)] == [1, 4]
    assert [l.seq for l in take(core, 10, 1020.0, long_s)] == [2]
    assert take(core, 10, 1000.0 + 12 * 3600 - 1, long_s) == []
    assert [l.seq for l in take(core, 10, 1000.0 + 12 * 3600, long_s)] == [3]


def test_waiters_are_served_in_arrival_order_and_expire():
    core = make_core()
    first: list = []
    second: list = []
    cycle = Cycle()
    core.handle(Request(ReceiveMessage("q", 1, None, 20), first.append), cycle, read, 0.0, WALL)
    core.handle(Request(ReceiveMessage("q", 1, None, 5), second.append), cycle, read, 0.0, WALL)
    assert core.next_deadline(0.0) == 5.0
    message = send(core, now=1.0)
    assert core.next_deadline(1.0) == 1.0
    cycle = Cycle()
    core.tick(cycle, read, 1.0, WALL)
    for reply, result in core.settle(cycle, [], None, cycle.records, None, 1.0):
        reply(result)
    assert [[m.message_id for m in result.messages] for result in first] == [[message.message_id]]
    assert second == []
    core.tick(Cycle(), read, 5.0, WALL)
    assert second == [Received([])]
    assert core.waiter_count() == 0


def test_only_one_purge_a_minute():
    core = make_core()
    core.purge(100.0, WALL)
    with pytest.raises(BrokerError) as caught:
        core.purge(159.9, WALL)
    assert caught.value.code == "PurgeQueueInProgress"
    core.purge(160.0, WALL)


def test_tags_are_part_of_the_stored_configuration():
    core = make_core()
    record = core.tag({"team": "edge", "env": "test"}, WALL)
    assert record.tags == {"team": "edge", "env": "test"}
    assert core.untag(["env", "absent"], WALL).tags == {"team": "edge"}
    for bad in ({"aws:reserved": "x"}, {"": "x"}, {"k": "v" * 257}, {f"k{i}": "v" for i in range(50)}):
        with pytest.raises(BrokerError):
            core.tag(bad, WALL)
    assert core.tags == {"team": "edge"}


def test_permissions_live_in_the_policy_attribute():
    import json

    core = make_core()
    core.add_permission("share", ["111122223333"], ["SendMessage", "ReceiveMessage"], WALL)
    statement = json.loads(core.attributes["Policy"])["Statement"][0]
    assert statement["Sid"] == "share"
    assert statement["Principal"] == {"AWS": "arn:aws:iam::111122223333:root"}  # one value: a string, as AWS writes it
    assert statement["Action"] == ["SQS:SendMessage", "SQS:ReceiveMessage"] and statement["Resource"] == ARN
    for label, accounts, actions in [
        ("share", ["111122223333"], ["SendMessage"]),  # the label exists
        ("other", ["1234"], ["SendMessage"]),
        ("other", ["111122223333"], ["DeleteQueue"]),
        ("bad label", ["111122223333"], ["*"]),
    ]:
        with pytest.raises(BrokerError):
            core.add_permission(label, accounts, actions, WALL)
    with pytest.raises(BrokerError):
        core.remove_permission("missing", WALL)
    record = core.remove_permission("share", WALL)
    assert "Policy" not in record.attributes


def test_receives_stop_at_the_in_flight_limit():
    core = make_core(VisibilityTimeout="30")
    core.max_in_flight = 3
    records = {r.seq: r for r in (send(core) for _ in range(5))}
    assert len(receive(core, 0.0, count=10)) == 3
    with pytest.raises(BrokerError) as caught:
        core.check_in_flight_limit()
    assert caught.value.code == "OverLimit"
    first = next(iter(core.messages.values()))
    received = MessageReceived(WALL, 7, "q", first.seq, records[first.seq].message_id, 1, WALL, WALL)
    core.delete(handle_of(received, records[first.seq]), 0.0, WALL)
    core.check_in_flight_limit()
    assert len(receive(core, 0.0, count=10)) == 1
    assert core.in_flight_count == 3
    assert len(receive(core, 31.0, count=10)) == 3  # all four timed out; the limit lets three go


def test_fair_queues_take_groups_in_turn():
    core = make_core()
    noisy = [stored(prepare(core, f"a{i}", group="tenant-a")) for i in range(20)]
    quiet = [stored(prepare(core, f"b{i}", group="tenant-b")) for i in range(2)]
    plain = stored(prepare(core, "no group"))
    for record in noisy + quiet + [plain]:
        apply(core, record, 0.0)
    bodies = [row.body for _, row in receive(core, 0.0, count=6)]
    assert sorted(bodies) == sorted(["a0", "a1", "a2", "b0", "b1", "no group"])  # one from each group in turn
    # each turn takes the next message of every group that has one left: the quiet group's second
    # message comes before the noisy group's third
    assert [set(bodies[:3]), set(bodies[3:5]), set(bodies[5:])] == [{"a0", "b0", "no group"}, {"a1", "b1"}, {"a2"}]
    assert [b for b in bodies if b.startswith("a")] == ["a0", "a1", "a2"]
    with pytest.raises(BrokerError):
        prepare(core, "x", group="has space")


# --- FIFO groups, as AWS serves them (LocalStack's AWS-validated tests in
# tests/aws/services/sqs/test_sqs.py, whose names these follow, and its pull request 13386) ---------

def fifo_core(**attributes: str) -> QueueCore:
    return make_core(**{**default_queue_attributes(True), "ContentBasedDeduplication": "true", **attributes})


def fifo_send(core: QueueCore, *names: str) -> dict[str, MessageSent]:
    """Send each "gN-mM" to group N; the stored rows by name."""
    return {name: send(core, name, group=name.split("-")[0]) for name in names}


def bodies(core: QueueCore, now: float, count: int = 10, visibility: int | None = None) -> list[str]:
    return [row.body for _, row in receive(core, now, count, visibility)]


def test_fifo_receive_message_group_id_ordering():
    core = fifo_core()
    fifo_send(core, "g1-m1", "g2-m1", "g1-m2", "g1-m3")
    assert bodies(core, 0.0) == ["g1-m1", "g1-m2", "g1-m3", "g2-m1"]


def test_fifo_groups_served_by_a_receive_come_after_the_others():
    core = fifo_core(VisibilityTimeout="1")
    fifo_send(core, "g1-m1", "g1-m2", "g1-m3", "g1-m4", "g2-m1", "g3-m1")
    assert bodies(core, 0.0, count=2) == ["g1-m1", "g1-m2"]
    assert bodies(core, 0.5, count=1) == ["g2-m1"]  # the rest of group 1 waits for its first two
    assert bodies(core, 2.0, visibility=0) == ["g3-m1", "g1-m1", "g1-m2", "g1-m3", "g1-m4", "g2-m1"]


def test_fifo_receive_message_with_zero_visibility_timeout():
    core = fifo_core()
    fifo_send(core, "g1-m1", "g2-m1", "g2-m2", "g3-m1", "g1-m2")
    assert bodies(core, 0.0, count=3, visibility=0) == ["g1-m1", "g1-m2", "g2-m1"]
    assert bodies(core, 0.0, visibility=0) == ["g3-m1", "g1-m1", "g1-m2", "g2-m1", "g2-m2"]


def test_fifo_group_delivers_an_earlier_message_visible_again_while_later_ones_are_in_flight():
    core = fifo_core(VisibilityTimeout="30")
    rows = fifo_send(core, "g1-m1", "g1-m2", "g2-m1")
    (first, _), _ = receive(core, 0.0, count=2)
    assert core.change_visibility(handle_of(first, rows["g1-m1"]), 0, 1.0, WALL) is not None
    assert bodies(core, 1.0, count=3) == ["g2-m1", "g1-m1"]  # g1-m2 is still in flight
    assert bodies(core, 30.5) == []  # g1-m2 is visible again, but g1-m1 (received at 1) is not
    assert bodies(core, 31.0) == ["g1-m1", "g1-m2", "g2-m1"]
    other = fifo_core(VisibilityTimeout="30")
    rows = fifo_send(other, "g1-m1", "g1-m2", "g2-m1")
    (first, _), _ = receive(other, 0.0, count=2)
    other.change_visibility(handle_of(first, rows["g1-m1"]), 1, 1.0, WALL)  # shortened, then ended
    assert bodies(other, 3.0, count=3) == ["g2-m1", "g1-m1"]


def test_fifo_group_holds_back_messages_after_one_still_in_flight():
    """LocalStack pull request 13386: AWS returns a group's messages up to the one still in
    flight, and none after it, even when those became visible again."""
    core = fifo_core(VisibilityTimeout="10")
    rows = fifo_send(core, "g1-m1", "g1-m2", "g1-m3")
    received = receive(core, 0.0, count=5)
    core.change_visibility(handle_of(received[0][0], rows["g1-m1"]), 15, 1.0, WALL)
    assert bodies(core, 12.0) == []  # g1-m1 still in flight holds back the two after it
    core = fifo_core(VisibilityTimeout="10")
    rows = fifo_send(core, "g1-m1", "g1-m2", "g1-m3")
    received = receive(core, 0.0, count=5)
    core.change_visibility(handle_of(received[1][0], rows["g1-m2"]), 15, 1.0, WALL)
    assert bodies(core, 12.0) == ["g1-m1"]


def test_fifo_message_group_visibility_after_delete():
    core = fifo_core()
    fifo_send(core, "g1-m1", "g2-m1", "g1-m2", "g2-m2", "g1-m3", "g1-m4", "g3-m1")
    received = receive(core, 0.0, count=2)
    assert [row.body for _, row in received] == ["g1-m1", "g1-m2"]
    for record, row in received:
        core.delete(handle_of(record, row), 0.0, WALL)
    # group 1 keeps its place by when its next message was sent
    assert bodies(core, 0.0) == ["g2-m1", "g2-m2", "g1-m3", "g1-m4", "g3-m1"]


def test_fifo_message_group_visibility_after_partial_delete():
    core = fifo_core()
    fifo_send(core, "g1-m1", "g2-m1", "g1-m2", "g2-m2", "g1-m3", "g1-m4", "g3-m1")
    (record, row), _ = receive(core, 0.0, count=2)
    core.delete(handle_of(record, row), 0.0, WALL)
    assert bodies(core, 0.0) == ["g2-m1", "g2-m2", "g3-m1"]
