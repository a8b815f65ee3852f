"""Recovery: queues and topics rebuilt from the store's state tables, all of them before the broker
starts, and one at a time when its actor failed.

The state tables are a checkpoint that is always current, so recovery reads live state only: its
time grows with live messages, not with history. Damage found is refused with a message naming it,
unless salvage drops it (and says what it dropped).
"""

from __future__ import annotations

import logging

import msgspec

from dovecote.storage.store import Damage, LoadedQueue, StorageDamaged, Store

from . import validation
from .clock import Clock
from .config import BrokerConfig, queue_arn, topic_arn
from .queue_core import QueueCore
from .signing import Signer
from .topic_core import TopicCore, TopicOptions

log = logging.getLogger("dovecote.recovery")


class RecoveryReport(msgspec.Struct, frozen=True):
    queues: int
    messages: int
    dropped: list[str]  # descriptions of damaged values dropped by salvage


def topic_options(config: BrokerConfig, signer: Signer | None, push_protocols: frozenset[str]) -> TopicOptions:
    """What every topic of this broker is made with."""
    return TopicOptions(
        config.http_url, signer, config.sign_sqs_envelopes, push_protocols, config.sign_in_thread, config.authentication
    )


def recover(
    store: Store,
    config: BrokerConfig,
    clock: Clock,
    *,
    salvage: bool,
    log_tail_records: int = 10_000,
    signer: Signer | None = None,
    push_protocols: frozenset[str] = frozenset(),
) -> tuple[list[QueueCore | TopicCore], RecoveryReport]:
    """Rebuild every queue and topic from the store's state tables. Runs before the writer starts.
    Raises StorageDamaged naming what is damaged, unless salvage drops the damaged values."""
    damages: list[Damage] = list(store.verify_log_tail(log_tail_records))
    rows, row_damages = store.load_queue_rows()
    damages += row_damages
    loaded = []
    for row in rows:
        queue, queue_damages = store.load_queue(row, with_groups=validation.queue_config(row.attributes).fifo)
        damages += queue_damages
        loaded.append(queue)
    topics, topic_damages = store.load_topics()
    damages += topic_damages
    if damages:
        if not salvage:
            raise StorageDamaged(damages)
        store.drop_damaged(damages)
        for damage in damages:
            log.error("salvage dropped %s", damage.describe())
    now, wall_ms = clock.now(), clock.wall_ms()
    written_ms = last_written_ms(store, loaded)
    options = topic_options(config, signer, push_protocols)
    cores: list[QueueCore | TopicCore] = [
        QueueCore.restore(
            queue, queue_arn(config, queue.row.region, queue.row.queue), now=now, wall_ms=wall_ms,
            last_written_ms=written_ms, restored_lsn=store.last_lsn,
        )
        for queue in loaded
    ]
    cores += [
        TopicCore.restore(
            topic, topic_arn(config, topic.row.region, topic.row.topic), now=now, wall_ms=wall_ms,
            last_written_ms=written_ms, last_lsn=store.last_lsn, options=options,
        )
        for topic in topics
    ]
    store.release_mapped_pages()  # recovery read every live message once: not worth keeping mapped
    report = RecoveryReport(len(loaded), sum(len(q.messages) for q in loaded), [d.describe() for d in damages])
    return cores, report


def last_written_ms(store: Store, queues: list[LoadedQueue]) -> int:
    """The wall time of the broker's last write: its newest log record's, or (when history was
    trimmed to nothing) the newest stored message's or delivery's."""
    tail = store.read_log(max(0, store.last_lsn - 1), limit=1)
    if tail:
        return tail[0][1].at_ms
    return max(
        [max(queue.messages.sent_ms, default=0) for queue in queues]
        + [delivery.at_ms for queue in queues for delivery in queue.messages.deliveries.values()],
        default=0,
    )


def rebuild_queue(store: Store, core: QueueCore, clock: Clock) -> QueueCore | None:
    """The queue as the store has it now (None: it was deleted), with the failed core's counters."""
    rows, _ = store.load_queue_rows()
    row = next((r for r in rows if r.queue_id == core.queue_id), None)
    if row is None:
        return None
    loaded, damages = store.load_queue(row, with_groups=core.config.fifo)
    if damages:
        log.error("queue %s: %s", core.name, StorageDamaged(damages), extra={"queue": core.name})
    rebuilt = QueueCore.restore(
        loaded, core.arn, now=clock.now(), wall_ms=clock.wall_ms(), last_written_ms=last_written_ms(store, [loaded]),
        restored_lsn=store.last_lsn,
    )
    rebuilt.counters = core.counters
    return rebuilt


def rebuild_topic(store: Store, core: TopicCore, clock: Clock) -> TopicCore | None:
    """The topic as the store has it now (None: it was deleted), with the failed core's counters."""
    topics, damages = store.load_topics()
    if damages:
        log.error("topic %s: %s", core.name, StorageDamaged(damages), extra={"topic": core.name})
    loaded = next((t for t in topics if t.row.topic_id == core.topic_id), None)
    if loaded is None:
        return None
    rebuilt = TopicCore.restore(
        loaded, core.arn, now=clock.now(), wall_ms=clock.wall_ms(), last_written_ms=last_written_ms(store, []),
        last_lsn=store.last_lsn, options=core.options,
    )
    rebuilt.counters = core.counters
    return rebuilt
