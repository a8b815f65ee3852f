"""Shared test helpers: an in-process broker on a chosen store, driven through Sessions."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest
import trio

from dovecote.actors.clock import Clock
from dovecote.actors.errors import BrokerError
from dovecote.actors.mailbox import ReplySlot
from dovecote.actors.ops import Failure, Op, Result
from dovecote.actors.broker import Broker
from dovecote.actors.config import BrokerConfig
from dovecote.actors.functions import FunctionSettings, InstanceRunner
from dovecote.actors.recovery import recover
from dovecote.actors.signing import Signer
from dovecote.net.http_push import Pusher
from dovecote.storage.memory_store import MemoryStore
from dovecote.storage.store import Store
from dovecote.storage.writer import LogWriter

START_WALL_MS = 1_700_000_000_000
DEADLOCK_S = 100_000


class Harness:
    def __init__(self, broker: Broker, store: Store, writer: LogWriter, clock: Clock) -> None:
        self.broker = broker
        self.store = store
        self.writer = writer
        self.clock = clock
        self.session = broker.session()

    async def call(self, op: Op) -> Result:
        """The raw result, Failure included."""
        slot: ReplySlot[Result] = ReplySlot()
        self.session.submit(op, slot)
        return await slot.wait()

    async def ok(self, op: Op) -> Result:
        """The result; raises BrokerError on a Failure."""
        result = await self.call(op)
        if isinstance(result, Failure):
            raise BrokerError(result.code, result.message)
        return result


@contextlib.asynccontextmanager
async def running_broker(
    store: Store | None = None,
    *,
    config: BrokerConfig | None = None,
    wall_source=None,
    start_wall_ms: int = START_WALL_MS,
    signer: Signer | None = None,
    pusher: Pusher | None = None,
    runner: InstanceRunner | None = None,
    functions_dir: str | None = None,
    function_settings: FunctionSettings = FunctionSettings(unpack_in_thread=False),
    **writer_options,
) -> AsyncIterator[Harness]:
    """pusher: how HTTP/S and email pushes go out (by default a real HTTP client, no mail relay).
    runner, functions_dir, function_settings: how Lambda functions run (none by default)."""
    store = store if store is not None else MemoryStore()
    config = config or BrokerConfig(restart_backoff_s=(0.0, 0.1))
    clock = Clock(wall_source=wall_source, start_wall_ms=start_wall_ms)
    pusher = pusher or Pusher()
    cores, _ = recover(store, config, clock, salvage=False, signer=signer, push_protocols=pusher.protocols)
    writer = LogWriter(store, wall_ms=clock.wall_ms, wall_steps_ms=clock.steps_ms, **writer_options)
    # On the autojump clock a deadlock jumps straight to this deadline: the test fails, saying where
    # it waited, instead of hanging the suite.
    with trio.fail_after(DEADLOCK_S):
        async with trio.open_nursery() as storage_nursery:
            await storage_nursery.start(writer.run)
            broker = Broker(store, writer, clock, config, cores, signer, pusher, runner, functions_dir, function_settings)
            async with trio.open_nursery() as broker_nursery:
                await broker_nursery.start(broker.run)
                try:
                    yield Harness(broker, store, writer, clock)
                finally:
                    broker.stop()
            writer.close()


@pytest.fixture
def memory_store() -> MemoryStore:
    return MemoryStore()


# The long tier (soaks, floods, hour-long fuzzing) is its own command, scripts/fault-matrix: its
# tests are marked `long` and deselected (not skipped) from the suite unless --long is given.
def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--long", action="store_true", help="also run the long fault tier (tests marked long)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--long"):
        return
    long_tier = [item for item in items if item.get_closest_marker("long") is not None]
    if long_tier:
        config.hook.pytest_deselected(items=long_tier)
        items[:] = [item for item in items if item.get_closest_marker("long") is None]
