"""Telling systemd how the service is doing, as `sd_notify(3)` does, without libsystemd: one
datagram of `NAME=value` lines to the unix socket named by $NOTIFY_SOCKET (a path, or an abstract
socket when it starts with `@`). The broker sends `READY=1` once it has recovered and both
listeners serve (the unit is `Type=notify`), and `STOPPING=1` when it begins to shut down.

Outside systemd ($NOTIFY_SOCKET unset) nothing is sent. A datagram that cannot be sent is logged,
never raised: the broker serves either way (systemd then gives up on the start after its timeout).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger("dovecote.systemd")
SEND_TIMEOUT_S = 5.0


def notify(state: str, environ: Mapping[str, str] = os.environ) -> bool:
    """Send `state` (e.g. "READY=1\\nSTATUS=serving") to the service manager; whether it was sent.
    Blocks for at most SEND_TIMEOUT_S (systemd reads its socket at once)."""
    address = environ.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    elif not address.startswith("/"):
        log.warning("NOTIFY_SOCKET=%s is not a unix socket path; systemd is not told how the service is doing", address)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.settimeout(SEND_TIMEOUT_S)
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError as error:
        log.warning("cannot tell systemd %r through %s: %s", state.split("\n")[0], environ["NOTIFY_SOCKET"], error)
        return False
    return True
