"""GET /metrics: the broker in Prometheus's text format (0.0.4), by a small renderer of its own.

Theory of operation
-------------------
A scrape reads what each part of the broker keeps about itself: the writer's statistics (commits,
the commit-latency and records-per-commit histograms, fsyncs, bytes written), each queue's and
topic's actor report (its mailbox, its supervisor's record, and its own counts and counters, all
O(1) to read), the data directory (one stat per file and one statvfs), the process (/proc/self)
and the audit's counts of refused requests (audit.py: at most 64 series a family). Nothing waits
for an actor: each report is a snapshot its owner keeps current, and nothing is kept between
scrapes: counters live in their owners and count from the broker's start (a queue or topic rebuilt
after a failure keeps its counters).

Cardinality is bounded: the first `max_queues` queues (the oldest: the directory keeps them in
the order they were made) get series of their own, labelled `region` and `queue`; the rest are
added up into series labelled `queue="(other)"`, which no queue can be called (SQS names allow
letters, digits, `-` and `_`), and `dovecote_metrics_folded_queues` says how many that is. Topics
likewise with `max_topics`. A queue has 19 series, so a scrape is about 19 x max_queues lines long
at most, whatever the number of queues. Reading ten thousand queues' reports takes tens of
milliseconds, so they are read 500 at a time with a checkpoint between (Broker.gather_statistics);
rendering follows in one go (scripts/bench/metrics.py measures both).

Every family has its HELP and TYPE lines; samples of a family are written together, as the format
requires. Label values are escaped as it says (backslash, double quote, newline).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence

from dovecote.actors.broker import ActorReport
from dovecote.actors.queue import QueueStatistics
from dovecote.actors.shovel_core import ShovelStatistics
from dovecote.actors.topic import TopicStatistics
from dovecote.storage.writer import FULL_DISK, FULL_MAP, HistogramSnapshot, WriterStatistics

from .audit import AuditStatistics

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OTHER = "(other)"  # the label value of the series that add up the queues (topics) beyond the cap
LMDB_DATA_FILE = os.path.join("lmdb", "data.mdb")  # under the data directory (storage/lmdb_store.py)


def _number(value: float) -> str:
    if type(value) is int:
        return str(value)
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def escape(value: str) -> str:
    """A label value as the text format writes it."""
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


class Exposition:
    """The lines of one scrape: `family` writes a metric's HELP and TYPE, then its samples."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str, samples: Iterable[tuple[str, float]]) -> None:
        """samples: (labels, value); labels "" or '{name="value",...}'."""
        lines = self.lines
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        lines.extend([f"{name}{labels} {_number(value)}" for labels, value in samples])

    def single(self, name: str, kind: str, help_text: str, value: float) -> None:
        self.family(name, kind, help_text, [("", value)])

    def histogram(self, name: str, help_text: str, histogram: HistogramSnapshot) -> None:
        lines = self.lines
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} histogram")
        cumulative = 0
        for bound, count in zip((*histogram.bounds, float("inf")), histogram.counts):
            cumulative += count
            lines.append(f'{name}_bucket{{le="{_number(float(bound))}"}} {cumulative}')
        lines.append(f"{name}_sum {_number(histogram.sum)}")
        lines.append(f"{name}_count {cumulative}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


# --- queues and topics ---------------------------------------------------------------------------

# A queue's or topic's row: the mailbox's and supervisor's figures, then its actor's statistics
# (absent while the actor restarts or is stopped).
_MAILBOX_FIELDS = ("mailbox_requests", "mailbox_carried", "restarts", "stopped")


def _row(report: ActorReport) -> tuple:
    mailbox, health = report.mailbox, report.health
    return (mailbox.requests, mailbox.carried, health.restarts, int(health.stopped))


class _Family:
    """One per-queue or per-topic metric: its name, type, help, and where its values are."""

    __slots__ = ("name", "kind", "help", "values", "fold")

    def __init__(self, name: str, kind: str, help_text: str, values: Sequence[tuple[str, str]], fold: Callable = sum):
        """values: (extra labels, field of the row); fold: how the queues beyond the cap add up."""
        self.name, self.kind, self.help, self.values, self.fold = name, kind, help_text, values, fold


def _one(field: str) -> list[tuple[str, str]]:
    return [("", field)]


QUEUE_FAMILIES = (
    _Family("dovecote_queue_messages", "gauge",
            "Messages in the queue by state, as of its last step: visible, in_flight (received, not visible again yet), "
            "delayed; one being moved to another queue counts as in_flight if it was received, else as delayed.",
            [(',state="visible"', "visible_messages"), (',state="in_flight"', "in_flight_messages"),
             (',state="delayed"', "delayed_messages")]),
    _Family("dovecote_queue_oldest_message_age_seconds", "gauge",
            "Seconds since the oldest message in the queue arrived in it (0: empty); the folded series gives the largest.",
            _one("oldest_message_age_s"), max),
    _Family("dovecote_queue_messages_sent_total", "counter",
            "Messages stored by SendMessage(Batch) (FIFO duplicates not) or delivered by a topic.", _one("sent")),
    _Family("dovecote_queue_messages_moved_in_total", "counter",
            "Messages stored in the queue by a move from another queue (dead letters, move tasks) or a push's dead letter.",
            _one("moved_in")),
    _Family("dovecote_queue_messages_received_total", "counter",
            "Messages handed to receives (each message each time it is received).", _one("received")),
    _Family("dovecote_queue_messages_deleted_total", "counter", "Messages deleted by their receipt handle.", _one("deleted")),
    _Family("dovecote_queue_messages_expired_total", "counter", "Messages removed past the queue's retention period.",
            _one("expired")),
    _Family("dovecote_queue_messages_purged_total", "counter", "Messages removed by PurgeQueue.", _one("purged")),
    _Family("dovecote_queue_messages_dead_lettered_total", "counter",
            "Messages moved to the queue's dead-letter queue after maxReceiveCount receives.", _one("dead_lettered")),
    _Family("dovecote_queue_messages_moved_out_total", "counter",
            "Messages moved to another queue by a message move task.", _one("moved_out")),
    _Family("dovecote_queue_long_polls_waiting", "gauge", "Receives waiting for messages.", _one("waiters")),
    _Family("dovecote_queue_cycles_total", "counter", "Steps of the queue's actor (each handles all it was sent meanwhile).",
            _one("cycles")),
    _Family("dovecote_queue_cycles_waiting_for_disk", "gauge", "Steps of the queue's actor waiting for their commit.",
            _one("cycles_in_flight")),
    _Family("dovecote_queue_mailbox_requests", "gauge", "Clients' requests waiting in the queue's mailbox.",
            _one("mailbox_requests")),
    _Family("dovecote_queue_mailbox_carried_messages", "gauge",
            "Messages carried by other actors' mail, and answers owed, waiting in the queue's mailbox.", _one("mailbox_carried")),
    _Family("dovecote_queue_restarts_total", "counter", "Times the queue's actor failed and was rebuilt from the store.",
            _one("restarts")),
    _Family("dovecote_queue_stopped", "gauge", "1 if the queue's actor failed too often in a row and is stopped.",
            _one("stopped")),
)

TOPIC_FAMILIES = (
    _Family("dovecote_topic_publishes_total", "counter", "Publishes stored (FIFO duplicates not).", _one("publishes")),
    _Family("dovecote_topic_pushes_pending", "gauge", "HTTP/S and email pushes waiting to be delivered (in flight included).",
            _one("pending_pushes")),
    _Family("dovecote_topic_subscriptions", "gauge", "Subscriptions, confirmed or pending.", _one("subscriptions")),
    _Family("dovecote_topic_delivery_actors", "gauge", "Delivery actors running, one per confirmed HTTP/S or email subscription.",
            _one("delivery_actors")),
    _Family("dovecote_topic_cycles_total", "counter", "Steps of the topic's actor.", _one("cycles")),
    _Family("dovecote_topic_mailbox_requests", "gauge", "Clients' requests waiting in the topic's mailbox.",
            _one("mailbox_requests")),
    _Family("dovecote_topic_mailbox_carried_messages", "gauge", "Answers owed, waiting in the topic's mailbox.",
            _one("mailbox_carried")),
    _Family("dovecote_topic_restarts_total", "counter", "Times the topic's actor failed and was rebuilt from the store.",
            _one("restarts")),
    _Family("dovecote_topic_stopped", "gauge", "1 if the topic's actor failed too often in a row and is stopped.",
            _one("stopped")),
)
DELIVERIES = "dovecote_topic_deliveries_total"
DELIVERIES_HELP = (
    "Deliveries by protocol (sqs, http, https, email, email-json, sms, application) and outcome: delivered, dead_lettered or dropped "
    "(given up, its queue missing, or past the subscription's pending cap) end a delivery; retried counts each failed "
    "attempt that is tried again."
)


def _index(fields: Sequence[str]) -> dict[str, int]:
    return {name: i for i, name in enumerate(fields)}


_QUEUE_INDEX = _index((*_MAILBOX_FIELDS, *QueueStatistics._fields))
_TOPIC_INDEX = _index((*_MAILBOX_FIELDS, *TopicStatistics._fields))


def _labelled(
    out: Exposition, families: Sequence[_Family], index: dict[str, int], label: str,
    reports: list[ActorReport], cap: int,
) -> list[ActorReport]:
    """The series of each report up to the cap, labelled region and `label`, and one series per
    metric adding up the rest. Returns the reports given series of their own."""
    own, rest = reports[:cap], reports[cap:]
    width = len(index)
    # Reports of actors that are restarting or stopped have their mailbox's and supervisor's figures only.
    labelled = [
        (f'{{region="{escape(r.region)}",{label}="{escape(r.name)}"', _row(r) + (tuple(r.actor) if r.actor is not None else ()))
        for r in own
    ]
    # The rest, column by column (zip does the transposing in C): the mailboxes' and supervisors'
    # figures of all, the actors' of those running.
    columns: list[Sequence[float]] = []
    if rest:
        requests, carried, _ = zip(*[r.mailbox for r in rest])
        columns = [requests, carried, [r.health.restarts for r in rest], [int(r.health.stopped) for r in rest]]
        columns += zip(*[r.actor for r in rest if r.actor is not None])
        columns += [()] * (width - len(columns))  # no running actor among the rest: nothing to add up
    other = f'{{{label}="{OTHER}"'
    lines = out.lines
    for family in families:
        name = family.name
        lines.append(f"# HELP {name} {family.help}")
        lines.append(f"# TYPE {name} {family.kind}")
        for extra, field in family.values:
            i = index[field]
            lines.extend([f"{name}{prefix}{extra}}} {row[i]}" for prefix, row in labelled if i < len(row)])
            if rest:
                lines.append(f"{name}{other}{extra}}} {family.fold(columns[i] or (0,))}")
    return own


def _deliveries(out: Exposition, own: list[ActorReport], rest: list[ActorReport]) -> None:
    samples: list[tuple[str, float]] = []
    for report in own:
        if report.actor is None:
            continue
        prefix = f'{{region="{escape(report.region)}",topic="{escape(report.name)}"'
        samples += [
            (f'{prefix},protocol="{protocol}",outcome="{outcome}"}}', count)
            for protocol, outcome, count in report.actor.deliveries
        ]
    folded: dict[tuple[str, str], int] = {}
    for report in rest:
        if report.actor is not None:
            for protocol, outcome, count in report.actor.deliveries:
                folded[(protocol, outcome)] = folded.get((protocol, outcome), 0) + count
    samples += [
        (f'{{topic="{OTHER}",protocol="{protocol}",outcome="{outcome}"}}', count)
        for (protocol, outcome), count in sorted(folded.items())
    ]
    out.family(DELIVERIES, "counter", DELIVERIES_HELP, samples)


def actors(out: Exposition, reports: Sequence[ActorReport], max_queues: int, max_topics: int) -> None:
    queues = [r for r in reports if r.kind == "queue"]
    topics = [r for r in reports if r.kind == "topic"]
    out.single("dovecote_queues", "gauge", "Queues.", len(queues))
    out.single("dovecote_topics", "gauge", "Topics.", len(topics))
    out.single("dovecote_metrics_folded_queues", "gauge",
               'Queues beyond --metrics-max-queues, added up in the series labelled queue="(other)".',
               max(0, len(queues) - max_queues))
    out.single("dovecote_metrics_folded_topics", "gauge",
               'Topics beyond --metrics-max-topics, added up in the series labelled topic="(other)".',
               max(0, len(topics) - max_topics))
    _labelled(out, QUEUE_FAMILIES, _QUEUE_INDEX, "queue", queues, max_queues)
    own = _labelled(out, TOPIC_FAMILIES, _TOPIC_INDEX, "topic", topics, max_topics)
    _deliveries(out, own, topics[len(own):])


def functions(out: Exposition, reports: Sequence[ActorReport]) -> None:
    """Each Lambda function's actor (labels region, function); nothing when there is none."""
    own = [r for r in reports if r.kind == "function" and r.actor is not None]
    if not own:
        return
    labelled = [(f'{{region="{escape(r.region)}",function="{escape(r.name)}"}}', r.actor) for r in own]
    for name, kind, help_text, field in (
        ("dovecote_function_instances", "gauge", "The function's processes, running or starting.", "instances"),
        ("dovecote_function_instances_busy", "gauge", "Of them, those running an invocation.", "busy"),
        ("dovecote_function_invocations_waiting", "gauge", "Invocations waiting for an instance.", "waiting"),
        ("dovecote_function_invocations_total", "counter", "Invocations answered.", "invocations"),
        ("dovecote_function_errors_total", "counter", "Of them, answered with X-Amz-Function-Error.", "errors"),
        ("dovecote_function_timeouts_total", "counter", "Of them, cut short by the function's Timeout.", "timeouts"),
        ("dovecote_function_start_failures_total", "counter", "Instances that failed before they asked for work.", "start_failures"),
    ):
        out.family(name, kind, help_text, [(labels, getattr(actor, field)) for labels, actor in labelled])


def shovels(out: Exposition, stats: Sequence[ShovelStatistics], reports: Sequence[ActorReport], region: str, now_ms: int) -> None:
    """Each shovel's link. An up shovel's backlog is its local queue's messages (all states), and the
    oldest unsent message's age that queue's oldest; a down shovel's backlog is in the remote's queue,
    which reports it there: here, only what it holds in hand."""
    queues = {r.name: r.actor for r in reports if r.kind == "queue" and r.region == region and r.actor is not None}
    link, forwarded, rejected, failures, in_hand, backlog, oldest, last_error = [], [], [], [], [], [], [], []
    for shovel in stats:
        labels = f'{{shovel="{escape(shovel.name)}",direction="{shovel.direction}"}}'
        link.append((labels, int(shovel.link_up)))
        forwarded.append((labels, shovel.forwarded))
        rejected.append((labels, shovel.rejected))
        failures.append((labels, shovel.failures))
        in_hand.append((labels, shovel.in_hand))
        last_error.append((labels, shovel.last_error_ms / 1000))
        local = queues.get(shovel.source) if shovel.direction == "up" else None
        if local is not None:
            backlog.append((labels, local.visible_messages + local.in_flight_messages + local.delayed_messages))
            oldest.append((labels, local.oldest_message_age_s))
        elif shovel.oldest_in_hand_ms:
            oldest.append((labels, max(0.0, (now_ms - shovel.oldest_in_hand_ms) / 1000)))
    out.family("dovecote_shovel_link_up", "gauge", "1 if the shovel's remote answered its last request.", link)
    out.family("dovecote_shovel_messages_forwarded_total", "counter", "Messages the other side confirmed.", forwarded)
    out.family("dovecote_shovel_messages_rejected_total", "counter",
               "Messages the remote refused for good, let go to the local queue's redrive policy.", rejected)
    out.family("dovecote_shovel_failures_total", "counter", "Requests to the remote or the local queue that failed.", failures)
    out.family("dovecote_shovel_messages_in_hand", "gauge", "Messages received and not yet confirmed by the other side.", in_hand)
    out.family("dovecote_shovel_backlog_messages", "gauge", "An up shovel's local queue: messages not yet forwarded.", backlog)
    out.family("dovecote_shovel_oldest_unsent_age_seconds", "gauge",
               "Seconds since the oldest message not yet forwarded arrived (up: in the local queue; down: in hand).", oldest)
    out.family("dovecote_shovel_last_error_timestamp_seconds", "gauge",
               "When the shovel last failed (0: never); /actors gives the error.", last_error)


# --- the log, the disk, the process --------------------------------------------------------------


def writer(out: Exposition, stats: WriterStatistics) -> None:
    out.single("dovecote_log_last_lsn", "gauge", "The log's last sequence number.", stats.last_lsn)
    out.single("dovecote_log_commits_total", "counter", "Group commits of records to the log.", stats.commits)
    out.single("dovecote_log_records_total", "counter", "Records committed to the log.", stats.records)
    out.single("dovecote_log_trimmed_records_total", "counter", "Log records trimmed past the history window.", stats.trimmed)
    out.single("dovecote_log_fsyncs_total", "counter",
               "Write transactions (commits and trims) made durable: in sync mode full LMDB fdatasyncs the data file and "
               "writes the meta page with O_DSYNC in each; 0 in sync mode os.", stats.fsyncs)
    out.single("dovecote_log_written_bytes_total", "counter",
               "Bytes of log records appended (framed, with their keys); the state tables' copies are not counted.",
               stats.written_bytes)
    out.histogram("dovecote_log_commit_duration_seconds",
                  "Seconds from handing a group commit to the store to its commit returning (fsync included).",
                  stats.commit_seconds)
    out.histogram("dovecote_log_commit_records", "Records per group commit.", stats.commit_records)
    out.single("dovecote_accepting_sends", "gauge", "1 while the disk has room for sends; 0 while they are refused.",
               int(stats.accepting_sends))
    out.family("dovecote_storage_full", "gauge",
               "1 while sends are refused because storage is full: the disk, or the map at max_data_bytes.",
               [(f'{{cause="{cause}"}}', int(stats.storage_full == cause)) for cause in (FULL_DISK, FULL_MAP)])


def data_directory(out: Exposition, data_dir: str) -> None:
    """Read now: one stat per file under the data directory (a handful) and one statvfs."""
    used = 0
    data_file = 0
    for folder, _, files in os.walk(data_dir):
        for name in files:
            path = os.path.join(folder, name)
            try:
                stat = os.stat(path)
            except OSError:
                continue  # gone meanwhile
            used += stat.st_blocks * 512
            if path == os.path.join(data_dir, LMDB_DATA_FILE):
                data_file = stat.st_size
    disk = os.statvfs(data_dir)
    out.single("dovecote_data_dir_bytes", "gauge",
               "Disk space the data directory's files take (the LMDB store, the disk-full reserve, keys).", used)
    out.single("dovecote_store_file_bytes", "gauge", "Size of the LMDB data file: it grows as the store needs pages.",
               data_file)
    out.single("dovecote_data_dir_disk_free_bytes", "gauge",
               "Free space, for unprivileged users, on the data directory's file system.", disk.f_bavail * disk.f_frsize)
    out.single("dovecote_data_dir_disk_size_bytes", "gauge", "Size of the data directory's file system.",
               disk.f_blocks * disk.f_frsize)


def audit_trail(out: Exposition, stats: AuditStatistics) -> None:
    out.family(
        "dovecote_auth_failures_total", "counter",
        "Requests refused because they proved no configured key, by door (aws: the AWS API, endpoints: the broker's "
        "own HTTP endpoints, native: the native protocol) and reason (AWS's error code: MissingAuthenticationToken, "
        "IncompleteSignature, InvalidClientTokenId, SignatureDoesNotMatch, RequestExpired).",
        [(f'{{door="{escape(door)}",reason="{escape(reason)}"}}', count) for door, reason, count in stats.authentication_failures],
    )
    out.family(
        "dovecote_access_denied_total", "counter",
        "Requests refused for what they asked (AccessDenied, AuthorizationError), by door and action.",
        [(f'{{door="{escape(door)}",action="{escape(action)}"}}', count) for door, action, count in stats.access_denied],
    )


class ProcessReader:
    """Prometheus's standard process metrics, read from /proc/self at each scrape (Linux; elsewhere
    only the CPU time)."""

    def __init__(self, proc: str = "/proc") -> None:
        self._proc = proc
        self._start_time_s: float | None = None  # read once: it does not change

    def write(self, out: Exposition) -> None:
        times = os.times()
        out.single("process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.",
                   times.user + times.system)
        try:
            with open(f"{self._proc}/self/stat", "rb") as file:
                fields = file.read().rpartition(b")")[2].split()
            open_fds = len(os.listdir(f"{self._proc}/self/fd"))
            max_fds = self._max_fds()
            start_time_s = self._start_time(int(fields[19]))
        except (OSError, ValueError, IndexError):
            return  # no /proc here
        # fields[0] is the state, the third field of /proc/self/stat: vsize is its 23rd, rss its 24th.
        out.single("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.", int(fields[20]))
        out.single("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.",
                   int(fields[21]) * os.sysconf("SC_PAGE_SIZE"))
        out.single("process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds.",
                   start_time_s)
        out.single("process_open_fds", "gauge", "Number of open file descriptors.", open_fds)
        if max_fds is not None:
            out.single("process_max_fds", "gauge", "Maximum number of open file descriptors.", max_fds)

    def _start_time(self, start_ticks: int) -> float:
        if self._start_time_s is None:
            with open(f"{self._proc}/stat", "rb") as file:
                boot_s = next(int(line.split()[1]) for line in file if line.startswith(b"btime "))
            self._start_time_s = boot_s + start_ticks / os.sysconf("SC_CLK_TCK")
        return self._start_time_s

    def _max_fds(self) -> int | None:
        with open(f"{self._proc}/self/limits", "rb") as file:
            for line in file:
                if line.startswith(b"Max open files"):
                    soft = line.split()[3]
                    return None if soft == b"unlimited" else int(soft)
        return None


def render(
    writer_stats: WriterStatistics,
    reports: Sequence[ActorReport],
    *,
    max_queues: int,
    max_topics: int,
    data_dir: str | None = None,
    process: ProcessReader | None = None,
    audit: AuditStatistics | None = None,
    shovel_statistics: Sequence[ShovelStatistics] = (),
    region: str = "",
    now_ms: int = 0,
) -> str:
    """The whole scrape, as text. Reads the data directory and /proc; never waits."""
    out = Exposition()
    writer(out, writer_stats)
    if data_dir is not None:
        data_directory(out, data_dir)
    actors(out, reports, max_queues, max_topics)
    functions(out, reports)
    if shovel_statistics:
        shovels(out, shovel_statistics, reports, region, now_ms)
    if audit is not None:
        audit_trail(out, audit)
    if process is not None:
        process.write(out)
    return out.text()
