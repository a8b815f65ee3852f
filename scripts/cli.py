"""The `dovecote` command: `serve`, `config`, `check`, `log`, and client commands for quick use from a shell.

Client commands print JSON and exit 1 with the AWS error code on a broker error. They prove the key
in $AWS_ACCESS_KEY_ID and $AWS_SECRET_ACCESS_KEY when both are set (as aws-cli reads them), and
speak TLS with --tls or --ca-bundle FILE.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import trio

from dovecote.actors.errors import BrokerError
from dovecote.actors.ops import Done
from dovecote.actors.topic_core import TOKEN
from dovecote.net.client import DEFAULT_PORT, BlockingClient, MessageAttributeValue
from dovecote.net.plain_data import aws_field_name, plain
from dovecote.storage.lmdb_store import LmdbStore
from dovecote.storage.records import PushDone
from dovecote.storage.sse import KeyFile, Sealer, add_master_key, keep_only_current, read_key_file
from dovecote.storage.store import DataDirectoryUnusable, StorageError

from . import __version__, config, logs, replay, sd_notify
from dovecote.net.tls import TlsError

from .app import AnonymousOffLoopback, ListenerError, ServeConfig, default_data_dir, run_broker, sole_error, sse_master_key_path
from .history import (
    LogFilter,
    Revealer,
    default_key_file,
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


# Exit codes of serve, config, check and log (client commands: 1 a broker error, 2 no broker).
EXIT_FAILED = 1  # anything else: the log has the traceback (check: damage was found)
EXIT_USAGE = 2  # a flag, the configuration file or a DOVECOTE_ variable is wrong (argparse's own code), a TLS file
# it names cannot be loaded, or it asks for a listener beyond loopback without access keys (nor --allow-anonymous)
EXIT_STORE = 3  # stored data cannot be served: damaged, of a newer format, or held by another broker
EXIT_LISTENER = 4  # a port is in use (or cannot be bound: privileged, not this machine's address)
EXIT_DATA_DIR = 5  # the data directory cannot be created, read or written, or (check, log) holds no store

SERVE_EPILOG = f"""\
Settings come from, each overriding the one before: the defaults shown here, the TOML file given with
--config (keys are the flags' names with underscores: http_port = 7481), environment variables
DOVECOTE_<KEY> (DOVECOTE_HTTP_PORT=7481; lists comma-separated), then the flags. `dovecote config`
prints the result. Command lines show in `ps`: the SMTP password is read from the file or
$DOVECOTE_SMTP_PASSWORD only, and access keys are better given there too.

Under systemd (Type=notify) READY=1 is sent once stored data is recovered and both ports serve.

exit codes:
  0  stopped by SIGTERM or SIGINT, cleanly
  {EXIT_FAILED}  an unexpected error (the log has the traceback)
  {EXIT_USAGE}  a flag, the configuration file or a DOVECOTE_ variable is wrong, a TLS file it
     names cannot be loaded, or a host other than loopback is asked for without access keys
     (give keys, or --allow-anonymous)
  {EXIT_STORE}  stored data cannot be served: damaged (see --salvage), written by a newer dovecote,
     or the data directory is in use by another dovecote process
  {EXIT_LISTENER}  a port is already in use, or cannot be listened on
  {EXIT_DATA_DIR}  the data directory cannot be created, read or written
"""
DATA_DIR_HELP = "the data directory (default $DOVECOTE_DATA_DIR, else ~/.local/state/dovecote)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dovecote", description=__doc__)
    parser.add_argument("--version", action="version", version=f"dovecote {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    # Every setting's flag, default and help come from the settings table (config.py).
    serve = commands.add_parser(
        "serve", help="run the broker", description="Run the broker until SIGTERM or SIGINT.", epilog=SERVE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    config.add_flags(serve)
    show = commands.add_parser(
        "config", help="print the configuration serve would run with, as a TOML file that explains each setting",
        description="Print the configuration `dovecote serve` would run with, given the same file, environment and "
        "flags: each setting with its explanation and default, as TOML (secrets are not shown).",
    )
    config.add_flags(show)

    check = commands.add_parser(
        "check", help="verify every stored checksum, and with the master key file every encrypted message (the broker must be stopped)"
    )
    check.add_argument("--data-dir", default=None, help=DATA_DIR_HELP)
    _key_file_flag(check)

    log_command = commands.add_parser(
        "log", help="read the log back: every record in order, filtered (offline or beside a running broker)"
    )
    log_command.add_argument(
        "view", nargs="?", choices=("records", "stats", "state", "pending"), default="records",
        help="records (default), stats (how much history is kept), state (a queue --at a past instant), "
        "pending (subscriptions waiting for their confirmation, each with the token that confirms it)",
    )
    log_command.add_argument("--at", default=None, help="with state: the instant (ISO 8601 or epoch ms)")
    log_command.add_argument("--data-dir", default=None, help=DATA_DIR_HELP)
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
    _key_file_flag(log_command)

    replay = commands.add_parser(
        "replay", help="send a time range of queues' or topics' history, as new messages, into a queue"
    )
    replay.add_argument("--topic", action="append", default=[], help="this topic's publishes (repeatable)")
    replay.add_argument("--data-dir", default=None, help="the log to read (read-only)")
    replay.add_argument("--queue", action="append", default=[], help="only this queue's messages (repeatable)")
    replay.add_argument("--since", default=None, help="ISO 8601 time or epoch milliseconds (inclusive; default: the oldest record)")
    replay.add_argument("--until", default=None, help="ISO 8601 time or epoch milliseconds (exclusive; default: the newest record)")
    replay.add_argument("--into", required=True, help="the queue that receives them")
    rewind = commands.add_parser("rewind", help="re-enqueue, as new messages, what a queue received since an instant")
    rewind.add_argument("queue", help="the queue to rewind")
    rewind.add_argument("--since", required=True, help="ISO 8601 time or epoch milliseconds")
    rewind.add_argument("--data-dir", default=None, help=DATA_DIR_HELP)
    import_command = commands.add_parser("import", help="send the messages of a `dovecote log --json` export to a broker")
    import_command.add_argument("file", help="JSON lines, or - for standard input")
    for sub in (replay, rewind, import_command):
        _broker_address(sub)
    for sub in (replay, rewind):
        _key_file_flag(sub)
    rotate = commands.add_parser(
        "rotate-key", help="put a new master key first in the key file of encryption at rest, or drop the old ones",
        description="Put a new random master key first in the master key file (made 0600 if missing), keeping the "
        "others to unwrap data keys until they are re-wrapped: the broker re-wraps them by the new key when it reads "
        "the file again (SIGHUP, `systemctl reload dovecote`, or its next start). With --drop-old, remove the keys "
        "but the first from the file, once no data key of the data directory is wrapped by one of them.",
    )
    rotate.add_argument("--data-dir", default=None, help=DATA_DIR_HELP)
    rotate.add_argument(
        "--sse-master-key-file", default=None, metavar="FILE",
        help="the key file (default $DOVECOTE_SSE_MASTER_KEY_FILE, else DATA_DIR/sse-master.key)",
    )
    rotate.add_argument("--drop-old", action="store_true", help="remove the old keys, if no data key needs them")

    def client_command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text)
        _broker_address(sub)
        return sub

    sub = client_command("create-queue", "create a queue")
    sub.add_argument("queue")
    sub.add_argument("--attribute", action="append", default=[], metavar="NAME=VALUE", help="a queue attribute (repeatable)")
    sub = client_command("list-queues", "list queues")
    sub.add_argument("--prefix", default="", help="only queues whose names start with this")
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
    sub.add_argument("--delay", type=int, default=None, help="DelaySeconds (default: the queue's)")
    sub.add_argument(
        "--attribute", action="append", default=[], metavar="NAME=TYPE:VALUE", help="a message attribute (repeatable)"
    )
    sub = client_command("receive", "receive messages")
    sub.add_argument("queue")
    sub.add_argument("--max", type=int, default=1, help="MaxNumberOfMessages, 1 to 10 (default %(default)s)")
    sub.add_argument("--wait", type=int, default=None, help="WaitTimeSeconds, up to 20 (default: the queue's)")
    sub.add_argument("--visibility", type=int, default=None, help="VisibilityTimeout in seconds (default: the queue's)")
    sub.add_argument("--delete", action="store_true", help="delete what was received")
    sub = client_command("peek", "browse a queue without consuming it")
    sub.add_argument("queue")
    sub.add_argument("--max", type=int, default=10, help="at most this many messages (default %(default)s)")
    sub.add_argument("--after", type=int, default=0, help="page: messages after this seq")
    sub.add_argument("--state", choices=("visible", "in_flight", "delayed"), default="", help="only messages in this state")
    sub = client_command("delete-message", "delete a message by receipt handle")
    sub.add_argument("queue")
    sub.add_argument("receipt_handle")
    sub = client_command("change-visibility", "change a message's visibility timeout")
    sub.add_argument("queue")
    sub.add_argument("receipt_handle")
    sub.add_argument("seconds", type=int)
    sub = client_command("create-topic", "create an SNS topic")
    sub.add_argument("topic")
    sub.add_argument("--attribute", action="append", default=[], metavar="NAME=VALUE", help="a topic attribute (repeatable)")
    client_command("list-topics", "list topics")
    sub = client_command(
        "subscribe", "subscribe a queue (by ARN), an HTTP/S URL, a mail address, a phone number or a platform endpoint to a topic"
    )
    sub.add_argument("topic")
    sub.add_argument("endpoint", help="the queue's ARN, the URL, the address, the number or the endpoint's ARN")
    sub.add_argument(
        "--protocol", default="sqs", help="sqs, http, https, email, email-json, sms or application (default %(default)s)"
    )
    sub.add_argument(
        "--attribute", action="append", default=[], metavar="NAME=VALUE", help="a subscription attribute (repeatable)"
    )
    sub = client_command("confirm-subscription", "confirm an HTTP/S or email subscription with the token it was sent")
    sub.add_argument("topic")
    sub.add_argument("token")
    sub = client_command("publish", "publish a message to a topic")
    sub.add_argument("topic")
    sub.add_argument("message")
    sub.add_argument("--subject", default=None, help="the Subject")
    sub.add_argument(
        "--attribute", action="append", default=[], metavar="NAME=TYPE:VALUE", help="a message attribute (repeatable)"
    )
    sub.add_argument("--group", default=None, help="MessageGroupId (FIFO topics)")
    sub.add_argument("--dedup", default=None, help="MessageDeduplicationId (FIFO topics)")
    sub = client_command(
        "explain", "which subscriptions of a topic a message would reach, and for each it would not, why"
    )
    sub.add_argument("topic")
    sub.add_argument("--message", required=True, help="the message body")
    sub.add_argument(
        "--attribute", action="append", default=[], metavar="NAME=TYPE:VALUE", help="a message attribute (repeatable)"
    )
    return parser


def _key_file_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--sse-master-key-file", default=None, metavar="FILE",
        help="open encrypted messages with this master key file (default $DOVECOTE_SSE_MASTER_KEY_FILE, else "
        "DATA_DIR/sse-master.key if there is one; without one, they read <encrypted>)",
    )


def _broker_address(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="the broker's address (default %(default)s)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="its native protocol port (default %(default)s)")
    parser.add_argument("--tls", action="store_true", help="connect with TLS, trusting the system's CAs")
    parser.add_argument("--ca-bundle", metavar="FILE", default=None, help="connect with TLS, trusting the CAs in this PEM file")


def _connection(args: argparse.Namespace) -> dict[str, object]:
    """How the client commands open their connection: TLS from the flags, the key from the
    environment (never a flag: command lines show in `ps`)."""
    key_id, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
    return {"tls": args.ca_bundle or args.tls or None, "access_key": (key_id, secret) if key_id and secret else None}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in ("serve", "config"):
        try:
            settings = config.resolve(config.flags_given(args), args.config, os.environ)
        except config.ConfigError as error:
            print(f"dovecote: {error}", file=sys.stderr)
            return EXIT_USAGE
        if args.command == "config":
            sys.stdout.write(config.render(settings, args.config))
            return 0
        return _serve(settings.values)
    if args.command == "check":
        return _check(args)
    if args.command == "log":
        return _log(args)
    if args.command in ("replay", "rewind", "import"):
        return _replay(args)
    if args.command == "rotate-key":
        return _rotate_key(args)
    try:
        with BlockingClient(args.host, args.port, **_connection(args)) as client:
            output = _client_command(client, args)
    except BrokerError as error:
        print(json.dumps({"error": error.code, "message": error.message}), file=sys.stderr)
        return 1
    except OSError as error:
        print(f"cannot reach the broker at {args.host}:{args.port}: {error}", file=sys.stderr)
        return 2
    if output is not None and not isinstance(output, Done):  # as aws-cli, nothing for an answer with nothing in it
        print(json.dumps(plain(output, aws_field_name), indent=2))
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


def _serve(values: dict[str, object]) -> int:
    logs.configure(values["log_level"], values["log_format"])
    try:
        serve_config = config.serve_config(values)  # reads the keys' secrets
    except config.ConfigError as error:
        print(f"dovecote: {error}", file=sys.stderr)
        return EXIT_USAGE
    try:
        trio.run(_serve_and_notify, serve_config)
    except Exception as error:  # noqa: BLE001 - every failure ends as one log line and an exit code
        return _failed(sole_error(error), serve_config.data_dir)
    return 0


async def _serve_and_notify(serve_config: ServeConfig) -> None:
    """Run the broker; tell systemd when it serves and when it begins to stop."""
    stopping = trio.Event()
    async with trio.open_nursery() as nursery:
        ports = await nursery.start(functools.partial(run_broker, serve_config, stopping=stopping, handle_signals=True))
        sd_notify.notify(f"READY=1\nSTATUS=serving: native port {ports.native}, HTTP port {ports.http}")
        await stopping.wait()
        sd_notify.notify("STOPPING=1\nSTATUS=shutting down")


def _failed(error: BaseException, data_dir: str) -> int:
    """Log why serve stopped, in one line where the operator can act on it; the exit code."""
    log = logging.getLogger("dovecote")
    if isinstance(error, AnonymousOffLoopback):
        log.error("%s", error)
        return EXIT_USAGE
    if isinstance(error, ListenerError):
        log.error("%s", error)
        return EXIT_LISTENER
    if isinstance(error, TlsError):
        log.error("%s", error)
        return EXIT_USAGE
    if isinstance(error, StorageError):
        log.error("%s", error)
        return _storage_exit_code(error)
    if isinstance(error, OSError) and error.filename and Path(error.filename).absolute().is_relative_to(Path(data_dir).absolute()):
        # A file of the data directory beside the store (the SNS signing key).
        log.error("cannot use the data directory %s: %s (%s)", data_dir, error.strerror, error.filename)
        return EXIT_DATA_DIR
    log.critical("dovecote stopped on an unexpected error", exc_info=error)
    return EXIT_FAILED


def _storage_exit_code(error: StorageError) -> int:
    return EXIT_DATA_DIR if isinstance(error, DataDirectoryUnusable) else EXIT_STORE


def _check(args: argparse.Namespace) -> int:
    data_dir = args.data_dir or default_data_dir()
    try:
        store = LmdbStore(data_dir, reserve_bytes=0, create=False)
    except StorageError as error:
        print(f"dovecote: {error}", file=sys.stderr)
        return _storage_exit_code(error)
    key_file = default_key_file(data_dir, args.sse_master_key_file)
    try:
        if key_file is not None:
            store.attach_sealer(Sealer(KeyFile(key_file, create=False)))
    except StorageError as error:
        store.close()
        print(f"dovecote: {error}", file=sys.stderr)
        return EXIT_STORE
    try:
        damages = store.verify_all()
    finally:
        store.close()
    for damage in damages:
        print(f"damaged: {damage.describe()}")
    print("ok" if not damages else f"{len(damages)} damaged range(s)")
    return 0 if not damages else 1


def _log(args: argparse.Namespace) -> int:
    data_dir = args.data_dir or default_data_dir()
    try:
        store = LmdbStore(data_dir, readonly=True)
    except StorageError as error:
        print(f"dovecote: {error}", file=sys.stderr)
        return _storage_exit_code(error)
    try:
        reveal = Revealer(store, default_key_file(data_dir, args.sse_master_key_file))
    except StorageError as error:
        store.close()
        print(f"dovecote: {error}", file=sys.stderr)
        return EXIT_STORE
    try:
        if args.view == "stats":
            print(json.dumps(_log_stats(store), indent=2))
            return 0
        if args.view == "pending":
            for subscription in _pending(store, frozenset(args.topic)):
                print("\t".join(subscription))
            return 0
        if args.view == "state":
            if not args.at or len(args.queue) != 1:
                print("log state needs --at TIME and one --queue NAME", file=sys.stderr)
                return 2
            past = queue_state_at(iter_log(store, LogFilter(), reveal=reveal), args.queue[0], parse_time(args.at))
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
            for lsn, record in iter_log(store, log_filter, after_lsn, reveal=reveal):
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


def _pending(store: LmdbStore, topics: frozenset[str]) -> list[tuple[str, str, str, str]]:
    """(ARN, protocol, endpoint, token) of each subscription waiting for its confirmation: the
    token reaches its endpoint in the SubscriptionConfirmation, and the broker's operator reads it
    here (from the store, so only where the data directory can be read)."""
    return [
        (record.subscription_arn, record.protocol, record.endpoint, record.attributes.get(TOKEN, ""))
        for record in store.load_subscriptions()
        if not record.confirmed and (not topics or record.topic in topics)
    ]


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
                replay.send_all, args.host, args.port, messages, None, replay.progress_bar(len(messages)), queues,
                _connection(args),
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
            data_dir = args.data_dir or default_data_dir()
            store = LmdbStore(data_dir, readonly=True)
            try:
                reveal = Revealer(store, default_key_file(data_dir, args.sse_master_key_file))
                total = 0
                for _, record in iter_log(store, log_filter):
                    if record.sealed is not None and not reveal.opens:  # type: ignore[union-attr]
                        replay.as_message(reveal(0, record))  # refused, before anything is sent
                    total += 1
                messages = (replay.as_message(record) for _, record in iter_log(store, log_filter, reveal=reveal))
                count = trio.run(
                    replay.send_all, args.host, args.port, messages, into, replay.progress_bar(total), None, _connection(args)
                )
            finally:
                store.close()
    except (BrokerError, StorageError, OSError, ValueError) as error:
        print(f"\n{error}", file=sys.stderr)
        return 1
    print(f"\nreplayed {count} messages", file=sys.stderr)
    return 0


def _rotate_key(args: argparse.Namespace) -> int:
    data_dir = args.data_dir or default_data_dir()
    path = sse_master_key_path(data_dir, args.sse_master_key_file or os.environ.get("DOVECOTE_SSE_MASTER_KEY_FILE"))
    try:
        if not args.drop_old:
            name = add_master_key(path)
            print(
                f"{path}: new master key {name} first; the old ones stay until the broker has re-wrapped its data keys "
                "(send it SIGHUP, e.g. `systemctl reload dovecote`, or restart it), then `dovecote rotate-key --drop-old`"
            )
            return 0
        master = read_key_file(path)
        needed: set[str] = set()
        if (Path(data_dir) / "lmdb" / "data.mdb").exists():
            store = LmdbStore(data_dir, readonly=True)
            try:
                needed = {row.master_key for row in store.load_data_keys()}
            finally:
                store.close()
        waiting = sorted(needed - {master.current})
        if waiting:
            print(
                f"dovecote: data keys are still wrapped by {', '.join(waiting)}: let the broker re-wrap them first "
                "(SIGHUP or a restart); nothing was changed", file=sys.stderr,
            )
            return EXIT_FAILED
        dropped = keep_only_current(path)
        print(f"{path}: kept {master.current}" + (f", dropped {', '.join(dropped)}" if dropped else ", there was no other key"))
        return 0
    except (StorageError, OSError) as error:
        print(f"dovecote: {error}", file=sys.stderr)
        return EXIT_STORE if isinstance(error, StorageError) else EXIT_DATA_DIR
