"""The wiring: open the store, recover the queues, start the writer, the broker and the listeners,
and shut them down in the right order.

SIGHUP reloads the TLS certificate, its key and the client CA for new connections (open ones keep
theirs); a reload that fails is logged and changes nothing.

Shutdown (SIGTERM, SIGINT, or `stopping` set): the listeners stop accepting and connections stop
reading; the broker answers long polls and lets every actor finish the requests already in its
mailbox; connections send the last answers and close; the writer commits what is queued; the store
is closed.
"""

from __future__ import annotations

import datetime
import errno
import logging
import os
import signal
import time
from pathlib import Path
from typing import NamedTuple

import msgspec
import trio

from dovecote.actors.clock import Clock
from dovecote.actors.broker import Broker
from dovecote.actors.config import BrokerConfig
from dovecote.actors.principals import Keyring
from dovecote.actors.recovery import recover
from dovecote.actors.signing import CERTIFICATE_PATH, Signer
from dovecote.net.aws_gateway import AwsGateway
from dovecote.net.broker_endpoints import METRICS_MAX_QUEUES, METRICS_MAX_TOPICS, BrokerEndpoints
from dovecote.net.client import DEFAULT_PORT
from dovecote.actors.limits import PUSH_MAX_IN_FLIGHT, PUSH_TIMEOUT_S
from dovecote.net.http_push import Pusher, SmtpRelay
from dovecote.net.http_server import HttpServer
from dovecote.net.limits import NetLimits
from dovecote.net.sigv4 import SigV4Verifier
from dovecote.net.tcp_server import NativeServer
from dovecote.net.tls import ServerTls, TlsError, TlsSettings
from dovecote.storage.lmdb_store import LmdbStore
from dovecote.storage.writer import LogWriter

log = logging.getLogger("dovecote")


def default_data_dir() -> Path:
    """$DOVECOTE_DATA_DIR, else the XDG state directory (~/.local/state/dovecote)."""
    if "DOVECOTE_DATA_DIR" in os.environ:
        return Path(os.environ["DOVECOTE_DATA_DIR"])
    return state_directory()


def state_directory() -> Path:
    """dovecote's directory in the XDG state directory (~/.local/state/dovecote)."""
    state_home = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state_home) / "dovecote"


class ListenerError(Exception):
    """A listener could not take its address: the port is in use, privileged, or the host is not
    one of this machine's addresses."""


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
    salvage: bool = False
    access_keys: dict[str, str] = {}  # access key id -> secret; empty: signatures are not checked
    broker: BrokerConfig = BrokerConfig()
    limits: NetLimits = NetLimits()
    smtp: SmtpRelay | None = None  # None: email subscriptions are refused
    push_timeout_s: float = PUSH_TIMEOUT_S
    push_max_in_flight: int = PUSH_MAX_IN_FLIGHT
    push_verify: bool | str = True  # HTTPS endpoints' certificates: certifi's CAs, a CA bundle file, or unchecked
    metrics_max_queues: int = METRICS_MAX_QUEUES  # with series of their own in /metrics; the rest are added up
    metrics_max_topics: int = METRICS_MAX_TOPICS
    tls: TlsSettings | None = None  # None: both listeners speak plain TCP


class Ports(NamedTuple):
    native: int
    http: int


async def run_broker(
    config: ServeConfig,
    *,
    stopping: trio.Event | None = None,
    handle_signals: bool = False,
    task_status: trio.TaskStatus[Ports] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the broker until `stopping` is set (or a signal arrives). Raises TlsError when the TLS
    files cannot be loaded (before anything else is opened), StorageDamaged, DataDirectoryInUse,
    DataDirectoryUnusable or StorageError when the store cannot be served, and ListenerError when a
    port cannot be listened on (from inside the nurseries' exception groups)."""
    stopping = stopping if stopping is not None else trio.Event()
    started = time.perf_counter()
    server_tls = ServerTls(config.tls) if config.tls is not None else None
    if server_tls is not None and config.public_url and config.public_url.lower().startswith("http://"):
        log.warning("the HTTP port speaks TLS but public_url %s is http://: URLs handed out will not reach it", config.public_url)
    keyring = Keyring(config.access_keys)
    store = LmdbStore(
        config.data_dir,
        sync_mode=config.sync_mode,
        max_map_bytes=config.max_data_bytes,
        reserve_bytes=config.reserve_bytes,
    )
    try:
        clock = Clock()
        signing_files = SigningFiles(Path(config.data_dir))
        signer = Signer(signing_files.key_pem, config.broker.http_url.rstrip("/") + CERTIFICATE_PATH)
        pusher = Pusher(config.smtp, timeout_s=config.push_timeout_s, max_in_flight=config.push_max_in_flight, verify=config.push_verify)
        cores, report = recover(store, config.broker, clock, salvage=config.salvage, signer=signer, push_protocols=pusher.protocols)
        writer = LogWriter(
            store,
            wall_ms=clock.wall_ms,
            history_ms=int(config.history_hours * 3600 * 1000),
        )
        async with trio.open_nursery() as storage_nursery:
            await storage_nursery.start(writer.run)
            broker = Broker(store, writer, clock, config.broker, cores, signer, pusher)
            async with trio.open_nursery() as broker_nursery:
                await broker_nursery.start(broker.run)
                async with trio.open_nursery() as net_nursery:
                    if handle_signals:
                        net_nursery.start_soon(_stop_on_signal, stopping)
                        net_nursery.start_soon(_reload_on_signal, server_tls, stopping)
                    verifier = SigV4Verifier(keyring) if keyring else None
                    scheme = "https" if server_tls is not None else "http"
                    endpoints = BrokerEndpoints(
                        writer, broker, signing_files.certificate_pem, data_dir=config.data_dir,
                        metrics_max_queues=config.metrics_max_queues, metrics_max_topics=config.metrics_max_topics,
                    )
                    http = HttpServer(
                        lambda peer: AwsGateway(
                            broker, config.broker.account_id, config.public_url, endpoints.handle, verifier, peer, scheme
                        ).handle,
                        config.limits,
                        stopping,
                        server_tls,
                        keyring,
                    )
                    http_port = await _listen(net_nursery, http.serve, "HTTP", config.host, config.http_port)
                    native = NativeServer(broker, config.limits, stopping, _queue_urls(config, http_port), keyring, server_tls)
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
                    task_status.started(Ports(native_port, http_port))
                    await stopping.wait()
                    log.info("shutting down")
                    broker.stop()
            writer.close()
    finally:
        store.close()
    log.info("stopped")


async def _listen(nursery: trio.Nursery, serve, name: str, host: str, port: int) -> int:
    """Start a listener; its port, or ListenerError naming it."""
    try:
        return await nursery.start(serve, host, port)
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            raise ListenerError(f"the {name} port {host}:{port} is already in use") from None
        raise ListenerError(f"cannot listen on the {name} port {host}:{port}: {error.strerror or error}") from None


def _queue_urls(config: ServeConfig, http_port: int):
    base = config.public_url or f"{'https' if config.tls is not None else 'http'}://{config.host}:{http_port}"
    prefix = f"{base.rstrip('/')}/{config.broker.account_id}/"
    return lambda name: prefix + name


class SigningFiles:
    """The SNS signing key and its self-signed certificate, kept in the data directory. Made when
    first needed (the first signed message, or a fetch of the certificate), not at start: making an
    RSA key costs a fifth of a first start. Used from the event loop's thread only."""

    def __init__(self, data_dir: Path) -> None:
        self._key_file = data_dir / "sns-signing-key.pem"
        self._certificate_file = data_dir / "sns-signing-cert.pem"

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
        self._key_file.touch(mode=0o600)
        self._key_file.write_bytes(key_pem)
        self._certificate_file.write_bytes(certificate_pem)


async def _stop_on_signal(stopping: trio.Event) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for _ in signals:
            stopping.set()
            return


async def _reload_on_signal(server_tls: ServerTls | None, stopping: trio.Event) -> None:
    """Until stopping: on SIGHUP, read the TLS files again, for the connections that open from now on."""

    async def reload_each(signals) -> None:
        async for _ in signals:
            if server_tls is None:
                log.info("SIGHUP: no TLS certificate to reload")
                continue
            try:
                server_tls.reload()
            except TlsError as error:
                log.error("SIGHUP: %s; still serving the certificate loaded before", error)
            else:
                log.info("SIGHUP: reloaded the TLS certificate %s for new connections", server_tls.settings.certificate_file)

    with trio.open_signal_receiver(signal.SIGHUP) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(reload_each, signals)
            await stopping.wait()
            nursery.cancel_scope.cancel()
