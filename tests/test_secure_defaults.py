"""Secure by default, on real `dovecote serve` processes: a host other than loopback without keys
is refused in one line with the usage code (Mosquitto's rule) unless --allow-anonymous says it is
meant; the data directory is private (directories 0700, files 0600) whatever the umask, and one
made more open before is tightened."""

from __future__ import annotations

import os
import stat
import subprocess

import httpx
import pytest

from dovecote.actors.signing import CERTIFICATE_PATH
from dovecote.app import ServeConfig, anonymous_exposure, is_loopback
from dovecote.cli import EXIT_USAGE
from dovecote.net.tls import TlsSettings

from .faults.serve import PACKAGE, ServeProcess, free_port

UMASK_000 = ("sh", "-c", 'umask 000 && exec "$@"', "sh", *PACKAGE)  # the package, started under umask 000


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("[::1]", True), ("localhost", True), ("LocalHost", True),
        ("::ffff:127.0.0.1", True), ("0.0.0.0", False), ("::", False), ("", False), ("192.168.1.20", False),
        ("10.0.0.1", False), ("fe80::1", False), ("broker.lan", False), ("localhost.example", False), ("128.0.0.1", False),
    ],
)
def test_what_counts_as_loopback(host, loopback):
    assert is_loopback(host) is loopback


def test_only_a_network_host_without_keys_and_without_allow_anonymous_is_refused():
    assert anonymous_exposure(ServeConfig("d", host="0.0.0.0")) is not None
    assert anonymous_exposure(ServeConfig("d", host="0.0.0.0", access_keys={"A": "a"})) is None
    assert anonymous_exposure(ServeConfig("d", host="0.0.0.0", allow_anonymous=True)) is None
    assert anonymous_exposure(ServeConfig("d", host="127.0.0.1")) is None
    # client certificates every connection must show are credentials; optional ones let anyone in
    required = TlsSettings("cert.pem", "key.pem", "ca.pem", "required")
    assert anonymous_exposure(ServeConfig("d", host="0.0.0.0", tls=required)) is None
    optional = TlsSettings("cert.pem", "key.pem", "ca.pem", "optional")
    assert anonymous_exposure(ServeConfig("d", host="0.0.0.0", tls=optional)) is not None
    assert anonymous_exposure(ServeConfig("d", host="0.0.0.0", tls=TlsSettings("cert.pem", "key.pem"))) is not None


def serve(tmp_path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    command = [*PACKAGE, "serve", "--data-dir", str(tmp_path / "data"), "--port", str(free_port()),
               "--http-port", str(free_port()), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)


@pytest.mark.parametrize(
    "how", [("--host", "0.0.0.0"), ("--host", "::"), ("--host", "")], ids=["0.0.0.0 flag", ":: flag", "empty"]
)
def test_serving_the_network_without_keys_is_refused_in_one_line(tmp_path, how):
    result = serve(tmp_path, *how)
    assert result.returncode == EXIT_USAGE
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "refusing to listen on" in lines[0] and "--allow-anonymous" in lines[0] and "access_key" in lines[0]
    assert not (tmp_path / "data").exists()  # refused before anything was made


def test_the_refusal_also_comes_from_the_configuration_file_and_environment(tmp_path):
    config = tmp_path / "dovecote.toml"
    config.write_text('host = "0.0.0.0"\n')
    assert serve(tmp_path, "--config", str(config)).returncode == EXIT_USAGE
    environment = {**os.environ, "DOVECOTE_HOST": "0.0.0.0", "DOVECOTE_ALLOW_ANONYMOUS": "true"}
    broker = ServeProcess(tmp_path / "env", env=environment).start()
    assert broker.terminate() == 0


@pytest.mark.parametrize("args", [("--allow-anonymous",), ("--access-key", "AKID:secret")], ids=["allow-anonymous", "keys"])
def test_serving_the_network_starts_with_keys_or_allow_anonymous(tmp_path, args):
    broker = ServeProcess(tmp_path / "data", "--host", "0.0.0.0", *args).start()
    try:
        assert httpx.get(f"http://127.0.0.1:{broker.http_port}/health").status_code == 200
    finally:
        assert broker.terminate() == 0


def modes(root) -> dict[str, int]:
    """Every directory's and file's permission bits under root (root itself as ".")."""
    found = {".": stat.S_IMODE(os.stat(root).st_mode)}
    for folder, directories, files in os.walk(root):
        for name in directories + files:
            path = os.path.join(folder, name)
            found[os.path.relpath(path, root)] = stat.S_IMODE(os.stat(path).st_mode)
    return found


def use_every_file(broker: ServeProcess) -> None:
    """Make the broker write what it keeps: messages (the LMDB files) and the SNS signing key and
    certificate (made when the certificate is first fetched), and the master key of encryption at rest."""
    with broker.client() as client:
        # the queue encrypts (SSE-SQS, the default), so the master key file is made too
        client.send_message(client.create_queue("private"), "a body no other user may read")
    assert httpx.get(f"http://127.0.0.1:{broker.http_port}{CERTIFICATE_PATH}").status_code == 200


EXPECTED_FILES = {
    ".", "lmdb", "lmdb/data.mdb", "lmdb/lock.mdb", "dovecote.lock", "reserve.bin", "sns-signing-key.pem",
    "sns-signing-cert.pem", "sse-master.key",
}


def test_the_data_directory_is_private_under_umask_000(tmp_path):
    data_dir = tmp_path / "parent" / "data"
    broker = ServeProcess(data_dir, program=UMASK_000).start()
    try:
        use_every_file(broker)
    finally:
        assert broker.terminate() == 0
    found = modes(data_dir)
    assert set(found) == EXPECTED_FILES
    assert {name: mode for name, mode in found.items() if mode != (0o700 if name in (".", "lmdb") else 0o600)} == {}
    assert stat.S_IMODE(os.stat(tmp_path / "parent").st_mode) == 0o755  # a parent it made: never writable by others


def test_a_data_directory_left_open_is_tightened_saying_so(tmp_path):
    data_dir = tmp_path / "data"
    broker = ServeProcess(data_dir).start()
    use_every_file(broker)
    assert broker.terminate() == 0
    for name in modes(data_dir):
        os.chmod(data_dir / name, 0o777 if name in (".", "lmdb") else 0o666)  # as an older dovecote under umask 000 left it
    broker = ServeProcess(data_dir, program=UMASK_000).start()
    try:
        use_every_file(broker)
    finally:
        assert broker.terminate() == 0
    found = modes(data_dir)
    assert {name: mode for name, mode in found.items() if mode != (0o700 if name in (".", "lmdb") else 0o600)} == {}
    tightened = [line for line in broker.process.stderr.read().splitlines() if "tightened" in line]
    assert len(tightened) == len(EXPECTED_FILES)
    assert any(f"tightened {data_dir} from mode 777 to 700" in line for line in tightened)
