"""The platform actor: the one task that owns SNS's platform applications and endpoints. Sessions
route every platform operation to its mailbox; it asks its pure core (platform_core.py) what to
store and answer, stores that, applies it, then answers. Read by others only through
`unknown_endpoint`, a plain lookup that never waits (a Subscribe to an application endpoint asks it).

A publish straight to an endpoint or a phone number (and the one-time password of the SMS
sandbox) is stored as a pending push (PushQueued), then handed to that endpoint's or number's
delivery actor (delivery.py, the one that serves subscriptions' pushes), which this actor starts in
its nursery (at start-up, for the endpoints and numbers that have publishes pending), stops when
the endpoint is deleted, and which ends by itself once it has nothing pending: a broker texting
many numbers keeps actors only for those with SMS on their way.

It supervises itself as the queues' and topics' supervisor does (supervisor.py's `Restarts`): a
failure in it or in one of its delivery actors is logged, and after a pause it is rebuilt from the
store and serves on; after too many failures in a row it answers every request with a clear,
retryable error until the broker restarts."""

from __future__ import annotations

import logging
import secrets
import uuid
from collections.abc import Sequence
from typing import NamedTuple

import trio

from dovecote.storage.records import PlatformEndpointDeleted, PushQueued, Record
from dovecote.storage.store import PendingPush, StorageError, Store
from dovecote.storage.writer import LogWriter

from .clock import Clock
from .config import BrokerConfig
from .delivery import DeliveryActor
from .directory import Health
from .errors import BrokerError, actor_failed, actor_stopped, failure, not_an_operation, storage_failed
from .mailbox import Mailbox
from .messages import Forward, NewPushes, Request, StopPushing
from .ops import DeleteEndpoint, DeletePlatformApplication, DeleteSMSSandboxPhoneNumber, PlatformOp
from .platform_core import SANDBOX_PASSWORD_DIGITS, PlatformCore
from .push_types import Sender
from .supervisor import Restarts

log = logging.getLogger("dovecote.platform")


class PlatformStatistics(NamedTuple):
    applications: int
    endpoints: int
    sandbox_numbers: int
    delivery_actors: int  # one per endpoint or phone number with publishes pending
    pending_pushes: int
    deliveries: tuple[tuple[str, str, int], ...]  # (protocol, outcome, count), since the broker started


_FREEING = (DeleteEndpoint, DeletePlatformApplication, DeleteSMSSandboxPhoneNumber)  # deletions go through while storage is full


class Platform:
    def __init__(
        self, config: BrokerConfig, store: Store, writer: LogWriter, clock: Clock, sender: Sender | None, forward: Forward
    ) -> None:
        """sender: how publishes reach the operator's sink (None: the broker has none, and refuses
        them). forward: to a queue's actor (delivery actors take it; a publish to an endpoint has no
        dead-letter queue)."""
        self._config = config
        self._store = store
        self._writer = writer
        self._clock = clock
        self._sender = sender
        self._forward = forward
        self._pushers: dict[int, DeliveryActor] = {}  # by endpoint id
        # Outcome counts of delivery actors that have ended (stopped, or lost in a restart), by
        # (protocol, outcome): those running count their own.
        self._ended_outcomes: dict[tuple[str, str], int] = {}
        self._stopping: list[DeliveryActor] = []  # told to stop; counted above once ended
        self._restore()
        self._nursery: trio.Nursery | None = None  # the delivery actors'
        self.mailbox = Mailbox(config.mailbox_capacity)
        self.health = Health()

    def _restore(self) -> None:
        """The applications, endpoints and pending publishes, as stored."""
        loaded = self._store.load_platform()
        protocols = self._sender.protocols if self._sender is not None else frozenset()
        self._core = PlatformCore.restore(self._config.account_id, protocols, loaded)
        self._restored: dict[int, list[PendingPush]] = {}  # by endpoint id: pending publishes, for its delivery actor
        for push in loaded.pushes:
            self._restored.setdefault(push.subscription_id, []).append(push)
        self._stopping += self._pushers.values()  # they ended with the nursery of the failed run
        self._pushers = {}
        self._retire_finished()

    def unknown_endpoint(self, arn: str) -> bool:
        return self._core.unknown_endpoint(arn)

    def statistics(self) -> PlatformStatistics:
        """A snapshot, read without waiting from any task."""
        deliveries = dict(self._ended_outcomes)
        for pusher in [*self._pushers.values(), *self._stopping]:
            for outcome, count in pusher.outcomes.items():
                deliveries[(pusher.protocol, outcome)] = deliveries.get((pusher.protocol, outcome), 0) + count
        core = self._core
        return PlatformStatistics(
            len(core.applications), len(core.endpoints), len(core.sandbox),
            sum(not pusher.finished for pusher in self._pushers.values()), sum(pusher.pending() for pusher in self._pushers.values()),
            tuple((protocol, outcome, count) for (protocol, outcome), count in sorted(deliveries.items())),
        )

    def _retire_finished(self) -> None:
        """Add the outcomes of the delivery actors that have ended (stopped, or idle) to the counts
        kept, and forget them."""
        for endpoint_id in [endpoint_id for endpoint_id, pusher in self._pushers.items() if pusher.finished]:
            self._stopping.append(self._pushers.pop(endpoint_id))
        for pusher in [pusher for pusher in self._stopping if pusher.finished]:
            self._stopping.remove(pusher)
            for outcome, count in pusher.outcomes.items():
                self._ended_outcomes[(pusher.protocol, outcome)] = self._ended_outcomes.get((pusher.protocol, outcome), 0) + count

    async def run(self) -> None:
        """Serve until the mailbox is closed for mail (the broker stopping), rebuilt from the store
        after each failure."""
        restarts = Restarts(self._config, self.health, self._store, "the platform actor", {})
        while True:
            try:
                await self._serve_until_stopped()
                return
            except Exception as exc:  # noqa: BLE001 - supervision boundary
                pause = restarts.failed(exc)
                if pause is None:
                    await self._refuse_all(restarts.failures)
                    return
                await trio.sleep(pause)
                self._restore()

    async def _refuse_all(self, failures: int) -> None:
        refusal = failure(actor_stopped("The platform applications' actor", failures, deletable=False))
        while True:
            try:
                request = await self.mailbox.receive()
            except trio.EndOfChannel:
                return
            request.reply(refusal)

    async def _serve_until_stopped(self) -> None:
        """Serve until the mailbox is closed for mail; then stop the delivery actors, which store
        the outcomes they have first."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for endpoint_id in list(self._restored):
                self._pusher(endpoint_id)
            while True:
                try:
                    request = await self.mailbox.receive()
                except trio.EndOfChannel:
                    break
                await self._serve(request)
            for pusher in self._pushers.values():
                pusher.post(StopPushing(flush=True))

    async def _serve(self, request: Request) -> None:
        op, reply = request.op, request.reply
        try:
            if not isinstance(op, PlatformOp):
                raise not_an_operation("platform", op)
            password = f"{secrets.randbelow(10**SANDBOX_PASSWORD_DIGITS):0{SANDBOX_PASSWORD_DIGITS}d}"
            records, result = self._core.plan(
                op, request.region or self._config.region, self._clock.wall_ms(), str(uuid.uuid4()), password
            )
            if records:
                entry = self._writer.submit(records, needs_space=not isinstance(op, _FREEING))
                await entry.wait()
                for record in entry.records:  # as stored: a PushQueued's seq is stamped
                    self._core.apply(record)
                self._deliver(entry.records)
            reply(result)
        except BrokerError as error:
            reply(failure(error))
        except StorageError as error:
            reply(failure(storage_failed(error)))
        except trio.Cancelled:  # a delivery actor failed (this actor restarts) or the broker stops
            reply(failure(actor_failed("The platform applications' actor")))
            raise
        except Exception:
            log.exception("the platform actor failed on %s", type(op).__name__)
            reply(failure(actor_failed("The platform applications' actor")))

    def _deliver(self, records: Sequence[Record]) -> None:
        """A stored publish to its endpoint's delivery actor; a deleted endpoint's actor stopped.
        records: as stored (the commit may hold others' records too, so only a record's own seq
        names it)."""
        for record in records:
            match record:
                case PushQueued(subscription_id=endpoint_id, seq=seq, message_id=message_id):
                    pusher = self._pusher(endpoint_id)
                    if pusher is not None:
                        pusher.post(NewPushes([(seq, message_id)]))
                case PlatformEndpointDeleted(endpoint_id=endpoint_id) if endpoint_id in self._pushers:
                    stopped = self._pushers.pop(endpoint_id)
                    stopped.post(StopPushing())  # ignored by one that ended, idle
                    self._stopping.append(stopped)
                    self._retire_finished()

    def _pusher(self, endpoint_id: int) -> DeliveryActor | None:
        """The endpoint's (or phone number's) delivery actor, started if it was not (None: no sender
        or no such endpoint)."""
        running = self._pushers.get(endpoint_id)
        if running is not None and not running.finished:
            return running
        self._retire_finished()
        target = self._core.delivery_target(endpoint_id)
        pending = self._restored.pop(endpoint_id, [])
        if self._sender is None or self._nursery is None or target is None:
            return None
        pusher = DeliveryActor(
            target, pending, self._sender, self._writer, self._store, self._clock, self._forward,
            max_pending=self._config.max_pending_pushes, stop_when_idle=True,
        )
        self._pushers[endpoint_id] = pusher
        self._nursery.start_soon(pusher.run, name=f"push:{target.endpoint}")
        return pusher
