"""A queue's message move tasks (StartMessageMoveTask): the running one's progress and throttle, and
the last few for ListMessageMoveTasks. Pure: times are passed in; the queue core decides which
messages move and hands them over.

A task moves the messages that were in the queue when it started (seq <= `through_seq`), at most
MaxNumberOfMessagesPerSecond of them a second (a token bucket), at most MAX_MOVES_IN_TRANSIT
handed over and not yet answered. Each change of its state is a `MoveTaskChanged` record, so a
running task resumes after a restart.
"""

from __future__ import annotations

import math

import msgspec

from dovecote.storage.records import MoveTaskChanged

from .errors import BrokerError, invalid
from .ids import encode_task_handle
from .limits import MAX_MOVES_IN_TRANSIT, MOVE_BATCH_MESSAGES, SQS_MAX_MOVE_TASK_RATE_PER_S, SQS_MAX_MOVE_TASKS_LISTED
from .ops import MoveTask

IDLE_LOOK_AGAIN_S = 0.1  # a running task that found nothing to move looks again this much later
ACTIVE = ("RUNNING", "CANCELLING")


class RunningMoveTask(msgspec.Struct, gc=False):
    """The running task (its stored state is `record`)."""

    record: MoveTaskChanged
    tokens: float = 0.0  # messages it may start moving now, under max_per_second
    refilled_at: float = 0.0
    in_transit: int = 0
    idle_until: float = 0.0  # found nothing to move: look again then (no busy loop)


class QueueMoveTasks:
    def __init__(self, queue_id: int, queue: str, arn: str) -> None:
        self._queue_id = queue_id
        self._queue = queue
        self._arn = arn
        self.history: list[MoveTaskChanged] = []  # newest last, at most SQS_MAX_MOVE_TASKS_LISTED
        self.running: RunningMoveTask | None = None

    def restore(self, records: list[MoveTaskChanged], now: float) -> None:
        self.history = list(records[-SQS_MAX_MOVE_TASKS_LISTED:])
        if self.history and self.history[-1].status in ACTIVE:
            self.running = RunningMoveTask(self.history[-1], refilled_at=now)

    def start(
        self, destination_arn: str, max_per_second: int | None, through_seq: int, to_move: int, now: float, wall_ms: int
    ) -> MoveTaskChanged:
        if self.running is not None:
            raise BrokerError("UnsupportedOperation", f"A message move task is already running on {self._queue}.")
        if max_per_second is not None and not 1 <= max_per_second <= SQS_MAX_MOVE_TASK_RATE_PER_S:
            raise invalid(
                f"Value {max_per_second} for parameter MaxNumberOfMessagesPerSecond is invalid. "
                f"Reason: 1 to {SQS_MAX_MOVE_TASK_RATE_PER_S}."
            )
        started_ms = max(wall_ms, self.history[-1].started_ms + 1) if self.history else wall_ms
        record = MoveTaskChanged(
            at_ms=wall_ms,
            queue_id=self._queue_id,
            queue=self._queue,
            started_ms=started_ms,
            status="RUNNING",
            through_seq=through_seq,
            destination_arn=destination_arn,
            max_per_second=max_per_second or 0,
            to_move=to_move,
            moved=0,
        )
        self._keep(record)
        self.running = RunningMoveTask(record, refilled_at=now)
        return record

    def cancel(self, started_ms: int, wall_ms: int) -> MoveTaskChanged:
        task = self.running
        if task is None or task.record.started_ms != started_ms or task.record.status != "RUNNING":
            raise BrokerError("ResourceNotFoundException", "The message move task does not exist or is not running.")
        return self._update(wall_ms, status="CANCELLING" if task.in_transit else "CANCELLED")

    def moving(self) -> RunningMoveTask | None:
        """The task that may hand messages over now, if one runs and has room for more in transit."""
        task = self.running
        if task is None or task.record.status != "RUNNING" or task.in_transit >= MAX_MOVES_IN_TRANSIT:
            return None
        return task

    def allowance(self, now: float) -> int:
        """How many messages the running task may start moving now."""
        task = self.moving()
        if task is None:
            return 0
        limit = min(MOVE_BATCH_MESSAGES, MAX_MOVES_IN_TRANSIT - task.in_transit)
        rate = task.record.max_per_second
        if rate:
            task.tokens = min(float(rate), task.tokens + (now - task.refilled_at) * rate)
            task.refilled_at = now
            limit = min(limit, int(task.tokens))
        return limit

    def took(self, count: int, now: float) -> None:
        """The running task handed `count` messages over (0: it found none to move)."""
        task = self.running
        assert task is not None
        if task.record.max_per_second:
            task.tokens -= count
        task.in_transit += count
        if not count:
            task.idle_until = now + IDLE_LOOK_AGAIN_S

    def progress(self, started_ms: int, moved: int, error: str, wall_ms: int) -> MoveTaskChanged | None:
        """The outcome of one hand-over of a task: the running task's new state to store."""
        task = self.running
        if task is None or task.record.started_ms != started_ms:
            return None
        task.in_transit = max(0, task.in_transit - moved)  # a restart in between forgot the count
        if error:
            return self._update(wall_ms, status="FAILED", failure_reason=error)
        return self._update(wall_ms, moved=task.record.moved + moved)

    def finished(self, first_seq: int | None, wall_ms: int) -> MoveTaskChanged | None:
        """The task's final state, once nothing it started is in transit and, when running,
        every message that was here when it started (the queue's first is `first_seq`) has left."""
        task = self.running
        if task is None or task.in_transit:
            return None
        if task.record.status == "CANCELLING":
            return self._update(wall_ms, status="CANCELLED")
        if task.record.status == "RUNNING" and (first_seq is None or first_seq > task.record.through_seq):
            return self._update(wall_ms, status="COMPLETED")
        return None

    def wake_at(self, now: float, first_seq: int | None, anything_ready: bool) -> float:
        """When the running task may next move something (math.inf: not before something changes)."""
        task = self.moving()
        if task is None or not anything_ready or first_seq is None or first_seq > task.record.through_seq:
            return math.inf
        rate = task.record.max_per_second
        tokens_at = task.refilled_at + (1 - task.tokens) / rate if rate and task.tokens < 1 else now
        return max(task.idle_until, tokens_at)

    def listed(self, max_results: int) -> list[MoveTask]:
        """ListMessageMoveTasks: the newest first."""
        if not 1 <= max_results <= SQS_MAX_MOVE_TASKS_LISTED:
            raise invalid(f"Value {max_results} for parameter MaxResults is invalid. Reason: 1 to {SQS_MAX_MOVE_TASKS_LISTED}.")
        return [self._described(record) for record in reversed(self.history)][:max_results]

    def _described(self, record: MoveTaskChanged) -> MoveTask:
        return MoveTask(
            task_handle=encode_task_handle(self._arn, record.started_ms),
            status=record.status,
            source_arn=self._arn,
            destination_arn=record.destination_arn,
            max_number_of_messages_per_second=record.max_per_second or None,
            approximate_number_of_messages_moved=record.moved,
            approximate_number_of_messages_to_move=record.to_move,
            failure_reason=record.failure_reason,
            started_timestamp=record.started_ms,
        )

    def _update(self, wall_ms: int, **changes: object) -> MoveTaskChanged:
        assert self.running is not None
        record = msgspec.structs.replace(self.running.record, at_ms=wall_ms, **changes)
        self._keep(record)
        if record.status in ACTIVE:
            self.running.record = record
        else:
            self.running = None
        return record

    def _keep(self, record: MoveTaskChanged) -> None:
        if self.history and self.history[-1].started_ms == record.started_ms:
            self.history[-1] = record
        else:
            self.history = [*self.history, record][-SQS_MAX_MOVE_TASKS_LISTED:]
