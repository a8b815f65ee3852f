"""`dovecote serve`'s settings, in one table.

Each setting has a key, a type, a default, a one-line explanation and a place in ServeConfig. The
table makes serve's flags (and `dovecote config`'s), reads the TOML file and the environment, and
prints `dovecote config`; no default is written anywhere else: where a setting lands in a config
struct, its default is read off that struct.

The key is the flag's name with underscores: `--http-port`, `http_port = 7481` in the file,
`DOVECOTE_HTTP_PORT` in the environment. Sources, each overriding the one before: the defaults, the
file given with `--config`, the environment, the command line's flags. A list given by a later
source replaces the earlier one's.

One setting is a list of tables, and only the file gives it: `[[key]]`, the keys with permissions.
Each names the file or the variable its secret is read from when serve starts, never the secret
itself (a command line shows in `ps`, and `dovecote config` prints what the file says).
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import shlex
import textwrap
import tomllib
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import msgspec

from dovecote.actors import authorization
from dovecote.actors.config import BrokerConfig
from dovecote.actors.functions import MAX_FUNCTION_INSTANCES, FunctionSettings
from dovecote.actors.principals import Key
from dovecote.net.http_push import SmtpRelay
from dovecote.net.limits import NetLimits
from dovecote.net.mobile_sink import MobileSink
from dovecote.net.tls import CLIENT_AUTH_MODES, TlsSettings

from .app import ServeConfig, state_directory
from .secret_files import SecretUnavailable, read_secret
from .shovel_config import ConfigProblem, check_links, read_remotes, read_secrets, read_shovels, render_remotes, render_shovels
from .toml_text import toml_key, toml_value

ENV_PREFIX = "DOVECOTE_"
FROM_FIELD = object()  # the default of the setting's field, read off its config struct
DEFAULT = "default"  # the source of a setting no file, variable or flag gave
TRUE_WORDS = ("true", "1", "yes", "on")
FALSE_WORDS = ("false", "0", "no", "off")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS = ("text", "json")


MAX_COMMIT_DELAY_MS = 1000  # a wait past that is a mistake: every lone request would pay it


class ConfigError(Exception):
    """A configuration file or environment variable that cannot be used: one line saying where."""


class Tables(NamedTuple):
    """How a setting given as tables (the file only) is read from the file and printed by `dovecote
    config`. read(value, path, text) raises ConfigError naming the file and the line."""

    read: Callable[[object, str, str], tuple]
    render: Callable[[Sequence, str], list[str]]


class Setting(NamedTuple):
    key: str  # the flag's name with underscores
    kind: type  # str, int, float, bool, tuple (of strings; a repeatable flag), or list (of tables: the file only)
    explanation: str  # one line: what it does, and what it risks
    field: str = ""  # where it lands in ServeConfig ("http_port", "broker.region", "smtp.port"); "": nowhere
    default: object = FROM_FIELD  # FROM_FIELD, a value (None: unset), or a function giving one
    to_field: Callable[[object], object] | None = None  # the setting's value -> the field's, if they differ
    choices: tuple[str, ...] = ()  # matched without regard to case
    unset: str = ""  # an optional setting: what leaving it unset means
    flag: bool = True  # False: the file and the environment only (command lines show in `ps`)
    secret: bool = False  # `dovecote config` says whether it is set, never what it is
    metavar: str | None = None
    tables: Tables | None = None  # a list of tables (kind list): how the file's tables are read and printed

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.key.upper()

    @property
    def option(self) -> str:
        return "--" + self.key.replace("_", "-")


def _access_keys(pairs: Sequence[str]) -> dict[str, str]:
    return dict(pair.partition(":")[::2] for pair in pairs)


# --- keys with permissions ([[key]] tables) ----------------------------------------------------------
KEY_ID = re.compile(r"[A-Za-z0-9_.+=@-]{1,128}")
KEY_FIELDS = ("id", "secret_file", "secret_env", "account", "statement")


class KeySpec(NamedTuple):
    """A [[key]] table as the file gives it: where its secret is, not the secret."""

    key_id: str
    secret_file: str  # an absolute path ("" when secret_env names the secret)
    secret_env: str
    account_id: str
    statements: tuple[dict, ...]  # as written, for `dovecote config` to print
    permissions: authorization.Permissions  # parsed, so a mistake stops the file's reading, naming it


def _key_spec(table: object, base: str) -> KeySpec:
    """One [[key]] table; base: the directory a relative secret_file is read from (the file's)."""
    if not isinstance(table, dict):
        raise ValueError("each key is a table ([[key]]) with an id, and secret_file or secret_env")
    fields = dict(table)
    if "statements" in fields:
        if "statement" in fields:
            raise ValueError("statement or statements, not both")
        fields["statement"] = fields.pop("statements")
    unknown = sorted(set(fields) - set(KEY_FIELDS))
    if unknown:
        raise ValueError(f"unknown field {unknown[0]!r} (a key has {', '.join(KEY_FIELDS)})")
    key_id = fields.get("id")
    if not isinstance(key_id, str) or not KEY_ID.fullmatch(key_id):
        raise ValueError("id must be 1 to 128 letters, digits or _.+=@-")
    what = f"key {key_id}"
    sources = [name for name in ("secret_file", "secret_env") if name in fields]
    if len(sources) != 1:
        raise ValueError(f"{what}: give secret_file or secret_env (the secret itself is never written here)")
    source = fields[sources[0]]
    if not isinstance(source, str) or not source:
        raise ValueError(f"{what}: {sources[0]} must be a non-empty string")
    account = fields.get("account", "")
    if not isinstance(account, str) or (account and not re.fullmatch(r"\d{12}", account)):
        raise ValueError(f"{what}: account must be a 12-digit account id")
    statements = fields.get("statement", [])
    statements = statements if isinstance(statements, list) else [statements]
    try:
        permissions = authorization.parse_statements(statements)
    except authorization.PolicyError as error:
        raise ValueError(f"{what}: {error}") from None
    secret_file = os.path.join(base, source) if sources[0] == "secret_file" else ""
    return KeySpec(key_id, secret_file, source if sources[0] == "secret_env" else "", account, tuple(statements), permissions)


def read_keys(specs: Sequence[KeySpec], environ: Mapping[str, str] | None = None) -> tuple[Key, ...]:
    """The keys, with their secrets read from their files and variables (when serve starts).
    Raises ConfigError naming the key whose secret cannot be had."""
    environ = os.environ if environ is None else environ
    keys = []
    for spec in specs:
        try:
            secret = read_secret(spec.secret_env, spec.secret_file, environ)
        except SecretUnavailable as error:
            raise ConfigError(f"key {spec.key_id}: {error}") from None
        keys.append(Key(spec.key_id, secret, spec.permissions, spec.account_id))
    return tuple(keys)


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "data_dir", str, "where the store lives (the log, the state tables, the lock, the SNS signing key); one broker a directory",
        "data_dir", default=lambda: str(state_directory()), metavar="DIR",
    ),
    Setting(
        "host", str, "the address both listeners bind: 127.0.0.1 serves this machine only, 0.0.0.0 every interface "
        "(any address but loopback needs access keys, or allow_anonymous)", "host",
    ),
    Setting("port", int, "the native protocol's TCP port (0: any free one)", "port", metavar="PORT"),
    Setting("http_port", int, "the AWS API's port (SQS JSON and Query, SNS Query) and /health, /metrics, /actors, /peek", "http_port", metavar="PORT"),
    Setting(
        "public_url", str, "the base of returned queue URLs and of the URLs sent to push endpoints (SubscribeURL, SigningCertURL)",
        "public_url", unset="http://HOST:HTTP_PORT, https:// with TLS", metavar="URL",
    ),
    Setting(
        "tls_cert", str, "PEM certificate (then its intermediate CAs) both listeners serve TLS with; read again on SIGHUP "
        "for new connections", "tls.certificate_file", default=None, unset="no TLS: both ports speak plain TCP", metavar="FILE",
    ),
    Setting(
        "tls_key", str, "PEM private key of tls_cert (unencrypted; keep it 0600); read again on SIGHUP", "tls.key_file",
        default=None, unset="no TLS", metavar="FILE",
    ),
    Setting(
        "tls_client_ca", str, "PEM CAs that client certificates (mTLS) must chain to; a client certificate whose subject "
        "common name is an access key's id acts as that key", "tls.client_ca_file", default=None,
        unset="no client certificates asked for", metavar="FILE",
    ),
    Setting(
        "tls_client_auth", str, "with tls_client_ca: required refuses clients without a certificate the CA signed; "
        "optional lets those without one in (to prove a key instead, if the broker has keys)", "tls.client_auth", choices=CLIENT_AUTH_MODES,
    ),
    Setting(
        "sync", str, "full: fsync every commit, nothing acknowledged is lost on power loss; os: the OS flushes later, "
        "a power loss may lose the last seconds of acknowledged work (a broker crash loses nothing)",
        "sync_mode", choices=("full", "os"),
    ),
    Setting(
        "commit_delay_ms", float, "how long a commit may wait for more work to share it (0 to 1000 ms): fewer, fuller "
        "commits (fewer bytes written to flash) for that much more latency per request; nothing is acknowledged sooner",
        "commit_delay_ms", metavar="MS",
    ),
    Setting(
        "history_hours", float, "how long log records stay readable (dovecote log, replay) after what they describe is gone; "
        "live messages are never trimmed", "history_hours", metavar="HOURS",
    ),
    Setting(
        "max_data_bytes", int, "the most the LMDB map may grow to; past it, sends are refused with a retryable error",
        "max_data_bytes", metavar="BYTES",
    ),
    Setting(
        "reserve_bytes", int, "disk held back and given up when the disk fills, so receives and deletes go on while sends are refused",
        "reserve_bytes", metavar="BYTES",
    ),
    Setting(
        "resume_free_bytes", int, "once sends are refused for a full disk or map, the room that must be free again "
        "(beyond the reserve) before they are accepted: a margin, so a store at its limit does not flip back and forth",
        "resume_free_bytes", metavar="BYTES",
    ),
    Setting(
        "salvage", bool, "serve what is intact if stored data is damaged, dropping the damaged values and logging them "
        "(false: refuse to start, naming the damage)", "salvage",
    ),
    Setting(
        "access_key", tuple, "ID:SECRET keys the AWS API checks Signature V4 against; flags are "
        "repeated, $DOVECOTE_ACCESS_KEY takes a comma-separated list", "access_keys", default=(), to_field=_access_keys,
        unset="signatures are not checked", secret=True, metavar="ID:SECRET",
    ),
    Setting(
        "key", list, "keys with permissions, as [[key]] tables: id, secret_file or secret_env (where the secret is read "
        "from when serve starts; never the secret itself), account (if not this broker's), and statement, a list of "
        "IAM statements (Effect, Action, Resource, ...) saying what the key may do", "keys", default=(), flag=False,
        to_field=read_keys, unset="only --access-key keys, which may do everything",
        tables=Tables(lambda value, path, text: _key_specs(value, path, text), lambda specs, source: _key_tables(specs, source)),
    ),
    Setting(
        "remote", list, "SQS/SNS endpoints shovels link to, as [remote.NAME] tables: endpoint_url, region, access_key_id, "
        "and secret_access_key_env or secret_access_key_file (where the secret is read from when serve starts); "
        "verify (an https endpoint's certificate: true, false, or a CA bundle file) and timeout_s", "remotes",
        default=(), flag=False, to_field=read_secrets, unset="none", tables=Tables(read_remotes, render_remotes),
    ),
    Setting(
        "shovel", list, "links carrying messages between a local queue and a remote queue or topic, as [[shovel]] "
        "tables: name, from, to (a local queue's name, or REMOTE:QUEUE_URL or REMOTE:TOPIC_ARN), batch_size, max_rate "
        "(messages a second, 0: no cap), visibility_timeout_s, wait_time_s, backoff_initial_s, backoff_max_s, group_id",
        "shovels", default=(), flag=False, unset="none", tables=Tables(read_shovels, render_shovels),
    ),
    Setting(
        "allow_anonymous", bool, "serve a host other than loopback without access keys: anyone who can reach the ports "
        "may read, send and delete every message (false: such a start is refused, saying why)", "allow_anonymous",
    ),
    Setting(
        "max_connections", int, "connections both ports hold at once, at most; beyond, new ones are closed at once; never "
        "more than the file-descriptor limit (ulimit -n) allows, leaving room for the store and pushes",
        "limits.max_connections", unset="sized from the file-descriptor limit, logged at start", metavar="N",
    ),
    Setting(
        "max_connections_per_peer", int, "connections one client address may hold at once, so one flood cannot lock "
        "out the others", "limits.max_connections_per_peer", unset="a quarter of max_connections", metavar="N",
    ),
    Setting(
        "reserved_descriptors", int, "file descriptors never given to connections, for the store, logs and TLS files "
        "(pushes in flight are kept apart as well, up to a quarter of the limit)", "limits.reserved_descriptors", metavar="N",
    ),
    Setting(
        "http_read_timeout", float, "seconds a whole HTTP request (head and body) has from its first byte, and a "
        "connection's first request from its opening; a slower one gets a 408 and is closed",
        "limits.http_read_timeout_s", metavar="SECONDS",
    ),
    Setting(
        "http_keepalive_timeout", float, "seconds an HTTP connection may wait idle between requests",
        "limits.http_keepalive_timeout_s", metavar="SECONDS",
    ),
    Setting(
        "frame_timeout", float, "seconds a native frame has, from its first byte, to arrive whole; a slower one gets an "
        "error frame and the connection is closed", "limits.frame_timeout_s", metavar="SECONDS",
    ),
    Setting(
        "handshake_timeout", float, "seconds a native connection has to open (TLS, handshake, the key's proof)",
        "limits.handshake_timeout_s", metavar="SECONDS",
    ),
    Setting(
        "idle_timeout", float, "seconds a native connection with nothing in flight may send nothing before it is closed",
        "limits.idle_timeout_s", metavar="SECONDS",
    ),
    Setting(
        "write_timeout", float, "seconds a client on either port has to take an answer's bytes; one that does not read "
        "is closed", "limits.write_timeout_s", metavar="SECONDS",
    ),
    Setting(
        "accept_retry_max_pause", float, "the longest pause before retrying a failed accept (out of descriptors or "
        "memory); the pause doubles up to it", "limits.accept_retry_max_pause_s", metavar="SECONDS",
    ),
    Setting(
        "accept_log_interval", float, "failed accepts and connections refused at a limit are logged at most once per "
        "this many seconds per port, with how many there were", "limits.accept_log_interval_s", metavar="SECONDS",
    ),
    Setting("account_id", str, "the one account this broker hosts, in ARNs and queue URLs", "broker.account_id", metavar="ID"),
    Setting("region", str, "the region of requests that name none", "broker.region"),
    Setting(
        "unsigned_sqs_envelopes", bool, "deliver SNS envelopes to queues without Signature and SigningCertURL (an RSA "
        "signature per publish is most of a publish's cost)", "broker.sign_sqs_envelopes",
        default=lambda: not _field_default("broker.sign_sqs_envelopes"), to_field=lambda unsigned: not unsigned,
    ),
    Setting(
        "function_python", str, "the interpreter of python3.x Lambda functions: a name on PATH or a path (the broker "
        "carries no Python for them)", "functions.python", metavar="PYTHON",
    ),
    Setting(
        "function_max_instances", int, "processes a Lambda function runs at once, at most (1 to 1000; its "
        "ReservedConcurrentExecutions may say fewer)", "functions.max_instances", metavar="N",
    ),
    Setting(
        "function_max_waiting_bytes", int, "payload bytes of the invocations a Lambda function holds, waiting or "
        "running; beyond, invocations are refused (TooManyRequestsException), so memory stays bounded",
        "functions.max_waiting_bytes", metavar="BYTES",
    ),
    Setting("push_timeout", float, "seconds an HTTP/S push attempt may take before it fails and is retried", "push_timeout_s", metavar="SECONDS"),
    Setting(
        "push_max_pending", int, "pending pushes a subscription may have; beyond, new ones are dropped and recorded, "
        "so memory stays bounded while an endpoint is down", "broker.max_pending_pushes", metavar="N",
    ),
    Setting(
        "push_in_flight", int, "HTTP/S push requests (and mobile sink commands) at once, at most, over all subscriptions",
        "push_max_in_flight", metavar="N",
    ),
    Setting(
        "push_max_response_bytes", int, "of an endpoint's answer's body, read (only its status counts); beyond, its "
        "connection is dropped", "push_max_response_bytes", metavar="BYTES",
    ),
    Setting(
        "push_ca", str, "CA bundle HTTPS endpoints' certificates are checked against", "push_verify", default=None,
        to_field=lambda bundle: bundle or True, unset="certifi's, as httpx uses", metavar="FILE",
    ),
    Setting(
        "smtp_host", str, "SMTP relay for email and email-json subscriptions", "smtp.host", default=None,
        unset="email subscriptions are refused", metavar="HOST",
    ),
    Setting("smtp_port", int, "the relay's port", "smtp.port", metavar="PORT"),
    Setting("smtp_starttls", bool, "upgrade the relay connection with STARTTLS", "smtp.starttls"),
    Setting("smtp_user", str, "relay login (empty: none)", "smtp.username", metavar="USER"),
    Setting(
        "smtp_password", str, "relay password: in the file or $DOVECOTE_SMTP_PASSWORD, not a flag (command lines show in ps)",
        "smtp.password", flag=False, secret=True,
    ),
    Setting("smtp_from", str, "the sender address of notification mail", "smtp.sender", metavar="ADDRESS"),
    Setting(
        "mobile_sink_url", str, "SMS and mobile push (sms and application subscriptions): an HTTP/S webhook each delivery is "
        "POSTed to as JSON; a 2xx answer delivers it, anything else is retried as HTTP pushes are", "mobile_sink.url",
        default=None, unset="the command's, or sms and application subscriptions are refused", metavar="URL",
    ),
    Setting(
        "mobile_sink_command", str, "SMS and mobile push, instead of the webhook: a command run per delivery, the message on "
        "its stdin, the details in DOVECOTE_* variables; exit 0 delivers it, anything else is retried", "mobile_sink.command",
        default=None, unset="the webhook's, or sms and application subscriptions are refused", metavar="COMMAND",
    ),
    Setting(
        "metrics_max_queues", int, 'queues with series of their own in /metrics (the oldest); the rest are added up as '
        'queue="(other)", so a scrape stays small however many queues there are', "metrics_max_queues", metavar="N",
    ),
    Setting(
        "metrics_max_topics", int, 'topics with series of their own in /metrics (the oldest); the rest are added up as '
        'topic="(other)"', "metrics_max_topics", metavar="N",
    ),
    Setting(
        "sse_master_key_file", str, "encryption at rest (queues with KmsMasterKeyId or SqsManagedSseEnabled=true, topics with "
        "KmsMasterKeyId): the master key file, base64 AES-256 keys one a line, the first wrapping the data keys; made 0600 "
        "with one new key at first need; read again on SIGHUP (dovecote rotate-key). Lost, encrypted messages are lost",
        "sse_master_key_file", default=None, unset="DATA_DIR/sse-master.key", metavar="FILE",
    ),
    Setting("log_level", str, "the least severe log lines written", default="INFO", choices=LOG_LEVELS),
    Setting(
        "log_format", str, "text: lines for people; json: one JSON object a line (time, level, logger, message, and the "
        "queue, topic or subscription it is about)", default="text", choices=LOG_FORMATS,
    ),
)
BY_KEY = {setting.key: setting for setting in SETTINGS}
STRUCTS: dict[str, type[msgspec.Struct]] = {
    "": ServeConfig, "broker": BrokerConfig, "smtp": SmtpRelay, "tls": TlsSettings, "limits": NetLimits,
    "mobile_sink": MobileSink, "functions": FunctionSettings,
}


def _field_default(field: str) -> object:
    struct, _, name = field.rpartition(".")
    return next(info.default for info in msgspec.structs.fields(STRUCTS[struct]) if info.name == name)


def default_of(setting: Setting) -> object:
    """The setting's value when no file, variable or flag gives one."""
    if setting.default is FROM_FIELD:
        return _field_default(setting.field)
    return setting.default() if callable(setting.default) else setting.default


class Resolved(NamedTuple):
    """Every setting's value and where it came from (DEFAULT, the file's path, $VARIABLE, --flag)."""

    values: dict[str, object]
    sources: dict[str, str]


def resolve(flags: Mapping[str, object], config_file: str | None, environ: Mapping[str, str]) -> Resolved:
    """The effective settings: defaults < the file < the environment < flags (those the command line
    gave, as `flags_given` finds them). Raises ConfigError."""
    values = {setting.key: default_of(setting) for setting in SETTINGS}
    sources = dict.fromkeys(values, DEFAULT)
    if config_file is not None:
        for key, value in read_file(config_file).items():
            values[key], sources[key] = value, config_file
    for key, value in read_environment(environ).items():
        values[key], sources[key] = value, "$" + BY_KEY[key].env
    for key, value in flags.items():
        option = BY_KEY[key].option
        values[key], sources[key] = value, option.replace("--", "--no-") if value is False else option
    _check_together(values, sources)
    return Resolved(values, sources)


def _check_together(values: Mapping[str, object], sources: Mapping[str, str]) -> None:
    """Settings that make sense only with others. Raises ConfigError naming where each was set."""
    for key, needs in (("tls_cert", "tls_key"), ("tls_key", "tls_cert"), ("tls_client_ca", "tls_cert")):
        if values[key] is not None and values[needs] is None:
            raise ConfigError(f"{key} (from {sources[key]}) needs {needs} as well")
    try:
        check_links(values["shovel"], values["remote"])
    except ConfigProblem as error:
        raise ConfigError(f"{error} (from {sources['shovel']})") from None


def read_file(path: str) -> dict[str, object]:
    """The settings a TOML file gives. Raises ConfigError naming the file and the line."""
    try:
        with open(path, "rb") as file:
            text = file.read().decode()
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read the configuration file {path}: {getattr(error, 'strerror', None) or error}") from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: {error}") from None
    settings = {}
    for key, value in document.items():
        where = f"{path}:{_line_of(text, key) or '?'}"
        setting = BY_KEY.get(key)
        if setting is None and isinstance(value, dict):
            inside = [name for name in BY_KEY if name.startswith(key + "_")]
            hint = f" (settings are top-level keys: {', '.join(inside)})" if inside else " (settings are top-level keys)"
            raise ConfigError(f"{where}: unknown key {key!r}{hint}")
        if setting is None:
            close = difflib.get_close_matches(key, BY_KEY, n=1)
            raise ConfigError(f"{where}: unknown key {key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        if setting.kind is list:
            try:
                settings[key] = setting.tables.read(value, path, text)  # type: ignore[union-attr]
            except ConfigProblem as error:
                raise ConfigError(str(error)) from None
            continue
        try:
            settings[key] = _checked(setting, _from_toml(setting, value))
        except ValueError as error:
            raise ConfigError(f"{where}: {key}: {error}") from None
    return settings


def _key_specs(value: object, path: str, text: str) -> tuple[KeySpec, ...]:
    """The [[key]] tables of a file, each checked; an error names the line of its table."""
    tables = value if isinstance(value, list) else [value]
    headers = [number for number, line in enumerate(text.splitlines(), 1) if re.match(r"\s*\[\[\s*key\s*\]\]", line)]
    base = os.path.dirname(os.path.abspath(path))
    specs: list[KeySpec] = []
    for index, table in enumerate(tables):
        line = headers[index] if index < len(headers) else _line_of(text, "key") or "?"
        try:
            spec = _key_spec(table, base)
            if any(spec.key_id == other.key_id for other in specs):
                raise ValueError(f"key {spec.key_id} is given twice")
        except ValueError as error:
            raise ConfigError(f"{path}:{line}: key: {error}") from None
        specs.append(spec)
    return tuple(specs)


def read_environment(environ: Mapping[str, str]) -> dict[str, object]:
    """The settings DOVECOTE_<KEY> variables give (other DOVECOTE_ variables are not settings and
    are left alone). Raises ConfigError naming the variable."""
    settings = {}
    for setting in SETTINGS:
        if setting.kind is not list and setting.env in environ:
            try:
                settings[setting.key] = _checked(setting, _from_text(setting, environ[setting.env]))
            except ValueError as error:
                raise ConfigError(f"${setting.env}: {error}") from None
    return settings


def _line_of(text: str, key: str) -> int | None:
    """The line a top-level key or table is set on (tomllib does not say)."""
    name = re.escape(key)
    pattern = re.compile(rf"""\s*\[*\s*(?:{name}|"{name}"|'{name}')\s*[=.\]]""")
    for number, line in enumerate(text.splitlines(), 1):
        if pattern.match(line):
            return number
    return None


_KIND_NAMES = {
    str: "a string", int: "an integer", float: "a number", bool: "true or false", tuple: "a list of strings", list: "tables",
}


def _from_toml(setting: Setting, value: object) -> object:
    kind = setting.kind
    if kind is tuple and isinstance(value, list) and all(isinstance(item, str) for item in value):
        return tuple(value)
    if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if kind is not tuple and isinstance(value, kind) and (kind is bool or not isinstance(value, bool)):
        return value
    raise ValueError(f"expected {_KIND_NAMES[kind]}, not {toml_value(value) if isinstance(value, str | int | float) else type(value).__name__}")


def _from_text(setting: Setting, text: str) -> object:
    """A setting's value from an environment variable."""
    kind = setting.kind
    if kind is bool:
        if text.strip().lower() in TRUE_WORDS:
            return True
        if text.strip().lower() in FALSE_WORDS:
            return False
        raise ValueError(f"expected true or false, not {text!r}")
    if kind is tuple:
        return tuple(item.strip() for item in text.split(",") if item.strip())
    if kind is str:
        return None if text == "" and default_of(setting) is None else text
    try:
        return kind(text)
    except ValueError:
        raise ValueError(f"expected {_KIND_NAMES[kind]}, not {text!r}") from None


def _checked(setting: Setting, value: object) -> object:
    """The value, its choice spelled as the table does; ValueError if it is none of the choices."""
    if setting.choices and value is not None:
        for choice in setting.choices:
            if str(value).lower() == choice.lower():
                return choice
        raise ValueError(f"expected one of {', '.join(setting.choices)}, not {value!r}")
    if setting.key == "commit_delay_ms" and not 0 <= value <= MAX_COMMIT_DELAY_MS:
        raise ValueError(f"expected 0 to {MAX_COMMIT_DELAY_MS} milliseconds, not {value:g}")
    if setting.key == "access_key":
        for number, pair in enumerate(value, 1):
            key_id, _, secret = pair.partition(":")
            if not (key_id and secret):  # not shown: it may be a secret
                raise ValueError(f"each key is ID:SECRET, and key {number} is not")
    return value


# --- the command line --------------------------------------------------------------------------------


def add_flags(parser: argparse.ArgumentParser) -> None:
    """A flag for each setting that has one. Flags not given are left out of the parsed namespace
    (their defaults are the table's, shown in the help), so that they do not hide the file's."""
    parser.add_argument(
        "--config", metavar="FILE", help="read settings from this TOML file: keys are the flags' names with underscores"
    )
    for setting in SETTINGS:
        if not setting.flag:
            continue
        options: dict[str, object] = {"default": argparse.SUPPRESS, "help": _help(setting).replace("%", "%%")}
        if setting.kind is bool:
            options["action"] = argparse.BooleanOptionalAction
        else:
            options["type"] = _flag_type(setting)
            options["metavar"] = setting.metavar or ("{" + ",".join(setting.choices) + "}" if setting.choices else None)
            if setting.kind is tuple:
                options["action"] = "append"
        parser.add_argument(setting.option, dest=setting.key, **options)


def flags_given(args: argparse.Namespace) -> dict[str, object]:
    """The settings the command line gave."""
    given = {setting.key: getattr(args, setting.key) for setting in SETTINGS if hasattr(args, setting.key)}
    return {key: tuple(value) if isinstance(value, list) else value for key, value in given.items()}


def _help(setting: Setting) -> str:
    default = default_of(setting)
    if default is None or default == ():
        shown = f"unset: {setting.unset}" if setting.unset else "unset"
    elif isinstance(default, bool):
        shown = "true" if default else "false"
    elif default == "":
        shown = "empty"
    else:
        shown = str(default)
    return f"{setting.explanation} (default {shown})"


def _flag_type(setting: Setting) -> Callable[[str], object]:
    kind = str if setting.kind is tuple else setting.kind

    def parse(text: str) -> object:
        try:
            value = kind(text)
            return _checked(setting, (value,))[0] if setting.kind is tuple else _checked(setting, value)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error) if kind is str else f"expected {_KIND_NAMES[kind]}, not {text!r}") from None

    return parse


# --- what serve runs with ----------------------------------------------------------------------------


def serve_config(values: Mapping[str, object]) -> ServeConfig:
    """What `dovecote serve` runs with, from resolved settings. The CLI differs from the structs'
    defaults only where it means to: signatures are made in a worker thread, the HTTP URL given to
    the broker is the public URL or http(s)://HOST:HTTP_PORT, without an SMTP host there is no relay,
    and without a certificate there is no TLS. Reads the keys' secrets (from their files and the
    environment); raises ConfigError when one cannot be had."""
    given_twice = {spec.key_id for spec in values["key"]} & set(_access_keys(values["access_key"]))
    if given_twice:
        raise ConfigError(f"the access key {sorted(given_twice)[0]} is given both as --access-key and as a [[key]]")
    fields: dict[str, dict[str, object]] = {struct: {} for struct in STRUCTS}
    for setting in SETTINGS:
        if setting.field:
            struct, _, name = setting.field.rpartition(".")
            value = values[setting.key]
            try:
                fields[struct][name] = setting.to_field(value) if setting.to_field else value
            except ConfigProblem as error:
                raise ConfigError(str(error)) from None
    tls = TlsSettings(**fields["tls"]) if fields["tls"]["certificate_file"] else None
    scheme = "https" if tls is not None else "http"
    http_url = values["public_url"] or f"{scheme}://{values['host']}:{values['http_port']}"
    broker = BrokerConfig(**fields["broker"], http_url=http_url, sign_in_thread=True)
    smtp = SmtpRelay(**fields["smtp"]) if fields["smtp"]["host"] else None
    mobile_sink = _mobile_sink(values["mobile_sink_url"], values["mobile_sink_command"])
    try:
        limits = NetLimits(**fields["limits"])
    except ValueError as error:
        setting = next(setting for setting in SETTINGS if setting.field == "limits." + error.args[1])
        raise ConfigError(f"{setting.key} must be more than 0, not {values[setting.key]}") from None
    if not 1 <= fields["functions"]["max_instances"] <= MAX_FUNCTION_INSTANCES:
        raise ConfigError(f"function_max_instances must be 1 to {MAX_FUNCTION_INSTANCES}, not {fields['functions']['max_instances']}")
    if fields["functions"]["max_waiting_bytes"] < 1:
        raise ConfigError(f"function_max_waiting_bytes must be more than 0, not {fields['functions']['max_waiting_bytes']}")
    functions = FunctionSettings(**fields["functions"])
    return ServeConfig(**fields[""], broker=broker, smtp=smtp, tls=tls, limits=limits, mobile_sink=mobile_sink, functions=functions)


def _mobile_sink(url: str | None, command: str | None) -> MobileSink | None:
    if url and command:
        raise ConfigError("mobile_sink_url and mobile_sink_command are both set: SMS and mobile pushes go to one sink, say which")
    if url and not url.lower().startswith(("http://", "https://")):
        raise ConfigError(f"mobile_sink_url must be an http:// or https:// URL, not {url!r}")
    if command:
        try:
            if not shlex.split(command):
                raise ValueError("it is empty")
        except ValueError as error:
            raise ConfigError(f"mobile_sink_command cannot be split into a command line: {error}") from None
    return MobileSink(url or "", command or "") if url or command else None


# --- `dovecote config` -------------------------------------------------------------------------------


def render(resolved: Resolved, config_file: str | None) -> str:
    """The effective configuration as a TOML file: each setting with its explanation and default,
    those at their default commented out, secrets never shown."""
    omitted = [s.key for s in SETTINGS if s.secret and resolved.sources[s.key] != DEFAULT and resolved.values[s.key]]
    header = (
        "dovecote serve's configuration. Sources, each overriding the one before: the defaults, "
        + (f"the file {config_file}, " if config_file else "a file (none was given), ")
        + "DOVECOTE_<KEY> environment variables, flags; \"from\" says which one set a setting. A setting at its "
        "default is commented out. Saved as a file, this is a start for `dovecote serve --config FILE`."
    )
    if omitted:
        header += f" Secrets are not shown: give {', '.join(omitted)} again (in the file, or in the environment)."
    lines = textwrap.wrap(header, 100, initial_indent="# ", subsequent_indent="# ")
    tables: list[str] = []  # after every other setting: what follows a table header is the table's
    for setting in SETTINGS:
        key, value, source, default = setting.key, resolved.values[setting.key], resolved.sources[setting.key], default_of(setting)
        lines.append("")
        lines.extend(textwrap.wrap(setting.explanation, 100, initial_indent="# ", subsequent_indent="# "))
        unset = f"unset ({setting.unset})" if setting.unset else "unset"
        if setting.kind is list:
            if source == DEFAULT or not value:
                lines.append(f"# {key}: {unset}" + (" by default" if source == DEFAULT else f", by {source}"))
            else:
                lines.append(f"# {key}: {len(value)} {key} tables from {source}, at the end of this file")
                tables.extend(setting.tables.render(value, source))  # type: ignore[union-attr]
            continue
        if source == DEFAULT:
            lines.append(f"# {key}: {unset} by default" if default is None else f"# {key} = {toml_value(default)}  # the default")
            continue
        lines.append(f"# default: {unset if default is None else toml_value(default)}")
        if setting.secret and value and setting.kind is tuple:
            ids = ", ".join(pair.partition(":")[0] for pair in value)
            lines.append(f"# {key}: {len(value)} set by {source}: {ids} (secrets not shown)")
        elif setting.secret and value:
            lines.append(f"# {key}: set by {source} (not shown)")
        elif value is None:
            lines.append(f"# {key}: {unset}, by {source}")
        else:
            lines.append(f"{key} = {toml_value(value)}  # from {source}")
    return "\n".join(lines + tables) + "\n"


def _key_tables(specs: Sequence[KeySpec], source: str) -> list[str]:
    lines = ["", f"# keys with permissions, from {source}; each secret is read from its file or variable when serve starts"]
    for spec in specs:
        lines += ["", "[[key]]", f"id = {toml_value(spec.key_id)}"]
        lines.append(f"secret_file = {toml_value(spec.secret_file)}" if spec.secret_file else f"secret_env = {toml_value(spec.secret_env)}")
        if spec.account_id:
            lines.append(f"account = {toml_value(spec.account_id)}")
        for statement in spec.statements:
            lines += ["", "[[key.statement]]", *(f"{toml_key(name)} = {toml_value(value)}" for name, value in statement.items())]
    return lines
