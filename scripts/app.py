"""The wiring: open the store, recover the queues, start the writer, the broker and the listeners,
and shut them down in the right order.

Encryption at rest: the store seals and opens with a sealer (storage/sse.py) given the master key
file (`sse_master_key_file`, by default DATA_DIR/sse-master.key, made at first need) and the
policy of actors/sse_policy.py.

SIGHUP, handled by one task (trio gives a signal to its latest receiver only): it reloads the TLS
certificate, its key and the client CA for new connections (open ones keep theirs), then reads the
master key file again and re-wraps, by its first key, data keys wrapped by another (also done at
start), while the broker serves. A reload that fails is logged and changes nothing.

Shutdown (SIGTERM, SIGINT, or `stopping` set): the listeners stop accepting and connections stop
reading; the broker answers long polls and lets every actor finish the requests already in its
mailbox; connections send the last answers and close; the writer commits what is queued; the store
is closed.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import ipaddress
import logging
import os
import resource
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import msgspec
import trio

from dovecote.actors.clock import Clock, system_wall_ms, wall_source_from_environment
from dovecote.actors.broker import Broker
from dovecote.actors.config import BrokerConfig
from dovecote.actors.functions import FunctionSettings
from dovecote.actors.principals import Key, Keyring
from dovecote.actors.recovery import recover
from dovecote.actors.signing import CERTIFICATE_PATH, Signer
from dovecote.actors.shovel_core import RemoteConfig, ShovelConfig
from dovecote.actors.sse_policy import key_policy
from dovecote.net.audit import Audit
from dovecote.net.aws_gateway import AwsGateway, refusal as aws_refusal
from dovecote.net.broker_endpoints import METRICS_MAX_QUEUES, METRICS_MAX_TOPICS, BrokerEndpoints
from dovecote.net.frames import DEFAULT_PORT  # not the client's: the broker loads no client (nor AnyIO)
from dovecote.actors.limits import PUSH_MAX_IN_FLIGHT, PUSH_MAX_RESPONSE_BYTES, PUSH_TIMEOUT_S
from dovecote.net.http_auth import EndpointAuthenticator
from dovecote.net.http_push import Pusher, SmtpRelay
from dovecote.net.mobile_sink import MobileSink
from dovecote.net.http_server import HttpServer
from dovecote.net.lambda_runtime import ProcessRunner
from dovecote.net.limits import ConnectionBudget, ConnectionCounts, NetLimits, connection_budget
from dovecote.net.sigv4 import SigV4Verifier
from dovecote.net.tcp_server import NativeServer
from dovecote.net.tls import ServerTls, TlsError, TlsSettings
from dovecote.storage.lmdb_store import LmdbStore
from dovecote.storage.private import PRIVATE_FILE_MODE, tighten, write_private
from dovecote.storage.sse import KEY_FILE_NAME, KeyFile, KeyUnavailable, Sealer
from dovecote.storage.store import StorageError
from dovecote.storage.writer import LogWriter

log = logging.getLogger("dovecote")


def default_data_dir() -> Path:
    """$DOVECOTE_DATA_DIR, else the XDG state directory (~/.local/state/dovecote)."""
    if "DOVECOTE_DATA_DIR" in os.environ:
        return Path(os.environ["DOVECOTE_DATA_DIR"])
    return state_directory()


def sse_master_key_path(data_dir: str | os.PathLike[str], configured: str | None = None) -> Path:
    """The master key file of encryption at rest: the one configured, else the data directory's."""
    return Path(configured) if configured else Path(data_dir) / KEY_FILE_NAME


def state_directory() -> Path:
    """dovecote's directory in the XDG state directory (~/.local/state/dovecote)."""
    state_home = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state_home) / "dovecote"


class ListenerError(Exception):
    """A listener could not take its address: the port is in use, privileged, or the host is not
    one of this machine's addresses."""


class AnonymousOffLoopback(Exception):
    """Asked to listen beyond this machine with no keys configured, and not told that anonymous
    access is meant (Mosquitto's rule): one line saying so."""


FUNCTIONS_DIR = "functions"  # in the data directory: Lambda functions' code, unpacked to run


class ServeConfig(msgspec.Struct, frozen=True):
    data_dir: str
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    http_port: int = 7481
    public_url: str | None = None
    sync_mode: str = "full"
    history_hours: float = 24.0
    max_data_bytes: int = 64 << 30
    reserve_bytes: int = 16 << 20
    resume_free_bytes: int = 16 << 20
    salvage: bool = False
    access_keys: dict[str, str] = {}  # access key id -> secret; empty: signatures are not checked
    broker: BrokerConfig = BrokerConfig()
    limits: NetLimits = NetLimits()
    smtp: SmtpRelay | None = None  # None: email subscriptions are refused
    mobile_sink: MobileSink | None = None  # None: sms and application subscriptions are refused
    push_timeout_s: float = PUSH_TIMEOUT_S
    push_max_in_flight: int = PUSH_MAX_IN_FLIGHT
    push_max_response_bytes: int = PUSH_MAX_RESPONSE_BYTES
    push_verify: bool | str = True  # HTTPS endpoints' certificates: certifi's CAs, a CA bundle file, or unchecked
    metrics_max_queues: int = METRICS_MAX_QUEUES  # with series of their own in /metrics; the rest are added up
    metrics_max_topics: int = METRICS_MAX_TOPICS
    keys: tuple[Key, ...] = ()  # keys with permissions (the configuration file's), beside access_keys
    allow_anonymous: bool = False  # serve a host other than loopback without access keys
    sse_master_key_file: str | None = None  # None: DATA_DIR/sse-master.key
    tls: TlsSettings | None = None  # None: both listeners speak plain TCP
    remotes: tuple[RemoteConfig, ...] = ()  # the SQS/SNS endpoints shovels link to
    shovels: tuple[ShovelConfig, ...] = ()
    commit_delay_ms: float = 0.0  # how long the writer may wait to gather more work into a commit
    functions: FunctionSettings = FunctionSettings()  # how Lambda functions run


class Ports(NamedTuple):
    native: int
    http: int


async def run_broker(
    config: ServeConfig,
    *,
    stopping: trio.Event | None = None,
    handle_signals: bool = False,
    wall_follows_loop: bool = False,
    task_status: trio.TaskStatus[Ports] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the broker until `stopping` is set (or a signal arrives). wall_follows_loop: the wall
    clock is the system's time at start moved by the Trio loop's clock alone, so a test that jumps
    the loop's clock moves the broker's timestamps with its deadlines (otherwise the system's clock
    is read, and its steps absorbed). Raises TlsError when the TLS
    files cannot be loaded and AnonymousOffLoopback when asked to serve another machine with no keys
    (both before anything is opened), StorageDamaged, DataDirectoryInUse, DataDirectoryUnusable or
    StorageError (KeyUnavailable: the master key file of encryption at rest cannot be used) when the
    store cannot be served, and ListenerError when a port cannot be listened on (from inside the
    nurseries' exception groups)."""
    stopping = stopping if stopping is not None else trio.Event()
    started = time.perf_counter()
    refusal = anonymous_exposure(config)
    if refusal is not None:
        raise AnonymousOffLoopback(refusal)
    server_tls = ServerTls(config.tls) if config.tls is not None else None
    budget = descriptor_budget(config)
    counts = ConnectionCounts(budget.max_connections, budget.max_connections_per_peer)
    if server_tls is not None and config.public_url and config.public_url.lower().startswith("http://"):
        log.warning("the HTTP port speaks TLS but public_url %s is http://: URLs handed out will not reach it", config.public_url)
    keyring = Keyring(config.access_keys, config.keys)
    # With keys, topics deliver into a queue only if its policy lets them (actors/authorization.py).
    broker_config = msgspec.structs.replace(config.broker, authentication=bool(keyring))
    store = LmdbStore(
        config.data_dir,
        sync_mode=config.sync_mode,
        max_map_bytes=config.max_data_bytes,
        reserve_bytes=config.reserve_bytes,
    )
    http_listeners: list[trio.SocketListener] = []
    try:
        # The HTTP port is bound before the broker is built, so that the URLs its topics hand out
        # (SubscribeURL, UnsubscribeURL, SigningCertURL) name it even when it was chosen by binding port 0.
        with _listening_as("HTTP", config.host, config.http_port):
            http_listeners = await trio.open_tcp_listeners(config.http_port, host=config.host)
        http_port = http_listeners[0].socket.getsockname()[1]
        if config.http_port == 0 and config.public_url is None:
            broker_config = msgspec.structs.replace(broker_config, http_url=_base_url(config, http_port))
        clock = Clock(None, system_wall_ms()) if wall_follows_loop else Clock(wall_source_from_environment())
        signing_files = SigningFiles(Path(config.data_dir))
        signer = Signer(signing_files.key_pem, broker_config.http_url.rstrip("/") + CERTIFICATE_PATH)
        pusher = Pusher(
            config.smtp, timeout_s=config.push_timeout_s, max_in_flight=config.push_max_in_flight, verify=config.push_verify,
            max_response_bytes=config.push_max_response_bytes, sink=config.mobile_sink,
        )
        cores, report = recover(store, broker_config, clock, salvage=config.salvage, signer=signer, push_protocols=pusher.protocols)
        key_file = KeyFile(sse_master_key_path(config.data_dir, config.sse_master_key_file))
        if not config.sse_master_key_file:  # the data directory's own, private as its other files
            tighten(key_file.path, PRIVATE_FILE_MODE)
        if key_file.path.exists():
            key_file.keys(may_create=False)  # a key file that cannot be used stops the start, not the first encrypted send
        sealer = Sealer(key_file, key_policy)
        store.attach_sealer(sealer)
        writer = LogWriter(
            store,
            wall_ms=clock.wall_ms,
            wall_steps_ms=clock.steps_ms,
            history_ms=int(config.history_hours * 3600 * 1000),
            commit_delay_s=config.commit_delay_ms / 1000,
            resume_free_bytes=config.resume_free_bytes,
        )
        async with trio.open_nursery() as storage_nursery:
            await storage_nursery.start(writer.run)
            await rewrap_data_keys(sealer, writer, clock)
            broker = Broker(
                store, writer, clock, broker_config, cores, signer, pusher, ProcessRunner(), str(Path(config.data_dir) / FUNCTIONS_DIR),
                config.functions,
            )
            pusher.serve_functions(broker.functions)  # lambda subscriptions
            async with trio.open_nursery() as broker_nursery:
                await broker_nursery.start(broker.run)
                async with trio.open_nursery() as net_nursery:
                    if handle_signals:
                        net_nursery.start_soon(_stop_on_signal, stopping)
                        net_nursery.start_soon(_reload_on_sighup, server_tls, sealer, writer, clock, stopping)
                    verifier = SigV4Verifier(keyring) if keyring else None
                    audit = Audit()
                    scheme = "https" if server_tls is not None else "http"
                    shovels = _shovels(config)
                    endpoints = BrokerEndpoints(
                        writer, broker, signing_files.certificate_pem, data_dir=config.data_dir,
                        metrics_max_queues=config.metrics_max_queues, metrics_max_topics=config.metrics_max_topics,
                        authenticator=EndpointAuthenticator(keyring, verifier) if verifier is not None else None,
                        audit=audit, shovel_statistics=shovels.statistics if shovels is not None else None,
                    )
                    http = HttpServer(
                        lambda peer: AwsGateway(
                            broker, config.broker.account_id, config.public_url, endpoints.handle, verifier, audit, peer, scheme
                        ).handle,
                        config.limits,
                        stopping,
                        counts,
                        server_tls,
                        keyring,
                        aws_refusal,
                    )
                    await net_nursery.start(http.serve_listeners, http_listeners)
                    native = NativeServer(
                        broker, config.limits, stopping, _queue_urls(config, http_port), counts, keyring, server_tls, audit
                    )
                    native_port = await _listen(net_nursery, native.serve, "native", config.host, config.port)
                    log.info(
                        "dovecote serving %s: native %s:%d, %s %s:%d; recovered %d queues, %d messages in %.0f ms",
                        config.data_dir,
                        config.host,
                        native_port,
                        scheme,
                        config.host,
                        http_port,
                        report.queues,
                        report.messages,
                        (time.perf_counter() - started) * 1000,
                    )
                    _log_budget(config, budget)  # once serving: a start that fails says one line
                    async with trio.open_nursery() as shovel_nursery:
                        if shovels is not None:
                            await shovel_nursery.start(shovels.run, broker.session(), writer, clock)
                        task_status.started(Ports(native_port, http_port))
                        await stopping.wait()
                        log.info("shutting down")
                        shovel_nursery.cancel_scope.cancel()  # before the broker stops: they are its clients
                    broker.stop()
            writer.close()
    finally:
        _close(http_listeners)
        store.close()
    log.info("stopped")


def _close(listeners: list[trio.SocketListener]) -> None:
    for listener in listeners:
        listener.socket.close()


def sole_error(error: BaseException) -> BaseException:
    """The one error a failed start comes down to, out of the nurseries' groups around it."""
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error


def _shovels(config: ServeConfig):
    """The configured shovels, or None (and httpx is not imported for them)."""
    if not config.shovels:
        return None
    from dovecote.actors.shovel_core import check_shovels
    from dovecote.net.shovel import Shovels

    routes = check_shovels(config.shovels, {remote.name: remote for remote in config.remotes})
    return Shovels(config.shovels, routes, config.remotes)


def descriptor_budget(config: ServeConfig) -> ConnectionBudget:
    """The connection limits of both listeners, sized from this process's file-descriptor limit.
    Raises ListenerError when that limit leaves no room for connections."""
    descriptors = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if descriptors == resource.RLIM_INFINITY:
        descriptors = os.sysconf("SC_OPEN_MAX")
    try:
        return connection_budget(config.limits, descriptors, config.push_max_in_flight)
    except ValueError as error:
        raise ListenerError(str(error)) from None


def _log_budget(config: ServeConfig, budget: ConnectionBudget) -> None:
    if budget.capped:
        log.warning(
            "max_connections %d is more than RLIMIT_NOFILE %d allows; serving at most %d",
            config.limits.max_connections, budget.descriptors, budget.max_connections,
        )
    log.info(
        "connections: at most %d, %d per peer address (RLIMIT_NOFILE %d, %d descriptors kept for the store and pushes)",
        budget.max_connections, budget.max_connections_per_peer, budget.descriptors, budget.kept_back,
    )


async def _listen(nursery: trio.Nursery, serve, name: str, host: str, port: int) -> int:
    """Start a listener; its port, or ListenerError naming it."""
    with _listening_as(name, host, port):
        return await nursery.start(serve, host, port)


@contextlib.contextmanager
def _listening_as(name: str, host: str, port: int) -> Iterator[None]:
    """A failure to listen, as ListenerError naming the port."""
    try:
        yield
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            raise ListenerError(f"the {name} port {host}:{port} is already in use") from None
        raise ListenerError(f"cannot listen on the {name} port {host}:{port}: {error.strerror or error}") from None


def _base_url(config: ServeConfig, http_port: int) -> str:
    """The HTTP port as clients reach it: public_url, else the listening address."""
    return config.public_url or f"{'https' if config.tls is not None else 'http'}://{config.host}:{http_port}"


def _queue_urls(config: ServeConfig, http_port: int):
    prefix = f"{_base_url(config, http_port).rstrip('/')}/{config.broker.account_id}/"
    return lambda name: prefix + name


def is_loopback(host: str) -> bool:
    """Whether listening on `host` serves this machine only: 127.0.0.0/8, ::1 (also as
    ::ffff:127.x.y.z) or the name localhost. Any other name, and the wildcards 0.0.0.0, :: and "",
    count as the network."""
    if host.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def anonymous_exposure(config: ServeConfig) -> str | None:
    """Why serving `config` is refused (one line), or None: a host other than loopback needs keys
    (or client certificates that every connection must show), unless allow_anonymous says anonymous
    access is meant."""
    if is_loopback(config.host) or config.access_keys or config.keys or config.allow_anonymous or _mtls_required(config):
        return None
    return (
        f"refusing to listen on {config.host or 'every address'} without access keys: anyone who can reach it could read, "
        "send and delete every message; give keys (access_key in the configuration file, or --access-key ID:SECRET), "
        "require client certificates (--tls-client-ca), or --allow-anonymous to serve it anyway"
    )


def _mtls_required(config: ServeConfig) -> bool:
    tls = config.tls
    return tls is not None and tls.client_ca_file is not None and tls.client_auth == "required"


class SigningFiles:
    """The SNS signing key and its self-signed certificate, kept in the data directory, mode 0600
    (tightened at start if they are more open). Made when first needed (the first signed message,
    or a fetch of the certificate), not at start: making an RSA key costs a fifth of a first start.
    Used from the event loop's thread only."""

    def __init__(self, data_dir: Path) -> None:
        self._key_file = data_dir / "sns-signing-key.pem"
        self._certificate_file = data_dir / "sns-signing-cert.pem"
        for path in (self._key_file, self._certificate_file):
            tighten(path, PRIVATE_FILE_MODE)

    def key_pem(self) -> bytes:
        self._make_if_missing()
        return self._key_file.read_bytes()

    def certificate_pem(self) -> bytes:
        self._make_if_missing()
        return self._certificate_file.read_bytes()

    def _make_if_missing(self) -> None:
        if self._key_file.exists() and self._certificate_file.exists():
            return
        from dovecote.actors.certificates import new_key_and_certificate

        key_pem, certificate_pem = new_key_and_certificate("dovecote SNS", datetime.datetime.now(datetime.UTC))
        write_private(self._key_file, key_pem)
        write_private(self._certificate_file, certificate_pem)


async def rewrap_data_keys(sealer: Sealer, writer: LogWriter, clock: Clock) -> int:
    """Commit a re-wrapping, by the master key file's first key, of every data key wrapped by
    another; returns how many. Raises StorageError when the commit fails."""
    rewrapped = 0
    while records := sealer.rewrap_records(clock.wall_ms()):
        await writer.append(records)
        rewrapped += len(records)
    if rewrapped:
        master = sealer.master_keys()
        assert master is not None
        in_use = sealer.fingerprints_in_use()
        old = [name for name in master.fingerprints[1:] if name not in in_use]
        log.warning(
            "encryption at rest: %d data keys re-wrapped by master key %s%s", rewrapped, master.current,
            f"; {', '.join(old)} wrap no data key now and may leave the key file (dovecote rotate-key --drop-old)" if old else "",
        )
    return rewrapped


async def reload_master_keys(sealer: Sealer, writer: LogWriter, clock: Clock) -> None:
    """Read the master key file again and re-wrap the data keys by its first key; a file that
    cannot be used is logged, and the keys read before stay in use."""
    try:
        master = sealer.reload_master_keys()
    except KeyUnavailable as error:
        log.error("encryption at rest: the master key file was not reloaded: %s", error)
        return
    if master is None:
        return  # encryption at rest was never used: no key file to read
    log.warning("encryption at rest: master key file reloaded; new data keys are wrapped by %s", master.current)
    try:
        await rewrap_data_keys(sealer, writer, clock)
    except StorageError as error:
        log.error("encryption at rest: re-wrapping the data keys failed (a reload tries again): %s", error)


async def _stop_on_signal(stopping: trio.Event) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for _ in signals:
            stopping.set()
            return


async def _reload_on_sighup(
    server_tls: ServerTls | None, sealer: Sealer, writer: LogWriter, clock: Clock, stopping: trio.Event
) -> None:
    """Until stopping: on each SIGHUP, read the TLS files again (for the connections that open from
    now on), then the master key file of encryption at rest. One task for both: trio hands a signal
    to its latest receiver only."""

    async def reload_each(signals) -> None:
        async for _ in signals:
            if server_tls is not None:
                try:
                    server_tls.reload()
                except TlsError as error:
                    log.error("SIGHUP: %s; still serving the certificate loaded before", error)
                else:
                    log.info("SIGHUP: reloaded the TLS certificate %s for new connections", server_tls.settings.certificate_file)
            await reload_master_keys(sealer, writer, clock)

    with trio.open_signal_receiver(signal.SIGHUP) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(reload_each, signals)
            await stopping.wait()
            nursery.cancel_scope.cancel()
