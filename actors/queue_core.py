"""The rules of one SQS queue, as a pure object: no I/O, no clock of its own.

Theory of operation
-------------------
Every method takes the current time as arguments: `now` in seconds on the monotonic deadline clock,
`wall_ms` in wall-clock milliseconds for what is stored or shown. The Trio shell (`queue.py`) owns
the one QueueCore of a queue and calls it from its own task only.

Message bodies are not held here: the store keeps them, and the shell reads them when a message is
delivered. In memory each live message is a small `Live` record:

- ready:      `visible_at == READY`, and its seq is in the ReadySet: one heap per message group
              (lowest seq first, which gives standard queues their best-effort order), served
              round-robin across groups, so one group's backlog cannot starve the others (fair
              queues; a queue without groups has the one group "");
- delayed:    never received, `visible_at` in the future, a `_timers` entry;
- in flight:  received, `visible_at` in the future, a `_timers` entry.

Heaps are cleaned lazily: an entry whose message is gone, or whose deadline no longer matches
`visible_at`, is skipped when popped, so deletes and visibility changes are O(1).

Two phases. A send is validated and given its record (`prepare_send`) but becomes visible only
after its record is committed (`apply_sent`), because a send may still be refused by storage.
Every other change (receive, delete, visibility, purge, attributes) is applied at once and
committed by the shell before any reply; if that commit fails the shell discards this object and
rebuilds the queue from storage, so memory is never ahead of disk when anyone can observe it.

Receipt handles carry the receive count, so a handle stops working once its message is received
again; sequence numbers are never reused (after a restart they continue above the store's last
LSN), so an old handle can never name a newer message.
"""

from __future__ import annotations

import heapq
import itertools
import math
import sys
from collections import deque
from collections.abc import Callable, Mapping, Sequence

import msgspec

from dovecote.storage.records import (
    MessageAttribute,
    MessageDeleted,
    MessageReceived,
    MessageSent,
    QueueAttributesChanged,
    QueueDeleted,
    QueuePurged,
    VisibilityChanged,
)
from dovecote.storage.store import LoadedQueue

from . import policy, validation
from .errors import BrokerError, invalid
from .ids import MessageIds, ReceiptHandle, decode_receipt_handle, encode_receipt_handle
from .ops import ReceivedMessage

READY = -math.inf
PURGE_INTERVAL_S = 60
MAX_IN_FLIGHT = 120_000  # SQS's limit for a standard queue; receives past it get OverLimit
VISIBLE, IN_FLIGHT, DELAYED = "visible", "in_flight", "delayed"


class Live(msgspec.Struct, gc=False):
    seq: int
    sent_at: float  # monotonic seconds; retention counts from here
    receive_count: int
    first_receive_ms: int
    visible_at: float  # READY, or the monotonic deadline at which it becomes visible
    group: str = ""  # MessageGroupId


class ReadySet:
    """Ready seqs per message group, lowest first within a group, groups taken in turn."""

    __slots__ = ("_heaps", "_rotation")

    def __init__(self) -> None:
        self._heaps: dict[str, list[int]] = {}
        self._rotation: deque[str] = deque()

    def push(self, seq: int, group: str) -> None:
        heap = self._heaps.get(group)
        if heap is None:
            self._heaps[group] = [seq]
            self._rotation.append(group)
        else:
            heapq.heappush(heap, seq)

    def pop(self) -> int:
        """The next group's lowest seq; that group then waits for every other group's turn."""
        group = self._rotation[0]
        heap = self._heaps[group]
        seq = heapq.heappop(heap)
        if heap:
            self._rotation.rotate(-1)
        else:
            self._rotation.popleft()
            del self._heaps[group]
        return seq

    def clear(self) -> None:
        self._heaps.clear()
        self._rotation.clear()

    def __bool__(self) -> bool:
        return bool(self._rotation)


class Waiter(msgspec.Struct, gc=False):
    """A long-polling ReceiveMessage parked until messages arrive or its deadline passes."""

    max_messages: int
    visibility_timeout_s: int | None
    deadline: float
    attribute_names: Sequence[str]
    message_attribute_names: Sequence[str]
    reply: Callable


class QueueCounts(msgspec.Struct, frozen=True):
    visible: int
    in_flight: int
    delayed: int


class QueueCore:
    def __init__(
        self,
        queue_id: int,
        name: str,
        attributes: Mapping[str, str],
        arn: str,
        *,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        self.queue_id = queue_id
        self.name = name
        self.arn = arn
        self.region = arn.split(":")[3]
        self.account_id = arn.split(":")[4]
        self.attributes: dict[str, str] = dict(attributes)
        self.config = validation.queue_config(self.attributes)
        self.tags: dict[str, str] = dict(tags or {})
        self._last_purge_at = -math.inf
        self.messages: dict[int, Live] = {}
        self._ready = ReadySet()
        self._timers: list[tuple[float, int]] = []
        # Sends prepared but not yet stored, by MessageId -> the prepare ticket; a purge drops
        # every send prepared before it, whenever that send's commit completes.
        self._pending_sends: dict[str, int] = {}
        self._tickets = itertools.count(1)
        self._purged_through_ticket = 0
        self.in_flight_count = 0  # received and not yet visible again, deleted or expired
        self.max_in_flight = MAX_IN_FLIGHT
        self._expiry_check_at = math.inf
        self._waiters: dict[int, Waiter] = {}
        self._waiter_deadlines: list[tuple[float, int]] = []
        self._waiter_ids = itertools.count()
        self._message_ids = MessageIds()

    @classmethod
    def restore(
        cls, loaded: LoadedQueue, arn: str, *, now: float, wall_ms: int
    ) -> QueueCore:
        """Rebuild a queue from its stored rows. Stored deadlines are wall-clock times; they are
        clamped to the longest timeout SQS allows, so a wall clock that went back while the broker
        was down cannot hide a message for longer than that."""
        row = loaded.row
        core = cls(row.queue_id, row.queue, row.attributes, arn, tags=row.tags)
        messages, ready = core.messages, core._ready
        # Groups are not in the message heads read at recovery: messages stored before a restart
        # are served oldest first, without the fair rotation; new sends rotate again.
        for sent, delivery in loaded.messages:
            age_s = max(0, wall_ms - sent.at_ms) / 1000
            if delivery is None:
                live = Live(sent.seq, now - age_s, 0, 0, READY)
                remaining = min(sent.delay_seconds - age_s, validation.MAX_DELAY_S)
            else:
                live = Live(sent.seq, now - age_s, delivery.receive_count, delivery.first_receive_ms, READY)
                remaining = min((delivery.visible_at_ms - wall_ms) / 1000, validation.MAX_VISIBILITY_TIMEOUT_S)
            messages[sent.seq] = live
            if remaining > 0:
                live.visible_at = now + remaining
                core._timers.append((live.visible_at, sent.seq))
            else:
                ready.push(sent.seq, "")
        heapq.heapify(core._timers)
        core.in_flight_count = sum(1 for live in messages.values() if _in_flight(live))
        core._expiry_check_at = -math.inf
        return core

    # --- sends --------------------------------------------------------------------------------
    def prepare_send(
        self,
        body: str,
        delay_seconds: int | None,
        message_attributes: Mapping[str, MessageAttribute],
        sender_id: str,
        wall_ms: int,
        system_attributes: Mapping[str, MessageAttribute] | None = None,
        group_id: str | None = None,
    ) -> MessageSent:
        """Validate a send and build its record; nothing changes until apply_sent."""
        validation.validate_delay(delay_seconds)
        validation.validate_message(body, message_attributes, self.config.max_message_bytes)
        validation.validate_system_attributes(system_attributes or {})
        if group_id is not None:
            validation.validate_group_id(group_id)
        record = MessageSent(
            at_ms=wall_ms,
            queue_id=self.queue_id,
            queue=self.name,
            seq=0,  # the store stamps the record's LSN here
            message_id=self._message_ids.new(),
            body=body,
            attributes=dict(message_attributes),
            delay_seconds=self.config.delay_s if delay_seconds is None else delay_seconds,
            sender_id=sender_id or self.account_id,
            system_attributes=dict(system_attributes or {}),
            group_id=group_id or "",
        )
        self._pending_sends[record.message_id] = next(self._tickets)
        return record

    def forget_send(self, record: MessageSent) -> None:
        """A prepared send that storage refused."""
        self._pending_sends.pop(record.message_id, None)

    def apply_sent(self, record: MessageSent, now: float) -> None:
        """Make a stored send live (unless a purge handled after it already removed it)."""
        ticket = self._pending_sends.pop(record.message_id, None)
        if ticket is not None and ticket <= self._purged_through_ticket:
            return
        # Interned, so a group's messages share one string however many there are.
        live = Live(record.seq, now, 0, 0, READY, sys.intern(record.group_id))
        self.messages[record.seq] = live
        self._schedule(live, now + record.delay_seconds if record.delay_seconds > 0 else READY)
        if self._expiry_check_at == math.inf:
            self._expiry_check_at = now + self.config.retention_s

    # --- receives -----------------------------------------------------------------------------
    def take_ready(self, max_messages: int, now: float) -> list[Live]:
        """Pop up to max_messages ready messages, oldest first. The caller must pass them to
        mark_received (with their stored rows) in the same step."""
        self.advance(now)
        retention = self.config.retention_s
        taken: list[Live] = []
        max_messages = min(max_messages, self.max_in_flight - self.in_flight_count)
        while self._ready and len(taken) < max_messages:
            seq = self._ready.pop()
            live = self.messages.get(seq)
            if live is None or live.visible_at != READY:
                continue
            if live.sent_at + retention <= now:
                self._expiry_check_at = now  # expired: never delivered, removed by the next expire()
                continue
            taken.append(live)
        return taken

    def check_in_flight_limit(self) -> None:
        """A receive past the in-flight limit is refused (OverLimit, as SQS does)."""
        if self.in_flight_count >= self.max_in_flight:
            raise BrokerError(
                "OverLimit",
                f"The queue has {self.in_flight_count} messages in flight, the most it allows; delete some first.",
            )

    def mark_received(
        self,
        lives: Sequence[Live],
        rows: Sequence[MessageSent | None],
        visibility_timeout_s: int | None,
        now: float,
        wall_ms: int,
    ) -> list[tuple[MessageReceived, MessageSent]]:
        timeout = self.config.visibility_timeout_s if visibility_timeout_s is None else visibility_timeout_s
        received = []
        for live, row in zip(lives, rows):
            if row is None:  # the store lost it (salvage); forget it here too
                self.messages.pop(live.seq, None)
                continue
            live.receive_count += 1
            if live.first_receive_ms == 0:
                live.first_receive_ms = wall_ms
            self._schedule(live, now + timeout)
            record = MessageReceived(
                at_ms=wall_ms,
                queue_id=self.queue_id,
                queue=self.name,
                seq=live.seq,
                message_id=row.message_id,
                receive_count=live.receive_count,
                visible_at_ms=wall_ms + timeout * 1000,
                first_receive_ms=live.first_receive_ms,
            )
            received.append((record, row))
        return received

    # --- deletes and visibility ---------------------------------------------------------------
    def delete(self, receipt_handle: str, wall_ms: int) -> MessageDeleted | None:
        """Delete by receipt handle; None if the message is already gone (SQS treats that as
        success). Raises ReceiptHandleIsInvalid for a handle of another receive or queue."""
        handle, live = self._resolve(receipt_handle)
        if live is None:
            return None
        self._forget(live)
        return MessageDeleted(wall_ms, self.queue_id, self.name, handle.seq, handle.message_id, "deleted")

    def change_visibility(
        self, receipt_handle: str, timeout_s: int, now: float, wall_ms: int
    ) -> VisibilityChanged:
        validation.validate_visibility_timeout(timeout_s)
        handle, live = self._resolve(receipt_handle)
        if live is None:
            raise invalid(
                f"Value {receipt_handle[:100]} for parameter ReceiptHandle is invalid. "
                "Reason: Message does not exist or is not available for visibility timeout change."
            )
        if live.visible_at == READY or live.visible_at <= now:
            raise BrokerError("MessageNotInflight", "The message referred to isn't in flight.")
        self._schedule(live, now + timeout_s if timeout_s > 0 else READY)
        return VisibilityChanged(
            at_ms=wall_ms,
            queue_id=self.queue_id,
            queue=self.name,
            seq=live.seq,
            message_id=handle.message_id,
            receive_count=live.receive_count,
            visible_at_ms=wall_ms + timeout_s * 1000,
            first_receive_ms=live.first_receive_ms,
        )

    def _resolve(self, receipt_handle: str) -> tuple[ReceiptHandle, Live | None]:
        handle = decode_receipt_handle(receipt_handle)
        if handle.queue_id != self.queue_id:
            raise BrokerError("ReceiptHandleIsInvalid", "The receipt handle belongs to another queue.")
        live = self.messages.get(handle.seq)
        if live is not None and live.receive_count != handle.receive_count:
            raise BrokerError(
                "ReceiptHandleIsInvalid",
                "The receipt handle has expired: the message was received again since it was issued.",
            )
        return handle, live

    # --- queue-wide changes -------------------------------------------------------------------
    def purge(self, now: float, wall_ms: int) -> QueuePurged:
        if now - self._last_purge_at < PURGE_INTERVAL_S:
            raise BrokerError(
                "PurgeQueueInProgress",
                f"Only one PurgeQueue operation on {self.name} is allowed every {PURGE_INTERVAL_S} seconds.",
            )
        self._last_purge_at = now
        self._purged_through_ticket = max(self._pending_sends.values(), default=self._purged_through_ticket)
        self.messages.clear()
        self._ready.clear()
        self._timers.clear()
        self.in_flight_count = 0
        self._expiry_check_at = math.inf
        return QueuePurged(wall_ms, self.queue_id, self.name, 0)  # the store stamps the purge's LSN

    def deleted_record(self, wall_ms: int) -> QueueDeleted:
        return QueueDeleted(wall_ms, self.queue_id, self.name)

    def expired_record(self, seq: int, row: MessageSent | None, wall_ms: int) -> MessageDeleted:
        message_id = row.message_id if row is not None else ""
        return MessageDeleted(wall_ms, self.queue_id, self.name, seq, message_id, "expired")

    def set_attributes(self, attributes: Mapping[str, str], wall_ms: int) -> QueueAttributesChanged:
        changed = validation.validate_queue_attributes(attributes)
        self.attributes = {**self.attributes, **changed, "LastModifiedTimestamp": str(wall_ms // 1000)}
        self.config = validation.queue_config(self.attributes)
        self._expiry_check_at = -math.inf  # the retention period may have shrunk
        return self._configuration(wall_ms)

    def tag(self, tags: Mapping[str, str], wall_ms: int) -> QueueAttributesChanged:
        self.tags = policy.tagged(self.tags, tags)
        return self._configuration(wall_ms)

    def untag(self, keys: Sequence[str], wall_ms: int) -> QueueAttributesChanged:
        self.tags = policy.untagged(self.tags, keys)
        return self._configuration(wall_ms)

    def add_permission(
        self, label: str, account_ids: Sequence[str], actions: Sequence[str], wall_ms: int
    ) -> QueueAttributesChanged:
        document = policy.with_permission(self.attributes.get("Policy"), self.arn, label, account_ids, actions)
        self.attributes = {**self.attributes, "Policy": document}
        return self._configuration(wall_ms)

    def remove_permission(self, label: str, wall_ms: int) -> QueueAttributesChanged:
        document = policy.without_permission(self.attributes.get("Policy"), self.arn, label)
        self.attributes = {k: v for k, v in self.attributes.items() if k != "Policy"}
        if document is not None:
            self.attributes["Policy"] = document
        return self._configuration(wall_ms)

    def _configuration(self, wall_ms: int) -> QueueAttributesChanged:
        return QueueAttributesChanged(
            wall_ms, self.queue_id, self.name, dict(self.attributes), self.region, dict(self.tags)
        )

    def counts(self, now: float) -> QueueCounts:
        states = [message_state(live, now) for live in self.messages.values()]
        return QueueCounts(states.count(VISIBLE), states.count(IN_FLIGHT), states.count(DELAYED))

    def peek(self, after_seq: int, max_messages: int, state: str, now: float) -> list[tuple[Live, str]]:
        """Up to max_messages live messages with seq > after_seq (in a state, if given), oldest
        first, with their states. Changes nothing."""
        if state not in ("", VISIBLE, IN_FLIGHT, DELAYED):
            raise invalid(f"Value {state[:40]} for parameter state is invalid: visible, in_flight or delayed.")
        if not 1 <= max_messages <= 1000:
            raise invalid("Value for parameter max_messages is invalid: 1 to 1000.")
        found = []
        for seq, live in self.messages.items():
            if seq <= after_seq:
                continue
            live_state = message_state(live, now)
            if not state or live_state == state:
                found.append((live, live_state))
                if len(found) >= max_messages:
                    break
        return found

    def get_attributes(self, names: Sequence[str], now: float) -> dict[str, str]:
        validation.check_attribute_names(names)
        counts = self.counts(now)
        everything = {
            **self.attributes,
            "QueueArn": self.arn,
            "ApproximateNumberOfMessages": str(counts.visible),
            "ApproximateNumberOfMessagesNotVisible": str(counts.in_flight),
            "ApproximateNumberOfMessagesDelayed": str(counts.delayed),
        }
        return select_named(everything, names)

    # --- time ---------------------------------------------------------------------------------
    def advance(self, now: float) -> None:
        """Make every message whose deadline has passed visible again."""
        timers = self._timers
        while timers and timers[0][0] <= now:
            deadline, seq = heapq.heappop(timers)
            live = self.messages.get(seq)
            if live is not None and live.visible_at == deadline:
                self._schedule(live, READY)

    def expire(self, now: float) -> list[int]:
        """Remove messages past the retention period; returns their seqs (oldest first)."""
        if now < self._expiry_check_at:
            return []
        retention = self.config.retention_s
        expired = []
        self._expiry_check_at = math.inf
        for seq, live in self.messages.items():
            if live.sent_at + retention > now:
                self._expiry_check_at = live.sent_at + retention
                break
            expired.append(seq)
        for seq in expired:
            self._forget(self.messages[seq])
        return expired

    def next_deadline(self, now: float) -> float:
        """When the shell must next call tick-related methods even if no request arrives."""
        if self._waiters and self._ready:
            return now
        candidates = [self._expiry_check_at]
        if self._timers:
            candidates.append(self._timers[0][0])
        if self._waiter_deadlines:
            candidates.append(self._waiter_deadlines[0][0])
        return min(candidates)

    # --- long polls ---------------------------------------------------------------------------
    def add_waiter(self, waiter: Waiter) -> None:
        waiter_id = next(self._waiter_ids)
        self._waiters[waiter_id] = waiter
        heapq.heappush(self._waiter_deadlines, (waiter.deadline, waiter_id))

    def pop_expired_waiters(self, now: float) -> list[Waiter]:
        expired = []
        while self._waiter_deadlines and self._waiter_deadlines[0][0] <= now:
            _, waiter_id = heapq.heappop(self._waiter_deadlines)
            waiter = self._waiters.pop(waiter_id, None)
            if waiter is not None:
                expired.append(waiter)
        return expired

    def pop_servable_waiters(self, now: float) -> list[tuple[Waiter, list[Live]]]:
        """Waiters, in arrival order, paired with the messages they now get."""
        served = []
        self.advance(now)
        while self._waiters and self._ready:
            waiter_id = next(iter(self._waiters))
            lives = self.take_ready(self._waiters[waiter_id].max_messages, now)
            if not lives:
                break
            served.append((self._waiters.pop(waiter_id), lives))
        return served

    def drain_waiters(self) -> list[Waiter]:
        waiters = list(self._waiters.values())
        self._waiters.clear()
        self._waiter_deadlines.clear()
        return waiters

    def waiter_count(self) -> int:
        return len(self._waiters)

    # --- helpers ------------------------------------------------------------------------------
    def _schedule(self, live: Live, visible_at: float) -> None:
        was_in_flight = _in_flight(live)
        live.visible_at = visible_at
        self.in_flight_count += _in_flight(live) - was_in_flight
        if visible_at == READY:
            self._ready.push(live.seq, live.group)
        else:
            heapq.heappush(self._timers, (visible_at, live.seq))

    def _forget(self, live: Live) -> None:
        del self.messages[live.seq]
        self.in_flight_count -= _in_flight(live)

    def render_received(
        self,
        record: MessageReceived,
        row: MessageSent,
        attribute_names: Sequence[str],
        message_attribute_names: Sequence[str],
    ) -> ReceivedMessage:
        handle = encode_receipt_handle(
            ReceiptHandle(self.queue_id, record.seq, record.receive_count, record.message_id)
        )
        attributes = system_attributes(row, record, attribute_names)
        message_attributes = select_message_attributes(row.attributes, message_attribute_names)
        return ReceivedMessage(
            message_id=row.message_id,
            receipt_handle=handle,
            body=row.body,
            md5_of_body=validation.md5_of_body(row.body),
            md5_of_message_attributes=validation.md5_of_message_attributes(message_attributes),
            attributes=attributes,
            message_attributes=message_attributes,
        )


def _in_flight(live: Live) -> bool:
    """Received, with its visibility timeout still pending (structurally: the timer has not fired)."""
    return live.visible_at != READY and live.receive_count > 0


def message_state(live: Live, now: float) -> str:
    if live.visible_at == READY or live.visible_at <= now:
        return VISIBLE
    return IN_FLIGHT if live.receive_count else DELAYED


def system_attributes(row: MessageSent, record: MessageReceived, names: Sequence[str]) -> dict[str, str]:
    if not names:
        return {}
    everything = {
        "SenderId": row.sender_id,
        "SentTimestamp": str(row.at_ms),
        "ApproximateReceiveCount": str(record.receive_count),
        "ApproximateFirstReceiveTimestamp": str(record.first_receive_ms),
    }
    if "AWSTraceHeader" in row.system_attributes:
        everything["AWSTraceHeader"] = row.system_attributes["AWSTraceHeader"].string_value or ""
    if row.group_id:
        everything["MessageGroupId"] = row.group_id
    return select_named(everything, names)


def select_named(everything: dict[str, str], names: Sequence[str]) -> dict[str, str]:
    """The entries a request named, or all of them for `All` (as SQS attribute names work)."""
    if "All" in names:
        return everything
    return {name: everything[name] for name in names if name in everything}


def select_message_attributes(
    attributes: Mapping[str, MessageAttribute], names: Sequence[str]
) -> dict[str, MessageAttribute]:
    """The message attributes a receive asked for: `All` or `.*` for every one, a name, or a
    prefix such as `bar.*`."""
    if not attributes or not names:
        return {}
    if "All" in names or ".*" in names:
        return dict(attributes)
    prefixes = tuple(name[:-1] for name in names if name.endswith(".*"))
    exact = set(names)
    return {
        name: value
        for name, value in attributes.items()
        if name in exact or (prefixes and name.startswith(prefixes))
    }
