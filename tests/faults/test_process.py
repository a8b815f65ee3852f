"""Real `dovecote serve` processes: damage on disk, a second broker, clean shutdown, the CLI."""

import json
import subprocess
import sys

import httpx
import lmdb
import pytest

import dovecote
from dovecote.storage import keys

from .serve import ServeProcess


def flip_last_byte(data_dir, table: bytes, key: bytes) -> None:
    env = lmdb.open(str(data_dir / "lmdb"), max_dbs=8)
    try:
        with env.begin(write=True, db=env.open_db(table)) as txn:
            value = bytearray(txn.get(key))
            value[-1] ^= 0xFF
            txn.put(key, bytes(value))
    finally:
        env.close()


def test_damage_stops_the_broker_with_a_clear_message_unless_salvaging(tmp_path):
    data_dir = tmp_path / "data"
    broker = ServeProcess(data_dir).start()
    with broker.client() as client:
        client.create_queue("q")
        for i in range(5):
            client.send_message("q", f"m{i}")
    assert broker.terminate() == 0
    flip_last_byte(data_dir, b"messages", keys.message_key(1, 3))

    refused = subprocess.run(ServeProcess(data_dir).command(), capture_output=True, text=True, timeout=60)
    assert refused.returncode == 3
    assert "damaged" in refused.stderr and "messages rows queue 1 seq 3" in refused.stderr
    assert "--salvage" in refused.stderr

    check = subprocess.run(
        [sys.executable, "-m", "dovecote", "check", "--data-dir", str(data_dir)], capture_output=True, text=True
    )
    assert check.returncode == 1 and "seq 3" in check.stdout

    salvaged = ServeProcess(data_dir, "--salvage").start()
    with salvaged.client() as client:
        bodies = {m.body for m in client.receive_message("q", max_number_of_messages=10)}
    assert salvaged.terminate() == 0
    assert "salvage dropped messages rows queue 1 seq 3" in salvaged.process.stderr.read()
    assert len(bodies) == 4 and all(body.startswith("m") for body in bodies)


def test_a_second_broker_on_the_same_directory_is_refused(tmp_path):
    broker = ServeProcess(tmp_path / "data").start()
    try:
        second = subprocess.run(ServeProcess(tmp_path / "data").command(), capture_output=True, text=True, timeout=60)
        assert second.returncode == 3 and "in use by another dovecote process" in second.stderr
        with broker.client() as client:
            client.list_queues()  # the first one is unharmed
    finally:
        assert broker.terminate() == 0


def test_sigterm_shuts_down_cleanly_and_health_answers_while_up(tmp_path):
    broker = ServeProcess(tmp_path / "data").start()
    health = httpx.get(f"http://127.0.0.1:{broker.http_port}/health", timeout=5)
    assert health.status_code == 200 and health.json()["accepting_sends"] is True
    with broker.client() as client:
        client.create_queue("counted")
        client.send_message("counted", "one")
    metrics = dict(
        line.split(" ") for line in httpx.get(f"http://127.0.0.1:{broker.http_port}/metrics", timeout=5).text.splitlines()
    )
    assert metrics["dovecote_log_last_lsn"] == "2" and metrics["dovecote_log_records_total"] == "2"
    assert int(metrics["dovecote_log_commits_total"]) in (1, 2) and metrics["dovecote_accepting_sends"] == "1"
    assert broker.terminate() == 0


def run_cli(broker, *args):
    result = subprocess.run(
        [sys.executable, "-m", "dovecote", *args, "--port", str(broker.port)], capture_output=True, text=True, timeout=60
    )
    return result.returncode, result.stdout, result.stderr


def test_cli_client_commands(tmp_path):
    broker = ServeProcess(tmp_path / "data").start()
    try:
        code, out, _ = run_cli(broker, "create-queue", "jobs", "--attribute", "VisibilityTimeout=5")
        assert code == 0 and json.loads(out)["QueueUrl"].endswith("/000000000000/jobs")
        code, out, _ = run_cli(broker, "send", "jobs", "hello", "--attribute", "kind=String:greeting")
        assert code == 0 and json.loads(out)["message_id"]
        code, out, _ = run_cli(broker, "receive", "jobs", "--max", "10", "--delete")
        (message,) = json.loads(out)["Messages"]
        assert message["body"] == "hello" and message["message_attributes"]["kind"]["string_value"] == "greeting"
        code, out, _ = run_cli(broker, "get-queue-attributes", "jobs")
        assert json.loads(out)["Attributes"]["ApproximateNumberOfMessages"] == "0"
        code, _, err = run_cli(broker, "delete-message", "jobs", "not-a-handle")
        assert code == 1 and json.loads(err)["error"] == "ReceiptHandleIsInvalid"
        code, _, err = run_cli(broker, "get-queue-url", "missing")
        assert code == 1 and json.loads(err)["error"] == "QueueDoesNotExist"
    finally:
        assert broker.terminate() == 0


@pytest.mark.parametrize("package", ["storage", "actors", "net"])
def test_layers_depend_one_way(package):
    """storage <- actors <- net <- the programs; only lmdb_store imports lmdb."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    programs = tuple(f"dovecote.{path.stem}" for path in (root / "scripts").iterdir() if not path.name.startswith("__"))
    forbidden = {"storage": ("dovecote.actors", "dovecote.net", *programs), "actors": ("dovecote.net", *programs),
                 "net": programs}[package]
    for source in (root / package).glob("*.py"):
        text = source.read_text()
        for name in forbidden:
            assert f"import {name}" not in text and f"from {name}" not in text, f"{source.name} imports {name}"
        if source.name != "lmdb_store.py":
            assert "import lmdb" not in text, f"{source.name} imports lmdb"


def test_every_imported_package_is_declared():
    """Third-party imports of the installed package are runtime dependencies (botocore, for
    --access-key, is in the auth extra); those of the benchmarks and the tests are in the test extra."""
    import ast
    import importlib.metadata
    import re
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]

    def names(requirements):
        return {re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].lower().replace("_", "-") for requirement in requirements}

    runtime = names(project["dependencies"])
    extras = {extra: names(requirements) for extra, requirements in project["optional-dependencies"].items()}
    distributions = importlib.metadata.packages_distributions()

    def declared_for(relative: str):
        if relative.startswith(("scripts/bench/", "tests/")):
            return runtime | extras["test"]
        return runtime | extras["auth"] if relative == "net/sigv4.py" else runtime

    undeclared = []
    for folder in ("scripts", "storage", "actors", "net", "tests"):
        for path in (root / folder).rglob("*.py"):
            relative = path.relative_to(root).as_posix()
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    modules = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0:
                    modules = [node.module]
                else:
                    continue
                for top in {module.split(".")[0] for module in modules} - set(sys.stdlib_module_names) - {"dovecote", "tests"}:
                    wanted = {name.lower().replace("_", "-") for name in distributions.get(top, [top])}
                    if not wanted & declared_for(relative):
                        undeclared.append(f"{relative} imports {top}")
    assert not undeclared


def test_the_wheel_holds_only_the_dovecote_namespace(tmp_path):
    """...and not the benchmarks. Built from a copy: setuptools would pack whatever an earlier build
    left in the checkout's build/ directory."""
    import shutil
    import zipfile
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    source = tmp_path / "source"
    shutil.copytree(root, source, ignore=shutil.ignore_patterns(".*", "build", "*.egg-info", "__pycache__"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(source)],
        check=True, capture_output=True, timeout=300,
    )
    (wheel,) = tmp_path.glob("dovecote-*.whl")
    assert wheel.name.split("-")[1] == dovecote.__version__  # the version is written once, in the package
    dist_info = f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info"
    top_levels = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert top_levels == {"dovecote", dist_info}
    packages = {name.rsplit("/", 1)[0] for name in zipfile.ZipFile(wheel).namelist() if name.endswith(".py")}
    assert packages == {"dovecote", "dovecote/storage", "dovecote/actors", "dovecote/net"}
    folders = {name.rsplit("/", 1)[0] for name in zipfile.ZipFile(wheel).namelist() if not name.startswith(dist_info)}
    assert folders == packages  # no other files either (the wrk script)


@pytest.mark.parametrize("benchmark", ["bench", "bench.sqs", "bench.sns", "bench.pushes", "bench.aws", "bench.log"])
def test_the_benchmarks_start_from_the_editable_install(benchmark, tmp_path):
    """The wheel leaves them out; the editable install finds them, from any working directory."""
    result = subprocess.run(
        [sys.executable, "-m", f"dovecote.{benchmark}", "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert f"python -m dovecote.{benchmark} " in result.stdout


def test_peek_from_the_cli_and_over_http(tmp_path):
    broker = ServeProcess(tmp_path / "data").start()
    try:
        with broker.client() as client:
            client.create_queue("browse")
            for i in range(3):
                client.send_message("browse", f"m{i}")
            client.receive_message("browse")
        code, out, _ = run_cli(broker, "peek", "browse", "--max", "2")
        page = json.loads(out)
        assert code == 0 and [m["body"] for m in page["messages"]] == ["m0", "m1"]
        assert page["messages"][0]["state"] == "in_flight" and page["next_after_seq"]
        url = f"http://127.0.0.1:{broker.http_port}/peek"
        visible = httpx.get(url, params={"queue": "browse", "state": "visible"}, timeout=5).json()
        assert [m["body"] for m in visible["messages"]] == ["m1", "m2"]
        missing = httpx.get(url, params={"queue": "nowhere"}, timeout=5)
        assert missing.status_code == 400 and missing.json()["code"] == "QueueDoesNotExist"
        assert httpx.get(url, timeout=5).status_code == 400
        with broker.client() as client:  # peeking changed nothing
            assert client.get_queue_attributes("browse")["ApproximateNumberOfMessages"] == "2"
    finally:
        assert broker.terminate() == 0


def test_sigint_shuts_down_cleanly_too(tmp_path):
    import signal

    broker = ServeProcess(tmp_path / "data").start()
    with broker.client() as client:
        client.create_queue("kept")
        client.send_message("kept", "survives a clean stop")
    broker.process.send_signal(signal.SIGINT)
    assert broker.process.wait(timeout=30) == 0
    again = ServeProcess(tmp_path / "data").start()
    with again.client() as client:
        assert [m.body for m in client.receive_message("kept")] == ["survives a clean stop"]
    assert again.terminate() == 0
