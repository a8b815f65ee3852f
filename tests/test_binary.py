"""The single-file build (scripts/build-binary), run as an operator runs it: with an empty
environment, serving boto3, stopping on SIGTERM with its exit code, leaving nothing behind after
kill -9, running on the Python it carries, and unpacking once per build. The build is made once for
the session, or taken from $DOVECOTE_BINARY."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import boto3
import httpx
import pytest

import dovecote

from .faults.serve import ServeProcess

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def binary(tmp_path_factory) -> Path:
    given = os.environ.get("DOVECOTE_BINARY")
    if given:
        return Path(given).resolve()
    output = tmp_path_factory.mktemp("build") / "dovecote"
    subprocess.run(["bash", "scripts/build-binary", "--output", str(output)], cwd=ROOT, check=True, timeout=900)
    return output


@pytest.fixture
def unpack_dir(tmp_path) -> Path:
    return tmp_path / "unpacked"


def bare_environment(unpack_dir: Path) -> dict[str, str]:
    """No PATH, no HOME, no Python of any kind: only where to unpack."""
    return {"DOVECOTE_UNPACK_DIR": str(unpack_dir)}


def processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                pass  # it ended meanwhile
    return found


def test_the_binary_serves_boto3_and_stops_on_sigterm(binary, unpack_dir, tmp_path):
    broker = ServeProcess(tmp_path / "data", program=(str(binary),), env=bare_environment(unpack_dir)).start()
    try:
        health = httpx.get(f"http://127.0.0.1:{broker.http_port}/health", timeout=5)
        assert health.status_code == 200 and health.json()["accepting_sends"] is True
        sqs = boto3.client(
            "sqs", endpoint_url=f"http://127.0.0.1:{broker.http_port}", region_name="us-east-1",
            aws_access_key_id="test", aws_secret_access_key="test",
        )
        url = sqs.create_queue(QueueName="edge")["QueueUrl"]
        sqs.send_message(QueueUrl=url, MessageBody="from a device")
        (message,) = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1)["Messages"]
        assert message["Body"] == "from a device"
        # the process the operator started is the broker itself, on the Python the file carries
        assert broker.process is not None
        maps = Path(f"/proc/{broker.process.pid}/maps").read_text()
        pythons = {line.split()[-1] for line in maps.splitlines() if "libpython" in line}
        assert pythons and all(path.startswith(str(unpack_dir)) for path in pythons), pythons
        # The native client runs on AnyIO, which imports its event loop's backend by name: the
        # build must carry it (`import` opens the client, under Trio, even to send nothing).
        imported = subprocess.run(
            [str(binary), "import", "-", "--port", str(broker.port)], input="", env=bare_environment(unpack_dir),
            capture_output=True, text=True, timeout=60,
        )
        assert imported.returncode == 0 and "replayed 0 messages" in imported.stderr, imported.stderr
    finally:
        assert broker.terminate() == 0


def test_kill_9_leaves_nothing_running(binary, unpack_dir, tmp_path):
    data_dir = tmp_path / "killed"
    broker = ServeProcess(data_dir, program=(str(binary),), env=bare_environment(unpack_dir)).start()
    assert processes_mentioning(str(data_dir)) == [broker.process.pid]
    broker.kill9()
    deadline = time.monotonic() + 5
    while processes_mentioning(str(data_dir)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert processes_mentioning(str(data_dir)) == []


def test_exit_codes_and_the_version_come_through(binary, unpack_dir):
    environment = bare_environment(unpack_dir)
    version = subprocess.run([binary, "--version"], env=environment, capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and dovecote.__version__ in version.stdout
    usage = subprocess.run([binary, "serve", "--port", "not-a-port"], env=environment, capture_output=True, text=True, timeout=60)
    assert usage.returncode == 2 and "--port" in usage.stderr


def test_a_build_is_unpacked_once(binary, unpack_dir, tmp_path):
    environment = bare_environment(unpack_dir)
    assert subprocess.run([binary, "--version"], env=environment, capture_output=True, timeout=60).returncode == 0
    unpacked = sorted(unpack_dir.iterdir())
    assert [entry.is_symlink() for entry in unpacked].count(True) == 1  # the build, named once it is whole
    files = {path: path.stat().st_mtime_ns for path in unpack_dir.rglob("*")}
    for _ in range(2):
        assert subprocess.run([binary, "--version"], env=environment, capture_output=True, timeout=60).returncode == 0
    assert {path: path.stat().st_mtime_ns for path in unpack_dir.rglob("*")} == files


def test_sigint_stops_it_too(binary, unpack_dir, tmp_path):
    broker = ServeProcess(tmp_path / "data", program=(str(binary),), env=bare_environment(unpack_dir)).start()
    assert broker.process is not None
    broker.process.send_signal(signal.SIGINT)
    assert broker.process.wait(timeout=30) == 0


def test_under_systemd_it_unpacks_into_the_cache_directory(binary, tmp_path):
    """The unit's CacheDirectory= gives $CACHE_DIRECTORY: kept across restarts, unlike the
    service's private /tmp."""
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    result = subprocess.run([binary, "--version"], env={"CACHE_DIRECTORY": str(cache)}, capture_output=True, timeout=60)
    assert result.returncode == 0
    assert [entry.is_symlink() for entry in cache.iterdir()].count(True) == 1


def test_the_binary_runs_a_python_function_with_the_runtime_client_it_carries(binary, unpack_dir, tmp_path):
    """The device binary carries no Python for user code: a python3.x function runs on the
    interpreter the operator names, under the runtime client the binary writes out beside the code."""
    from .net.test_boto3_lambda import HANDLER, ROLE, invoke, zipped

    broker = ServeProcess(
        tmp_path / "data", "--function-python", sys.executable, program=(str(binary),), env=bare_environment(unpack_dir),
    ).start()
    try:
        lam = boto3.client(
            "lambda", endpoint_url=f"http://127.0.0.1:{broker.http_port}", region_name="us-east-1",
            aws_access_key_id="test", aws_secret_access_key="test",
        )
        lam.create_function(
            FunctionName="on-device", Runtime="python3.12", Role=ROLE, Handler="handler.main",
            Code={"ZipFile": zipped({"handler.py": HANDLER})},
        )
        answer, response = invoke(lam, "on-device", {"action": "echo"})
        assert "FunctionError" not in response, answer
        assert answer["function_name"] == "on-device" and answer["event"] == {"action": "echo"}
    finally:
        assert broker.terminate() == 0
