"""TLS for both listeners and for the native clients.

The operator gives a certificate (with its chain) and its key as PEM files; both listeners serve
them, the native port and the HTTP port alike, each connection wrapped in a trio.SSLStream. The
files are read at start (a file that cannot be loaded stops the broker with one line naming it) and
again on reload() (SIGHUP): a reload that works replaces the contexts new connections take, and
connections already open keep the context they began with, so none is dropped; a reload that fails
changes nothing and says why.

Client certificates (mTLS): with a client CA file the listeners ask each client for a certificate
and verify it against that CA. "required" refuses, in the TLS handshake, a client that has none or
one the CA did not sign; "optional" lets a client without one in (it must then prove a key, or the
broker has none), but still refuses one that does not verify. A verified certificate whose subject
common name is the id of a key the broker knows acts as that key's principal
(Keyring.certificate_principal); one that names no known key proves nothing beyond the CA's say-so.

Versions: TLS 1.2 and 1.3 (Python's defaults for ciphers); no compression, no renegotiation.
"""

from __future__ import annotations

import os
import socket
import ssl
from typing import NamedTuple

import msgspec
import trio

from dovecote.actors.principals import Keyring, Principal

CLIENT_AUTH_MODES = ("required", "optional")
TLS_HANDSHAKE_RECORD = 0x16  # the first byte a TLS client sends: a handshake record


class TlsSettings(msgspec.Struct, frozen=True):
    certificate_file: str | None = None  # PEM: the certificate, then any intermediate CAs
    key_file: str | None = None  # PEM: its private key (unencrypted)
    client_ca_file: str | None = None  # PEM: the CAs client certificates must chain to (None: none asked for)
    client_auth: str = "required"  # with client_ca_file: "required" or "optional"


class TlsError(Exception):
    """A certificate, key or CA file that cannot be used: one line naming the file and why."""


class Peer(NamedTuple):
    """Who is on the other end of a connection, as far as the transport can tell."""

    address: str  # "host:port"
    certificate_principal: Principal | None = None  # the principal its verified client certificate names


def _loaded(settings: TlsSettings, alpn: list[str] | None) -> ssl.SSLContext:
    # A bare server context: create_default_context() may load the system's CAs, and client
    # certificates must chain to the operator's client CA alone.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_RENEGOTIATION | ssl.OP_NO_COMPRESSION
    if settings.certificate_file is None or settings.key_file is None:
        raise TlsError("TLS needs both a certificate (tls_cert) and its key (tls_key)")
    def encrypted() -> bytes:  # instead of OpenSSL's prompt on the terminal
        raise TlsError(f"the TLS key {settings.key_file} is encrypted: dovecote needs it unencrypted (keep it 0600)")

    try:
        context.load_cert_chain(settings.certificate_file, settings.key_file, password=encrypted)
    except (OSError, ssl.SSLError) as error:
        reason = getattr(error, "strerror", None) or getattr(error, "reason", None) or str(error)
        raise TlsError(
            f"cannot load the TLS certificate {settings.certificate_file} with its key {settings.key_file}: {reason}"
        ) from None
    if settings.client_ca_file is not None:
        if settings.client_auth not in CLIENT_AUTH_MODES:
            raise TlsError(f"client certificates are {' or '.join(CLIENT_AUTH_MODES)}, not {settings.client_auth!r}")
        try:
            context.load_verify_locations(cafile=settings.client_ca_file)
        except (OSError, ssl.SSLError) as error:
            reason = getattr(error, "strerror", None) or getattr(error, "reason", None) or str(error)
            raise TlsError(f"cannot load the client CA file {settings.client_ca_file}: {reason}") from None
        context.verify_mode = ssl.CERT_REQUIRED if settings.client_auth == "required" else ssl.CERT_OPTIONAL
    if alpn:
        context.set_alpn_protocols(alpn)
    return context


class ServerTls:
    """The listeners' TLS contexts, from the operator's files. Raises TlsError when they cannot be
    loaded. Used from the event loop's thread only."""

    def __init__(self, settings: TlsSettings) -> None:
        self.settings = settings
        self.native_context, self.http_context = self._load()

    def _load(self) -> tuple[ssl.SSLContext, ssl.SSLContext]:
        return _loaded(self.settings, None), _loaded(self.settings, ["http/1.1"])

    def reload(self) -> None:
        """Read the files again; new connections get what they hold now. Raises TlsError (and keeps
        serving the previous certificate) when they cannot be loaded. Does not block for long: it
        reads three small files."""
        self.native_context, self.http_context = self._load()

    @property
    def mutual(self) -> bool:
        """Whether clients are asked for certificates."""
        return self.settings.client_ca_file is not None


def peer_address(stream: trio.abc.Stream) -> str:
    """The address of a connection's other end, "HOST:PORT" ("[HOST]:PORT" for IPv6); "" if it has
    none to tell. A TLS stream is asked through the stream it wraps."""
    transport = getattr(stream, "transport_stream", stream)
    try:
        address = transport.socket.getpeername()
    except (AttributeError, OSError):
        return ""
    if not isinstance(address, tuple):
        return str(address)
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def starts_with_tls(stream: trio.SocketStream) -> bool | None:
    """Whether the client's first byte opens a TLS handshake (None: it closed first). Peeks: the
    byte stays for whoever reads next."""
    try:
        first = await stream.socket.recv(1, socket.MSG_PEEK)
    except OSError:  # reset
        return None
    if not first:
        return None
    return first[0] == TLS_HANDSHAKE_RECORD


def certificate_principal(stream: trio.SSLStream, keyring: Keyring) -> Principal | None:
    """The principal the client's verified certificate names (its subject's common name is the id of
    a key the keyring knows), or None. Call after the handshake."""
    certificate = stream.getpeercert()
    if not certificate:  # none given (optional mode), or none asked for
        return None
    for relative_name in certificate.get("subject", ()):
        for attribute, value in relative_name:
            if attribute == "commonName":
                return keyring.certificate_principal(value)
    return None


TlsOption = bool | str | os.PathLike | ssl.SSLContext | None


def client_context(tls: TlsOption) -> ssl.SSLContext | None:
    """A client's TLS context from what it was given: None or False (no TLS), True (TLS, trusting the
    system's CAs), a CA file (PEM) to trust, or an ssl.SSLContext as it is (for a client certificate,
    load_cert_chain on it)."""
    if tls is None or tls is False:
        return None
    if isinstance(tls, ssl.SSLContext):
        return tls
    if tls is True:
        return ssl.create_default_context()
    return ssl.create_default_context(cafile=os.fspath(tls))
