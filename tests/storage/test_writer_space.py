"""The writer when storage is full: it owns why (disk or map), refuses sends, lets the rest through,
logs one line when it starts and one when it ends, and resumes only once a margin is free
(memory store, autojump clock)."""

import logging

import pytest
import trio

from dovecote.storage.memory_store import MemoryStore
from dovecote.storage.records import MessageDeleted, MessageSent, QueueCreated
from dovecote.storage.store import MapFull, StorageFull
from dovecote.storage.writer import FULL_DISK, FULL_MAP, LogWriter, SendsRefused

WALL = 1_700_000_000_000
BODY = "x" * 500


def sent(seq):
    return MessageSent(WALL, 1, "q", seq, 0, f"id-{seq}", "s", BODY, {})


def deleted(seq):
    return MessageDeleted(WALL, 1, "q", seq, f"id-{seq}", "deleted")


class MapLimitedStore(MemoryStore):
    """A memory store whose limit is the map's, not the disk's: past it a commit raises MapFull and
    the map cannot grow; giving up the reserve (disk) makes no room in it."""

    def _apply(self, log_puts, changes):
        try:
            super()._apply(log_puts, changes)
        except StorageFull as exc:
            raise MapFull(str(exc)) from None

    def restore_reserve(self) -> bool:
        return True  # the disk has room: only the map is full


def storage_lines(caplog):
    return [r.getMessage() for r in caplog.records if r.name == "dovecote.storage"]


async def fill(writer):
    """Send until refused; the seqs (= LSNs) acknowledged."""
    acknowledged = []
    seq = 0
    while True:
        seq += 1
        try:
            acknowledged.append(await writer.append([sent(seq)], needs_space=True))
        except StorageFull:
            return acknowledged


async def test_at_the_map_limit_sends_stay_refused_until_the_margin_is_free(autojump_clock, caplog):
    """Before: the writer gave up the reserve for a full map, took it back 2 s later (the disk had
    room) and accepted sends again, to refuse them at the next one: accepting, refusing, every 2 s."""
    caplog.set_level(logging.WARNING, "dovecote.storage")
    store = MapLimitedStore(space_bytes=40_000, reserve_bytes=0)
    writer = LogWriter(store, wall_ms=lambda: WALL, space_check_interval_s=2.0, resume_free_bytes=8_000)
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        await writer.append([QueueCreated(WALL, 1, "q", {})])
        acknowledged = await fill(writer)
        assert len(acknowledged) > 20
        assert writer.statistics().storage_full == FULL_MAP
        # a client retrying its send every 100 ms for 30 s; a delete now and then frees less than the margin
        for attempt in range(300):
            with pytest.raises(SendsRefused):
                await writer.append([sent(10_000 + attempt)], needs_space=True)
            if attempt % 100 == 0:
                await writer.append([deleted(acknowledged.pop())])
            assert not writer.statistics().accepting_sends, f"accepting sends again after {attempt / 10} s"
            await trio.sleep(0.1)
        assert len(storage_lines(caplog)) == 1 and "max_data_bytes" in storage_lines(caplog)[0]
        while store.room_bytes() < 8_000:  # consumers drain
            await writer.append([deleted(acknowledged.pop())])
        await trio.sleep(2.1)  # one space check later
        assert writer.statistics().accepting_sends
        await writer.append([sent(20_000)], needs_space=True)
        writer.close()
    lines = storage_lines(caplog)
    assert len(lines) == 2 and "room again" in lines[1]


async def test_a_batch_that_meets_a_full_map_commits_its_deletes(autojump_clock):
    """The sends of the batch that found the map full are refused; its deletes are retried and stored."""
    store = MapLimitedStore(reserve_bytes=0)
    writer = LogWriter(store, wall_ms=lambda: WALL)
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        await writer.append([QueueCreated(WALL, 1, "q", {})])
        acknowledged = [await writer.append([sent(seq)], needs_space=True) for seq in (1, 2)]
        store.space_bytes = store.used_bytes()  # the map is exactly full
        send = writer.submit([sent(1000)], needs_space=True)
        delete = writer.submit([deleted(acknowledged[0])], needs_space=False)  # the same batch
        with pytest.raises(SendsRefused):
            await send.wait()
        await delete.wait()
        assert writer.statistics().storage_full == FULL_MAP
        writer.close()
    assert store.read_messages(1, [acknowledged[0], acknowledged[1]])[0] is None
    assert store.read_messages(1, [acknowledged[1]])[0].body == BODY


async def test_a_full_disk_gives_up_the_reserve_and_resumes_once_the_margin_is_free(autojump_clock, caplog):
    caplog.set_level(logging.WARNING, "dovecote.storage")
    store = MemoryStore(space_bytes=30_000, reserve_bytes=5_000)
    writer = LogWriter(store, wall_ms=lambda: WALL, space_check_interval_s=2.0, resume_free_bytes=5_000)
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        await writer.append([QueueCreated(WALL, 1, "q", {})])
        acknowledged = await fill(writer)
        assert writer.statistics().storage_full == FULL_DISK
        for seq in acknowledged[:4]:  # into the reserve
            await writer.append([deleted(seq)])
        await trio.sleep(10)
        assert writer.statistics().storage_full == FULL_DISK  # the reserve is back, the margin is not free
        store.space_bytes += 20_000  # another file on the disk deleted
        await trio.sleep(2.1)  # one space check later
        assert writer.statistics().accepting_sends
        await writer.append([sent(20_000)], needs_space=True)
        writer.close()
    lines = storage_lines(caplog)
    assert len(lines) == 2 and "simulated disk is full" in lines[0] and "room again" in lines[1]
