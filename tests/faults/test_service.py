"""`dovecote serve` run as a service, in real processes: readiness told to systemd through a real
unix datagram socket, JSON logs, and the operator's mistakes (a port in use, a data directory it
cannot use, a configuration file with a typo, `check` on a directory with no store), each one line
on stderr with an exit code of its own."""

from __future__ import annotations

import ctypes
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from dovecote.cli import EXIT_DATA_DIR, EXIT_LISTENER, EXIT_USAGE
from dovecote.net.client import BlockingClient

from .serve import ServeProcess, free_port

# A stray fd or signal must not hang the suite: each wait below has its own deadline.
TIMEOUT_S = 60


def dovecote(*args: str, **options) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dovecote", *args], capture_output=True, text=True, timeout=TIMEOUT_S, **options)


def serve_args(data_dir, port: int = 0, http_port: int = 0) -> list[str]:
    return ["serve", "--data-dir", str(data_dir), "--port", str(port), "--http-port", str(http_port)]


def one_line(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.mark.parametrize("listener", ["native", "HTTP"])
def test_a_port_in_use_is_one_line_naming_it(tmp_path, listener):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ports = (port, 0) if listener == "native" else (0, port)
        result = dovecote(*serve_args(tmp_path / "data", *ports))
    assert result.returncode == EXIT_LISTENER
    assert one_line(result.stderr).endswith(f"dovecote: the {listener} port 127.0.0.1:{port} is already in use")


def _without_permission_overrides() -> None:
    """In the child, as root: drop the capabilities that let root write where the mode says no."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2, 3):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def as_an_ordinary_user() -> dict:
    if os.geteuid() != 0:
        return {}
    try:
        subprocess.run([sys.executable, "-c", ""], preexec_fn=_without_permission_overrides, check=True, timeout=TIMEOUT_S)
    except (subprocess.SubprocessError, OSError):
        pytest.skip("running as root, and cannot drop root's permission overrides here")
    return {"preexec_fn": _without_permission_overrides}


@pytest.mark.parametrize("case", ["cannot be created", "not writable", "a file in the way"])
def test_a_data_directory_it_cannot_use_is_one_line_naming_it(tmp_path, case):
    locked = tmp_path / "locked"
    locked.mkdir()
    if case == "cannot be created":
        data_dir, options = locked / "data", as_an_ordinary_user()
    elif case == "not writable":
        data_dir, options = locked, as_an_ordinary_user()
    else:
        (tmp_path / "file").write_text("")
        data_dir, options = tmp_path / "file" / "data", {}
    locked.chmod(0o555)
    try:
        result = dovecote(*serve_args(data_dir), **options)
    finally:
        locked.chmod(0o755)
    assert result.returncode == EXIT_DATA_DIR
    assert f"dovecote: cannot use the data directory {data_dir}: " in one_line(result.stderr)


def test_check_refuses_a_directory_with_no_store_and_creates_nothing(tmp_path):
    typo = tmp_path / "dta"
    result = dovecote("check", "--data-dir", str(typo))
    assert result.returncode == EXIT_DATA_DIR and result.stdout == ""
    assert one_line(result.stderr) == f"dovecote: {typo} holds no dovecote store"
    assert not typo.exists()

    empty = tmp_path / "empty"
    empty.mkdir()
    result = dovecote("check", "--data-dir", str(empty))
    assert result.returncode == EXIT_DATA_DIR and list(empty.iterdir()) == []


def test_a_configuration_file_with_an_unknown_key_is_one_line_naming_it(tmp_path):
    config = tmp_path / "dovecote.toml"
    config.write_text(f'data_dir = "{tmp_path / "data"}"\n\n# the HTTP port\nhtp_port = 7481\n')
    result = dovecote("serve", "--config", str(config))
    assert result.returncode == EXIT_USAGE
    assert one_line(result.stderr) == f"dovecote: {config}:4: unknown key 'htp_port' (did you mean 'http_port'?)"
    assert not (tmp_path / "data").exists()


def test_settings_from_a_file_and_the_environment_reach_the_broker(tmp_path):
    """The file sets the data directory and the native port; the environment overrides the file's
    HTTP port; a flag overrides the environment's account."""
    port, file_http_port, http_port = free_port(), free_port(), free_port()
    config = tmp_path / "dovecote.toml"
    config.write_text(
        f'data_dir = "{tmp_path / "data"}"\nport = {port}\nhttp_port = {file_http_port}\naccount_id = "111111111111"\n'
    )
    environment = {**os.environ, "DOVECOTE_HTTP_PORT": str(http_port), "DOVECOTE_ACCOUNT_ID": "222222222222"}
    process = subprocess.Popen(
        [sys.executable, "-m", "dovecote", "serve", "--config", str(config), "--account-id", "333333333333"],
        env=environment, stderr=subprocess.PIPE, text=True,
    )
    try:
        client = wait_for_broker(process, port)
        with client:
            assert client.create_queue("configured").endswith("/333333333333/configured")
        assert httpx.get(f"http://127.0.0.1:{http_port}/health", timeout=5).status_code == 200
        assert (tmp_path / "data" / "lmdb").is_dir()
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=TIMEOUT_S) == 0


def wait_for_broker(process: subprocess.Popen, port: int) -> BlockingClient:
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read()
        try:
            return BlockingClient("127.0.0.1", port, timeout_s=10)
        except OSError:
            time.sleep(0.02)
    raise AssertionError("dovecote serve did not start")


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_systemd_is_told_ready_only_once_the_broker_serves_and_stopping_at_sigterm(tmp_path, abstract):
    """A unix datagram socket stands in for systemd's notify socket. With stored messages to
    recover, READY=1 is the first datagram, and when it arrives both ports already serve."""
    data_dir = tmp_path / "data"
    broker = ServeProcess(data_dir).start()
    with broker.client() as client:
        client.create_queue("kept")
        for i in range(100):
            client.send_message("kept", f"message {i}")
    assert broker.terminate() == 0

    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as systemd:
        address = f"@dovecote-test-{os.getpid()}-{time.monotonic_ns()}" if abstract else str(tmp_path / "notify")
        systemd.bind("\0" + address[1:] if abstract else address)
        systemd.settimeout(TIMEOUT_S)
        process = subprocess.Popen(
            [sys.executable, "-m", "dovecote", *serve_args(data_dir)],
            env={**os.environ, "NOTIFY_SOCKET": address}, stderr=subprocess.PIPE, text=True,
        )
        try:
            ready = systemd.recv(4096).decode()
            # The broker serves at this instant: both ports answer, the stored messages are there.
            fields = dict(line.split("=", 1) for line in ready.splitlines())
            assert fields["READY"] == "1", ready
            status = fields["STATUS"]  # "serving: native port N, HTTP port M"
            native_port, http_port = (int(part.split()[-1]) for part in status.split(":", 1)[1].split(","))
            assert httpx.get(f"http://127.0.0.1:{http_port}/health", timeout=5).status_code == 200
            with BlockingClient("127.0.0.1", native_port, timeout_s=10) as client:
                assert client.get_queue_attributes("kept")["ApproximateNumberOfMessages"] == "100"
            process.send_signal(signal.SIGTERM)
            assert systemd.recv(4096).decode().splitlines()[0] == "STOPPING=1"
            assert process.wait(timeout=TIMEOUT_S) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


def test_json_logs_are_one_object_a_line_with_the_topic_they_are_about(tmp_path):
    """Every line of a real broker's stderr is a JSON object with time, level, logger and message;
    a failed push says which topic it was for."""
    port, http_port = free_port(), free_port()
    stderr_path = tmp_path / "stderr"
    with stderr_path.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "dovecote", *serve_args(tmp_path / "data", port, http_port), "--log-format", "json"],
            stderr=stderr,
        )
    try:
        with wait_for_broker(process, port) as client:
            client.create_topic("news")
            client.subscribe("news", "http", f"http://127.0.0.1:{free_port()}/nobody-listens")
        deadline = time.monotonic() + TIMEOUT_S
        while "SubscriptionConfirmation to " not in stderr_path.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=TIMEOUT_S) == 0
    entries = [json.loads(line) for line in stderr_path.read_text().splitlines()]
    for entry in entries:
        assert {"time", "level", "logger", "message"} <= entry.keys(), entry
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["time"]), entry
    assert entries[0]["message"].startswith("dovecote serving") and entries[0]["level"] == "info"
    assert entries[-1]["message"] == "stopped"
    failed = next(entry for entry in entries if entry["message"].startswith("SubscriptionConfirmation to "))
    assert failed["topic"] == "news" and failed["logger"] == "dovecote.delivery"
