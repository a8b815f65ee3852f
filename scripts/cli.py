"""The `dovecote` command: `serve`, `check`, and client commands for quick use from a shell.

Client commands print JSON and exit 1 with the AWS error code on a broker error.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence

import msgspec
import trio

from dovecote.actors.errors import BrokerError
from dovecote.actors.config import BrokerConfig
from dovecote.net.client import DEFAULT_PORT, BlockingClient, MessageAttributeValue
from dovecote.net.http_push import SmtpRelay
from dovecote.net.plain_data import plain
from dovecote.storage.lmdb_store import LmdbStore
from dovecote.storage.records import PushDone
from dovecote.storage.store import StorageError

from . import replay
from .app import ServeConfig, default_data_dir, run_broker
from .history import (
    LogFilter,
    describe,
    format_time,
    iter_log,
    parse_time,
    queue_state_at,
    to_json,
)


def _key_values(pairs: Sequence[str]) -> dict[str, str]:
    result = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"expected NAME=VALUE, got {pair!r}")
        result[key] = value
    return result


def _access_keys(pairs: Sequence[str]) -> dict[str, str]:
    keys = {}
    for pair in pairs:
        key_id, sep, secret = pair.partition(":")
        if not (sep and key_id and secret):
            raise SystemExit(f"--access-key takes ID:SECRET, got {pair!r}")
        keys[key_id] = secret
    return keys


def _message_attributes(pairs: Sequence[str]) -> dict[str, MessageAttributeValue]:
    """NAME=TYPE:VALUE, e.g. colour=String:blue or weight=Number:12.5"""
    result = {}
    for name, typed in _key_values(pairs).items():
        data_type, sep, value = typed.partition(":")
        if not sep:
            raise SystemExit(f"expected NAME=TYPE:VALUE, got {name}={typed}")
        if data_type.startswith("Binary"):
            result[name] = MessageAttributeValue(data_type, binary_value=value.encode())
        else:
            result[name] = MessageAttributeValue(data_type, string_value=value)
    return result


def _count(text: str) -> int:
    """A whole number, 0 or more (for argparse)."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


def _default(config: type[msgspec.Struct], field: str) -> object:
    """The default a config struct gives one of its fields."""
    return next(info.default for info in msgspec.structs.fields(config) if info.name == field)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dovecote", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    # Defaults are read off the config structs, which own them; help shows each one.
    serve = commands.add_parser("serve", help="run the broker")
    serve.add_argument(
        "--data-dir", default=str(default_data_dir()),
        help="data directory: $DOVECOTE_DATA_DIR, else the XDG state directory (default %(default)s)",
    )
    serve.add_argument("--host", default=_default(ServeConfig, "host"), help="address to listen on (default %(default)s)")
    serve.add_argument("--port", type=int, default=_default(ServeConfig, "port"), help="native protocol port (default %(default)s)")
    serve.add_argument(
        "--http-port", type=int, default=_default(ServeConfig, "http_port"),
        help="AWS API and /health, /metrics, /peek port (default %(default)s)",
    )
    serve.add_argument(
        "--public-url", default=_default(ServeConfig, "public_url"),
        help="base of returned queue URLs and of the URLs sent to push endpoints; none: http://HOST:HTTP_PORT",
    )
    serve.add_argument(
        "--sync",
        choices=("full", "os"),
        default=_default(ServeConfig, "sync_mode"),
        help="full: fsync every commit (survives power loss); os: leave flushing to the OS "
        "(survives a broker crash, may lose the last seconds on power loss) (default %(default)s)",
    )
    serve.add_argument(
        "--history-hours", type=float, default=_default(ServeConfig, "history_hours"),
        help="how long log records stay readable (default %(default)s)",
    )
    serve.add_argument(
        "--max-data-bytes", type=int, default=_default(ServeConfig, "max_data_bytes"), help="limit of the LMDB map (default %(default)s)"
    )
    serve.add_argument(
        "--reserve-bytes", type=int, default=_default(ServeConfig, "reserve_bytes"),
        help="disk kept back for deletes when full (default %(default)s)",
    )
    serve.add_argument("--salvage", action="store_true", help="serve what is intact if stored data is damaged")
    serve.add_argument(
        "--access-key",
        action="append",
        default=[],
        metavar="ID:SECRET",
        help="verify AWS Signature V4 on the AWS API against these keys (repeatable; needs dovecote[auth]); "
        "without any, signatures are not checked",
    )
    serve.add_argument(
        "--account-id", default=_default(BrokerConfig, "account_id"), help="the account in ARNs and queue URLs (default %(default)s)"
    )
    serve.add_argument(
        "--region", default=_default(BrokerConfig, "region"), help="the region of requests that name none (default %(default)s)"
    )
    serve.add_argument(
        "--unsigned-sqs-envelopes",
        action="store_true",
        help="deliver SNS envelopes to queues without Signature and SigningCertURL (an RSA signature "
        "per publish is most of a publish's cost)",
    )
    serve.add_argument(
        "--push-timeout", type=float, default=_default(ServeConfig, "push_timeout_s"),
        help="seconds an HTTP/S push attempt may take (default %(default)s)",
    )
    serve.add_argument(
        "--push-max-pending", type=int, default=_default(BrokerConfig, "max_pending_pushes"),
        help="pending pushes a subscription may have; beyond, new ones are dropped and recorded (default %(default)s)",
    )
    serve.add_argument(
        "--push-in-flight", type=int, default=_default(ServeConfig, "push_max_in_flight"),
        help="HTTP/S push requests at once, at most, in all (default %(default)s)",
    )
    serve.add_argument(
        "--push-ca", default=None, help="CA bundle HTTPS endpoints' certificates are checked against; none: certifi's, as httpx uses"
    )
    serve.add_argument("--smtp-host", default=None, help="SMTP relay for email and email-json subscriptions (none: refused)")
    serve.add_argument("--smtp-port", type=int, default=_default(SmtpRelay, "port"), help="the relay's port (default %(default)s)")
    serve.add_argument("--smtp-starttls", action="store_true", help="upgrade the relay connection with STARTTLS")
    serve.add_argument(
        "--smtp-user", default=_default(SmtpRelay, "username"), help="relay login; the password is read from $DOVECOTE_SMTP_PASSWORD"
    )
    serve.add_argument(
        "--smtp-from", default=_default(SmtpRelay, "sender"), help="the sender address of notification mail (default %(default)s)"
    )
    serve.add_argument(
        "--metrics-max-queues", type=_count, default=_default(ServeConfig, "metrics_max_queues"),
        help='queues with series of their own in /metrics (the oldest); the rest are added up as queue="(other)" (default %(default)s)',
    )
    serve.add_argument(
        "--metrics-max-topics", type=_count, default=_default(ServeConfig, "metrics_max_topics"),
        help='topics with series of their own in /metrics (the oldest); the rest are added up as topic="(other)" (default %(default)s)',
    )
    serve.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR (default %(default)s)")

    check = commands.add_parser("check", help="verify every stored checksum (the broker must be stopped)")
    check.add_argument("--data-dir", default=None)

    log_command = commands.add_parser(
        "log", help="read the log back: every record in order, filtered (offline or beside a running broker)"
    )
    log_command.add_argument(
        "view", nargs="?", choices=("records", "stats", "state"), default="records",
        help="records (default), stats (how much history is kept), state (a queue --at a past instant)",
    )
    log_command.add_argument("--at", default=None, help="with state: the instant (ISO 8601 or epoch ms)")
    log_command.add_argument("--data-dir", default=None)
    log_command.add_argument("--queue", action="append", default=[], help="only this queue (repeatable)")
    log_command.add_argument("--topic", action="append", default=[], help="only this topic (repeatable)")
    log_command.add_argument(
        "--subscription", action="append", default=[], help="only this subscription ARN, and publishes delivered to it"
    )
    log_command.add_argument("--message-id", action="append", default=[], help="only this message (repeatable)")
    log_command.add_argument("--kind", action="append", default=[], help="only this record kind, e.g. MessageSent")
    log_command.add_argument("--since", default=None, help="ISO 8601 time or epoch milliseconds (inclusive)")
    log_command.add_argument("--until", default=None, help="ISO 8601 time or epoch milliseconds (exclusive)")
    log_command.add_argument("--json", action="store_true", help="JSON lines instead of text")
    log_command.add_argument("--follow", action="store_true", help="keep printing records as they are written")
    log_command.add_argument("--limit", type=int, default=None, help="stop after this many records")

    replay = commands.add_parser(
        "replay", help="send a time range of queues' or topics' history, as new messages, into a queue"
    )
    replay.add_argument("--topic", action="append", default=[], help="this topic's publishes (repeatable)")
    replay.add_argument("--data-dir", default=None, help="the log to read (read-only)")
    replay.add_argument("--queue", action="append", default=[], help="only this queue's messages (repeatable)")
    replay.add_argument("--since", default=None)
    replay.add_argument("--until", default=None)
    replay.add_argument("--into", required=True, help="the queue that receives them")
    rewind = commands.add_parser("rewind", help="re-enqueue, as new messages, what a queue received since an instant")
    rewind.add_argument("queue")
    rewind.add_argument("--since", required=True)
    rewind.add_argument("--data-dir", default=None)
    import_command = commands.add_parser("import", help="send the messages of a `dovecote log --json` export to a broker")
    import_command.add_argument("file", help="JSON lines, or - for standard input")
    for sub in (replay, rewind, import_command):
        sub.add_argument("--host", default="127.0.0.1")
        sub.add_argument("--port", type=int, default=DEFAULT_PORT)

    def client_command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("--host", default="127.0.0.1")
        sub.add_argument("--port", type=int, default=DEFAULT_PORT)
        return sub

    sub = client_command("create-queue", "create a queue")
    sub.add_argument("queue")
    sub.add_argument("--attribute", action="append", default=[], metavar="NAME=VALUE")
    sub = client_command("list-queues", "list queues")
    sub.add_argument("--prefix", default="")
    for name in ("delete-queue", "purge-queue", "get-queue-url"):
        client_command(name, name.replace("-", " ")).add_argument("queue")
    sub = client_command("get-queue-attributes", "show queue attributes")
    sub.add_argument("queue")
    sub = client_command("set-queue-attributes", "change queue attributes")
    sub.add_argument("queue")
    sub.add_argument("attribute", nargs="+", metavar="NAME=VALUE")
    sub = client_command("send", "send a message")
    sub.add_argument("queue")
    sub.add_argument("body")
    sub.add_argument("--delay", type=int, default=None)
    sub.add_argument("--attribute", action="append", default=[], metavar="NAME=TYPE:VALUE")
    sub = client_command("receive", "receive messages")
    sub.add_argument("queue")
    sub.add_argument("--max", type=int, default=1)
    sub.add_argument("--wait", type=int, default=None)
    sub.add_argument("--visibility", type=int, default=None)
    sub.add_argument("--delete", action="store_true", help="delete what was received")
    sub = client_command("peek", "browse a queue without consuming it")
    sub.add_argument("queue")
    sub.add_argument("--max", type=int, default=10)
    sub.add_argument("--after", type=int, default=0, help="page: messages after this seq")
    sub.add_argument("--state", choices=("visible", "in_flight", "delayed"), default="")
    sub = client_command("delete-message", "delete a message by receipt handle")
    sub.add_argument("queue")
    sub.add_argument("receipt_handle")
    sub = client_command("change-visibility", "change a message's visibility timeout")
    sub.add_argument("queue")
    sub.add_argument("receipt_handle")
    sub.add_argument("seconds", type=int)
    sub = client_command("create-topic", "create an SNS topic")
    sub.add_argument("topic")
    sub.add_argument("--attribute", action="append", default=[], metavar="NAME=VALUE")
    client_command("list-topics", "list topics")
    sub = client_command("subscribe", "subscribe a queue (by ARN), an HTTP/S URL or a mail address to a topic")
    sub.add_argument("topic")
    sub.add_argument("endpoint", help="the queue's ARN, the URL or the address")
    sub.add_argument("--protocol", default="sqs", help="sqs, http, https, email or email-json")
    sub.add_argument("--attribute", action="append", default=[], metavar="NAME=VALUE")
    sub = client_command("confirm-subscription", "confirm an HTTP/S or email subscription with the token it was sent")
    sub.add_argument("topic")
    sub.add_argument("token")
    sub = client_command("publish", "publish a message to a topic")
    sub.add_argument("topic")
    sub.add_argument("message")
    sub.add_argument("--subject", default=None)
    sub.add_argument("--attribute", action="append", default=[], metavar="NAME=TYPE:VALUE")
    sub.add_argument("--group", default=None, help="MessageGroupId (FIFO topics)")
    sub.add_argument("--dedup", default=None, help="MessageDeduplicationId (FIFO topics)")
    sub = client_command(
        "explain", "which subscriptions of a topic a message would reach, and for each it would not, why"
    )
    sub.add_argument("topic")
    sub.add_argument("--message", required=True)
    sub.add_argument("--attribute", action="append", default=[], metavar="NAME=TYPE:VALUE")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    if args.command == "check":
        return _check(args)
    if args.command == "log":
        return _log(args)
    if args.command in ("replay", "rewind", "import"):
        return _replay(args)
    try:
        with BlockingClient(args.host, args.port) as client:
            output = _client_command(client, args)
    except BrokerError as error:
        print(json.dumps({"error": error.code, "message": error.message}), file=sys.stderr)
        return 1
    except OSError as error:
        print(f"cannot reach the broker at {args.host}:{args.port}: {error}", file=sys.stderr)
        return 2
    if output is not None:
        print(json.dumps(plain(output), indent=2))
    return 0


def _client_command(client: BlockingClient, args: argparse.Namespace) -> object:
    match args.command:
        case "create-queue":
            return {"QueueUrl": client.create_queue(args.queue, _key_values(args.attribute))}
        case "list-queues":
            return {"QueueUrls": client.list_queues(args.prefix).queues}
        case "get-queue-url":
            return {"QueueUrl": client.get_queue_url(args.queue)}
        case "delete-queue":
            return client.delete_queue(args.queue)
        case "purge-queue":
            return client.purge_queue(args.queue)
        case "get-queue-attributes":
            return {"Attributes": client.get_queue_attributes(args.queue)}
        case "set-queue-attributes":
            return client.set_queue_attributes(args.queue, _key_values(args.attribute))
        case "send":
            return client.send_message(
                args.queue, args.body, delay_seconds=args.delay, message_attributes=_message_attributes(args.attribute)
            )
        case "receive":
            messages = client.receive_message(
                args.queue,
                max_number_of_messages=args.max,
                wait_time_seconds=args.wait,
                visibility_timeout=args.visibility,
                attribute_names=["All"],
                message_attribute_names=["All"],
            )
            if args.delete:
                for message in messages:
                    client.delete_message(args.queue, message.receipt_handle)
            return {"Messages": messages}
        case "peek":
            return client.peek_messages(args.queue, args.max, args.after, args.state)
        case "delete-message":
            return client.delete_message(args.queue, args.receipt_handle)
        case "change-visibility":
            return client.change_message_visibility(args.queue, args.receipt_handle, args.seconds)
        case "create-topic":
            return {"TopicArn": client.create_topic(args.topic, _key_values(args.attribute))}
        case "list-topics":
            return {"TopicArns": client.list_topics().arns}
        case "subscribe":
            return {"SubscriptionArn": client.subscribe(args.topic, args.protocol, args.endpoint, _key_values(args.attribute))}
        case "confirm-subscription":
            return {"SubscriptionArn": client.confirm_subscription(args.topic, args.token)}
        case "publish":
            return client.publish(
                args.topic, args.message, subject=args.subject, message_attributes=_message_attributes(args.attribute),
                message_group_id=args.group, message_deduplication_id=args.dedup,
            )
        case "explain":
            return {"Subscriptions": client.explain(args.topic, args.message, _message_attributes(args.attribute))}
    raise SystemExit(f"unknown command {args.command}")


def serve_config(args: argparse.Namespace) -> ServeConfig:
    """What `dovecote serve` runs with, from its flags."""
    return ServeConfig(
        data_dir=args.data_dir,
        host=args.host,
        port=args.port,
        http_port=args.http_port,
        public_url=args.public_url,
        sync_mode=args.sync,
        history_hours=args.history_hours,
        max_data_bytes=args.max_data_bytes,
        reserve_bytes=args.reserve_bytes,
        salvage=args.salvage,
        access_keys=_access_keys(args.access_key),
        broker=BrokerConfig(
            region=args.region,
            account_id=args.account_id,
            http_url=args.public_url or f"http://{args.host}:{args.http_port}",
            sign_sqs_envelopes=not args.unsigned_sqs_envelopes,
            sign_in_thread=True,
            max_pending_pushes=args.push_max_pending,
        ),
        smtp=SmtpRelay(
            args.smtp_host, args.smtp_port, args.smtp_starttls, args.smtp_user, os.environ.get("DOVECOTE_SMTP_PASSWORD", ""),
            args.smtp_from,
        )
        if args.smtp_host
        else None,
        push_timeout_s=args.push_timeout,
        push_max_in_flight=args.push_in_flight,
        push_verify=args.push_ca or True,
        metrics_max_queues=args.metrics_max_queues,
        metrics_max_topics=args.metrics_max_topics,
    )


def _serve(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = serve_config(args)
    try:
        trio.run(lambda: run_broker(config, handle_signals=True))
    except StorageError as error:
        logging.getLogger("dovecote").error("%s", error)
        return 3
    return 0


def _check(args: argparse.Namespace) -> int:
    try:
        store = LmdbStore(args.data_dir or default_data_dir(), reserve_bytes=0)
    except StorageError as error:
        print(error, file=sys.stderr)
        return 3
    try:
        damages = store.verify_all()
    finally:
        store.close()
    for damage in damages:
        print(f"damaged: {damage.describe()}")
    print("ok" if not damages else f"{len(damages)} damaged range(s)")
    return 0 if not damages else 1


def _log(args: argparse.Namespace) -> int:
    try:
        store = LmdbStore(args.data_dir or default_data_dir(), readonly=True)
    except StorageError as error:
        print(error, file=sys.stderr)
        return 3
    try:
        if args.view == "stats":
            print(json.dumps(_log_stats(store), indent=2))
            return 0
        if args.view == "state":
            if not args.at or len(args.queue) != 1:
                print("log state needs --at TIME and one --queue NAME", file=sys.stderr)
                return 2
            past = queue_state_at(iter_log(store, LogFilter()), args.queue[0], parse_time(args.at))
            print(json.dumps(plain(past), indent=2) if args.json else _describe_past(past))
            return 0
        log_filter = LogFilter(
            frozenset(args.queue),
            frozenset(args.message_id),
            frozenset(args.kind),
            parse_time(args.since) if args.since else None,
            parse_time(args.until) if args.until else None,
            frozenset(args.topic),
            frozenset(args.subscription),
        )
        printed = 0
        after_lsn = 0
        while True:
            for lsn, record in iter_log(store, log_filter, after_lsn):
                print(json.dumps(to_json(lsn, record)) if args.json else describe(lsn, record), flush=args.follow)
                printed += 1
                if args.limit is not None and printed >= args.limit:
                    return 0
            if not args.follow:
                return 0
            after_lsn = store.last_lsn
            while store.refresh_last_lsn() == after_lsn:
                time.sleep(0.2)
    except KeyboardInterrupt:
        return 0
    except StorageError as error:
        print(error, file=sys.stderr)
        return 1
    finally:
        store.close()


def _describe_past(past) -> str:
    lines = [f"queue {past.queue} at {format_time(past.at_ms)}: {len(past.messages)} messages"]
    if not past.complete:
        lines.append("(the log no longer holds this queue's creation: messages sent before its oldest record are missing)")
    for message in past.messages:
        lines.append(
            f"  seq {message.seq}  {message.state:<9} receives={message.receive_count} "
            f"sent={format_time(message.sent_ms)} id={message.message_id} body={message.body[:60]!r}"
        )
    return "\n".join(lines)


def _log_stats(store: LmdbStore) -> dict[str, object]:
    names = {topic.row.topic_id: topic.row.topic for topic in store.load_topics()[0]}
    kinds: dict[str, int] = {}
    push_outcomes: dict[str, int] = {}  # how pushes ended: delivered, dead-lettered, dropped
    first_ms = last_ms = None
    count = 0
    for _, record in iter_log(store, LogFilter()):
        count += 1
        kinds[type(record).__name__] = kinds.get(type(record).__name__, 0) + 1
        if isinstance(record, PushDone):
            outcome = record.outcome.split(":")[0]
            push_outcomes[outcome] = push_outcomes.get(outcome, 0) + 1
        first_ms = record.at_ms if first_ms is None else first_ms
        last_ms = record.at_ms
    return {
        "records": count,
        "last_lsn": store.last_lsn,
        "oldest": format_time(first_ms) if first_ms is not None else None,
        "newest": format_time(last_ms) if last_ms is not None else None,
        "by_kind": kinds,
        "push_outcomes": push_outcomes,
        "archived_publishes": {names.get(topic_id, f"topic {topic_id}"): n for topic_id, n in store.archive_counts().items()},
        "disk_bytes": store.disk_bytes(),
    }


def _replay(args: argparse.Namespace) -> int:
    try:
        if args.command == "import":
            lines = sys.stdin if args.file == "-" else open(args.file, encoding="utf-8")
            with lines:
                pairs = list(replay.records_from_export(lines))
            queues = {name: attributes for kind, (name, attributes) in
                      ((k, r) for k, r in pairs if k == "QueueCreated")}
            messages = [record for kind, record in pairs if kind == "MessageSent"]
            count = trio.run(
                replay.send_all, args.host, args.port, messages, None, replay.progress_bar(len(messages)), queues
            )
        else:
            queues = [args.queue] if args.command == "rewind" else args.queue
            into = args.queue if args.command == "rewind" else args.into
            topics = getattr(args, "topic", [])
            log_filter = LogFilter(
                frozenset(queues),
                kinds=frozenset({"MessageSent", "Published"} if topics else {"MessageSent"}),
                since_ms=parse_time(args.since) if args.since else None,
                until_ms=parse_time(args.until) if getattr(args, "until", None) else None,
                topics=frozenset(topics),
            )
            store = LmdbStore(args.data_dir or default_data_dir(), readonly=True)
            try:
                total = sum(1 for _ in iter_log(store, log_filter))
                messages = (replay.as_message(record) for _, record in iter_log(store, log_filter))
                count = trio.run(replay.send_all, args.host, args.port, messages, into, replay.progress_bar(total))
            finally:
                store.close()
    except (BrokerError, StorageError, OSError, ValueError) as error:
        print(f"\n{error}", file=sys.stderr)
        return 1
    print(f"\nreplayed {count} messages", file=sys.stderr)
    return 0
