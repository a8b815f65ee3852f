"""Every limit of the broker's behaviour, in one place, with its unit in its name.

The first groups are AWS's (SQS's and SNS's published quotas, which clients are written against);
the last are this broker's own bounds on memory and work per step. Network limits (frame and body
sizes, timeouts) are the listeners' configuration, in net/limits.py.
"""

from __future__ import annotations

# --- SQS -----------------------------------------------------------------------------------------
SQS_MIN_MESSAGE_BYTES = 1024  # the lowest MaximumMessageSize a queue may set
SQS_MAX_MESSAGE_BYTES = 1024 * 1024  # a message with its attributes; also a whole batch
SQS_MAX_MESSAGE_ATTRIBUTES = 10
SQS_MAX_BATCH_ENTRIES = 10
SQS_MAX_RECEIVE_MESSAGES = 10
SQS_MAX_WAIT_TIME_S = 20
SQS_MAX_VISIBILITY_TIMEOUT_S = 12 * 3600
SQS_MAX_DELAY_S = 900
SQS_MIN_RETENTION_S = 60
SQS_MAX_RETENTION_S = 14 * 24 * 3600
SQS_MAX_RECEIVE_COUNT = 1000  # a RedrivePolicy's maxReceiveCount
SQS_MAX_IN_FLIGHT_MESSAGES = 120_000  # per standard queue; receives past it get OverLimit
SQS_PURGE_INTERVAL_S = 60  # one PurgeQueue a minute
SQS_RECEIVE_ATTEMPT_WINDOW_S = 300  # a FIFO ReceiveRequestAttemptId is remembered this long
SQS_MAX_MOVE_TASK_RATE_PER_S = 500  # MaxNumberOfMessagesPerSecond of a message move task
SQS_MAX_LIST_RESULTS = 1000  # MaxResults of ListQueues and ListDeadLetterSourceQueues
SQS_MAX_MOVE_TASKS_LISTED = 10  # ListMessageMoveTasks shows at most this many
SQS_MIN_DATA_KEY_REUSE_S = 60  # KmsDataKeyReusePeriodSeconds: how long one data key encrypts a queue's messages
SQS_MAX_DATA_KEY_REUSE_S = 24 * 3600
SQS_DEFAULT_DATA_KEY_REUSE_S = 300  # also for topics, which have no such attribute
DEDUP_WINDOW_S = 300  # FIFO deduplication, for queues and topics alike

# --- SNS -----------------------------------------------------------------------------------------
SNS_MAX_MESSAGE_BYTES = 256 * 1024  # a publish with its attributes
SNS_MAX_BATCH_ENTRIES = 10
SNS_MAX_BATCH_BYTES = 256 * 1024  # the messages of a PublishBatch together
SNS_MAX_SUBSCRIPTIONS_PER_TOPIC = 100_000
SNS_MAX_ARCHIVE_DAYS = 365
SNS_MAX_RETRY_DELAY_S = 3600  # a delivery policy's maxDelayTarget
SNS_MAX_RETRIES = 100  # a delivery policy's numRetries
SNS_MAX_TOTAL_RETRY_S = 3600  # a delivery policy's whole retry time
SNS_PAGE_SIZE = 100  # ListTopics, ListSubscriptions, ListSubscriptionsByTopic

# --- tags and permissions, both services -----------------------------------------------------------
MAX_TAGS = 50
MAX_TAG_KEY_CHARS = 128
MAX_TAG_VALUE_CHARS = 256

# --- this broker's own bounds ----------------------------------------------------------------------
MAX_REQUESTS_PER_CYCLE = 256  # an actor handles at most this many requests between commits
MAX_QUEUE_CYCLES_IN_FLIGHT = 8  # a queue's cycles waiting for the disk at once
HOUSEKEEPING_INTERVAL_S = 60  # expired deduplication ids and receive attempts are dropped this often
MOVE_BATCH_MESSAGES = 100  # a move task hands this many messages over at once
MAX_MOVES_IN_TRANSIT = 1000  # per move task
MOVE_RETRY_S = 1.0  # a hand-over to another queue that failed is tried again after this
REPLAY_BATCH_PUBLISHES = 500  # archived publishes replayed to a subscription per topic cycle
PUSH_MAX_IN_FLIGHT_PER_SUBSCRIPTION = 8  # attempts (and connections) at once per push subscription
PUSH_MAX_PENDING_PER_SUBSCRIPTION = 100_000  # beyond, new pushes are dropped (and recorded)
PUSH_UNREACHABLE_HOLD_S = 1.0  # after a refused connection, attempts due this soon fail without one
PUSH_MAX_IN_FLIGHT = 256  # HTTP/S push requests at once, in all subscriptions together
PUSH_MAX_RESPONSE_BYTES = 64 * 1024  # of an endpoint's answer's body, read (only its status counts)
PUSH_TIMEOUT_S = 15.0  # one push attempt, connecting and answering together, as SNS waits
ACTOR_MAILBOX_REQUESTS = 1024  # client requests waiting in one actor's mailbox; beyond: RequestThrottled
ACTOR_MAILBOX_MESSAGES_FROM_ACTORS = 65_536  # messages other actors' mail may carry on top (see mailbox.py)
MAX_LISTINGS_AT_ONCE = 4  # ListSubscriptions calls asking every topic at the same time
STATISTICS_ACTORS_PER_STEP = 500  # actors a /metrics scrape reads before letting other tasks run
