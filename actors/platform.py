"""The platform actor: the one task that owns SNS's platform applications and endpoints. Sessions
route every platform operation to its mailbox; it asks its pure core (platform_core.py) what to
store and answer, stores that, applies it, then answers. Read by others only through
`unknown_endpoint`, a plain lookup that never waits (a Subscribe to an application endpoint asks it)."""

from __future__ import annotations

import logging
import uuid

import trio

from dovecote.storage.store import StorageError, Store
from dovecote.storage.writer import LogWriter

from .clock import Clock
from .config import BrokerConfig
from .errors import BrokerError, actor_failed, failure, not_an_operation, storage_failed
from .mailbox import Mailbox
from .messages import Request
from .mobile import is_endpoint_arn
from .ops import DeleteEndpoint, DeletePlatformApplication, PlatformOp
from .platform_core import PlatformCore

log = logging.getLogger("dovecote.platform")

_FREEING = (DeleteEndpoint, DeletePlatformApplication)  # deletions go through while storage is full


class Platform:
    def __init__(self, config: BrokerConfig, store: Store, writer: LogWriter, clock: Clock, push_protocols: frozenset[str]) -> None:
        """push_protocols: what the broker's sender delivers (application: it has a mobile sink)."""
        self._config = config
        self._has_sink = "application" in push_protocols
        self._writer = writer
        self._clock = clock
        self._core = PlatformCore.restore(config.account_id, *store.load_platform())
        self.mailbox = Mailbox(config.mailbox_capacity)

    def unknown_endpoint(self, arn: str) -> bool:
        """An application subscription's endpoint is a well-formed endpoint ARN naming none, as AWS
        refuses it. Without a sink, or with a malformed ARN, the topic words the refusal."""
        return self._has_sink and is_endpoint_arn(arn) and not self._core.has_endpoint(arn)

    async def run(self) -> None:
        """Serve until the mailbox is closed for mail (the broker stopping)."""
        while True:
            try:
                request = await self.mailbox.receive()
            except trio.EndOfChannel:
                return
            await self._serve(request)

    async def _serve(self, request: Request) -> None:
        op, reply = request.op, request.reply
        try:
            if not isinstance(op, PlatformOp):
                raise not_an_operation("platform", op)
            records, result = self._core.plan(op, request.region or self._config.region, self._clock.wall_ms(), str(uuid.uuid4()))
            if records:
                await self._writer.append(records, needs_space=not isinstance(op, _FREEING))
                for record in records:
                    self._core.apply(record)
            reply(result)
        except BrokerError as error:
            reply(failure(error))
        except StorageError as error:
            reply(failure(storage_failed(error)))
        except Exception:
            log.exception("the platform actor failed on %s", type(op).__name__)
            reply(failure(actor_failed("The platform applications' actor")))
