"""sd_notify without libsystemd: a datagram when systemd asks for one, nothing otherwise, never an error."""

import socket

from dovecote import sd_notify


def test_nothing_is_sent_outside_systemd():
    assert sd_notify.notify("READY=1", {}) is False


def test_a_datagram_reaches_the_socket_systemd_names(tmp_path):
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as systemd:
        systemd.bind(str(tmp_path / "notify"))
        assert sd_notify.notify("READY=1\nSTATUS=serving", {"NOTIFY_SOCKET": str(tmp_path / "notify")})
        assert systemd.recv(4096) == b"READY=1\nSTATUS=serving"


def test_a_socket_that_is_not_there_is_logged_not_raised(tmp_path, caplog):
    assert sd_notify.notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "gone")}) is False
    assert "cannot tell systemd 'READY=1'" in caplog.text
    assert sd_notify.notify("READY=1", {"NOTIFY_SOCKET": "vsock:2:1234"}) is False
