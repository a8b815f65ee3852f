"""Hypothesis state machines: random sends, receives, deletes, visibility changes, clock jumps and
restarts from the store, applied to QueueCore and to a small reference model of the SQS rules, for
a standard queue and for a FIFO queue (order within groups, group locks, deduplication). Any
difference fails. Times are whole seconds, so stored millisecond deadlines are exact across
restarts."""

from dataclasses import dataclass

from hypothesis import settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from dovecote.actors.errors import BrokerError
from dovecote.actors import sqs_results
from dovecote.actors.config import BrokerConfig, queue_arn
from dovecote.actors.messages import ignore
from dovecote.actors.ops import SendMessage
from dovecote.actors.queue_core import READY, Cycle, DuplicateSend, QueueCore, SendGroup
from dovecote.actors.recovery import last_written_ms
from dovecote.actors.validation import default_queue_attributes
from dovecote.storage.memory_store import MemoryStore
from dovecote.storage.records import QueueCreated

WALL = 1_700_000_000_000
ARN = queue_arn(BrokerConfig(), "", "model")


@dataclass
class ModelMessage:
    body: str
    visible_at: int
    receive_count: int = 0
    deleted: bool = False
    group: str = ""
    seq: int = 0


class QueueModel(RuleBasedStateMachine):
    attributes = {**default_queue_attributes(), "VisibilityTimeout": "30"}

    def __init__(self) -> None:
        super().__init__()
        self.now = 0
        self.store = MemoryStore()
        self.store.commit([[QueueCreated(WALL, 1, "model", self.attributes)]])
        self.core = QueueCore(1, "model", self.attributes, ARN)
        self.model: dict[str, ModelMessage] = {}
        self.handles: list[tuple[str, str, int]] = []  # (handle, message id, receive count it came with)
        self.last_purge: int | None = None  # the one-a-minute rule is not kept across restarts
        self.received = 0  # messages handed to receives, in all

    def wall_ms(self) -> int:
        return WALL + self.now * 1000

    def visible(self) -> list[str]:
        return [mid for mid, m in self.model.items() if not m.deleted and m.visible_at <= self.now]

    def commit(self, *records):
        return self.store.commit([list(records)])[0][-1]

    def read(self, seqs):
        return self.store.read_messages(1, seqs)

    def apply(self, record) -> None:
        """Settle a cycle whose one send was stored as `record`."""
        cycle = Cycle()
        cycle.sends.append(SendGroup(ignore, None, [record], []))
        self.core.settle(cycle, [record], None, [], None, float(self.now))

    def handle(self, record, row) -> str:
        return sqs_results.received_message(record, row, [], [], fifo=self.core.config.fifo, account_id="0").receipt_handle

    @rule(
        body=st.text(min_size=1, max_size=8).filter(lambda b: "\x00" not in b),
        delay=st.integers(0, 120),
        group=st.sampled_from([None, "a", "b"]),
    )
    def send(self, body, delay, group):
        try:
            record = self.core.prepare_send(SendMessage("model", body, delay, message_group_id=group), "", float(self.now), self.wall_ms())
        except BrokerError:
            return  # characters SQS refuses: nothing changes
        record = self.commit(record)  # now with its seq: its LSN
        self.apply(record)
        self.model[record.message_id] = ModelMessage(body, self.now + delay)

    @rule(count=st.integers(1, 10), visibility=st.one_of(st.none(), st.integers(0, 200)))
    def receive(self, count, visibility):
        expected_visible = set(self.visible())
        received = self.core.deliver(count, visibility, self.read, float(self.now), self.wall_ms())
        assert len(received) == min(count, len(expected_visible))
        self.received += len(received)
        timeout = 30 if visibility is None else visibility
        for record, row in received:
            message = self.model[row.message_id]
            assert row.message_id in expected_visible and row.body == message.body
            message.receive_count += 1
            message.visible_at = self.now + timeout
            assert record.receive_count == message.receive_count
            self.commit(record)
            self.handles.append((self.handle(record, row), row.message_id, record.receive_count))

    @precondition(lambda self: self.handles)
    @rule(data=st.data())
    def delete(self, data):
        """Any handle of a message deletes it on a standard queue; on a FIFO queue only the handle
        of the receive it is in flight from (any other has expired)."""
        handle, message_id, count = data.draw(st.sampled_from(self.handles))
        message = self.model[message_id]
        current = message.receive_count == count and message.visible_at > self.now
        fifo = self.core.config.fifo
        try:
            record = self.core.delete(handle, float(self.now), self.wall_ms())
        except BrokerError as error:
            assert fifo and error.code == "InvalidParameterValue" and "expired" in error.message
            assert not message.deleted and not current
            return
        if message.deleted:
            assert record is None
            return
        assert record is not None and (current or not fifo)
        assert record.reason == ("deleted" if message.receive_count == count else f"deleted with the handle of receive {count}")
        self.commit(record)
        message.deleted = True

    @precondition(lambda self: self.handles)
    @rule(data=st.data(), timeout=st.integers(0, 300))
    def change_visibility(self, data, timeout):
        """Any handle of a message in flight changes it on a standard queue (one no longer in
        flight is left as it is, with a success); on a FIFO queue only the current receive's."""
        handle, message_id, count = data.draw(st.sampled_from(self.handles))
        message = self.model[message_id]
        in_flight = message.visible_at > self.now
        fifo = self.core.config.fifo
        try:
            record = self.core.change_visibility(handle, timeout, float(self.now), self.wall_ms())
        except BrokerError as error:
            assert error.code == "InvalidParameterValue"
            assert message.deleted or (fifo and (message.receive_count != count or not in_flight))
            return
        assert not message.deleted
        if record is None:
            assert not fifo and not in_flight
            return
        assert in_flight and (message.receive_count == count or not fifo)
        self.commit(record)
        message.visible_at = self.now + timeout

    @rule()
    def purge(self):
        try:
            record = self.core.purge(float(self.now), self.wall_ms())
        except BrokerError as error:
            assert error.code == "PurgeQueueInProgress"
            assert self.last_purge is not None and self.now - self.last_purge < 60
            return
        assert self.last_purge is None or self.now - self.last_purge >= 60
        self.last_purge = self.now
        self.commit(record)
        for message in self.model.values():
            message.deleted = True

    @rule(seconds=st.integers(0, 100))
    def advance(self, seconds):
        self.now += seconds
        self.core.advance(float(self.now))

    @rule()
    def restart(self):
        self.last_purge = None
        rows, damages = self.store.load_queue_rows()
        loaded, more = self.store.load_queue(rows[0], with_groups=self.core.config.fifo)
        assert damages == more == []
        written_ms = last_written_ms(self.store, [loaded])
        counters = self.core.counters
        self.core = QueueCore.restore(loaded, ARN, now=float(self.now), wall_ms=self.wall_ms(), last_written_ms=written_ms)
        self.core.counters = counters  # as recovery hands them on

    @invariant()
    def counts_agree(self):
        counts = self.core.counts(float(self.now))
        live = [m for m in self.model.values() if not m.deleted]
        assert counts.visible == sum(m.visible_at <= self.now for m in live)
        assert counts.in_flight == sum(m.visible_at > self.now and m.receive_count > 0 for m in live)
        assert counts.delayed == sum(m.visible_at > self.now and m.receive_count == 0 for m in live)
        # the running counts match their structural definitions
        lives = self.core.messages.values()
        assert self.core.in_flight_count == sum(1 for m in lives if m.visible_at != READY and m.receive_count > 0)
        assert self.core.delayed_count == sum(1 for m in lives if m.visible_at != READY and m.receive_count == 0)
        running = self.core.running_counts()
        assert running.visible == sum(1 for m in lives if m.visible_at == READY)
        # and, once every due timer has fired, the counts by the clock
        if not any(m.visible_at != READY and m.visible_at <= self.now for m in lives):
            assert running == counts

    @invariant()
    def counters_agree(self):
        counters = self.core.counters
        assert counters.sent == len(self.model) and counters.received == self.received
        assert counters.deleted + counters.purged == sum(m.deleted for m in self.model.values())
        assert counters.sent - counters.deleted - counters.purged == len(self.core.messages)


TestQueueModel = QueueModel.TestCase
TestQueueModel.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


class FifoQueueModel(QueueModel):
    """The FIFO rules: a receive returns, oldest first, the visible messages of each group older
    than the group's oldest one in flight (as many as it asks for, when there are that many), each
    one its group's oldest; only the handle of the current receive deletes or changes a message; a
    deduplication id seen in the last 5 minutes gives the original MessageId and no new message."""

    attributes = {**default_queue_attributes(True), "VisibilityTimeout": "30"}

    def __init__(self) -> None:
        super().__init__()
        self.dedup: dict[str, tuple[int, str]] = {}  # id -> (sent at, message id)

    @rule(body=st.sampled_from(["x", "y", "z"]), group=st.sampled_from(["a", "b", "c"]), dedup=st.integers(0, 6))
    def send(self, body, group, dedup):
        dedup_id = f"d{dedup}"
        op = SendMessage("model", body, message_group_id=group, message_deduplication_id=dedup_id)
        prepared = self.core.prepare_send(op, "", float(self.now), self.wall_ms())
        seen = self.dedup.get(dedup_id)
        if seen is not None and self.now - seen[0] < 300:
            assert isinstance(prepared, DuplicateSend) and prepared.message_id == seen[1]
            return
        assert not isinstance(prepared, DuplicateSend)
        record = self.commit(prepared)
        self.apply(record)
        self.model[record.message_id] = ModelMessage(body, self.now, group=group, seq=record.seq)
        self.dedup[dedup_id] = (self.now, record.message_id)

    @rule(count=st.integers(1, 10), visibility=st.one_of(st.none(), st.integers(0, 200)))
    def receive(self, count, visibility):
        live = {mid: m for mid, m in self.model.items() if not m.deleted}
        # A group delivers its visible messages older than its oldest one in flight (AWS delivers
        # an earlier message that became visible again while later ones are in flight).
        oldest_in_flight: dict[str, int] = {}
        for m in live.values():
            if m.visible_at > self.now and m.receive_count > 0:
                oldest_in_flight[m.group] = min(m.seq, oldest_in_flight.get(m.group, m.seq))
        available = {
            mid: m for mid, m in live.items()
            if m.visible_at <= self.now and m.seq < oldest_in_flight.get(m.group, m.seq + 1)
        }
        received = self.core.deliver(count, visibility, self.read, float(self.now), self.wall_ms())
        assert len(received) == min(count, len(available))
        self.received += len(received)
        taken_per_group: dict[str, int] = {}
        timeout = 30 if visibility is None else visibility
        for record, row in received:
            message = self.model[row.message_id]
            assert row.message_id in available
            # each message is the oldest of its group's deliverable ones not already taken by this receive
            group_seqs = sorted(m.seq for m in available.values() if m.group == message.group)
            position = taken_per_group.get(message.group, 0)
            assert message.seq == group_seqs[position]
            taken_per_group[message.group] = position + 1
            message.receive_count += 1
            message.visible_at = self.now + timeout
            self.commit(record)
            self.handles.append((self.handle(record, row), row.message_id, record.receive_count))

    @rule()
    def purge(self):
        """A purge forgets the deduplication ids too, as AWS does."""
        before = self.last_purge
        super().purge()
        if self.last_purge != before:
            self.dedup.clear()

    @rule(seconds=st.integers(0, 100))
    def advance(self, seconds):
        super().advance(seconds)
        record = self.core.expire_dedup(float(self.now), self.wall_ms())
        if record is not None:
            self.commit(record)


TestFifoQueueModel = FifoQueueModel.TestCase
TestFifoQueueModel.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
