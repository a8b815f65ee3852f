"""Every example in README.md runs as written, against a real broker started as the README's first
command starts it: `dovecote serve` with its default data directory and ports.

The README's ```sh and ```python blocks are examples: each runs, in the order written, in a shell or
in this environment's Python (where `dovecote`, `aws` and boto3 are installed), and must succeed.
```toml blocks are configuration files: `dovecote config --config` must accept each. Plain ```
blocks are set-up commands (installing, testing, building, installing the service as root), which
CI runs itself or which need root; they are not run here."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```$", re.M | re.S)
BLOCKS = [(match.group(1), match.group(2), ROOT.joinpath("README.md").read_text()[: match.start()].count("\n") + 1)
          for match in BLOCK.finditer(ROOT.joinpath("README.md").read_text())]
EXAMPLES = [(language, text, line) for language, text, line in BLOCKS if language in ("sh", "python")]
CONFIGURATIONS = [(text, line) for language, text, line in BLOCKS if language == "toml"]


@pytest.fixture(scope="module")
def readme_environment(tmp_path_factory):
    """A home of its own (the default data directory is under it) and this environment's commands."""
    home = tmp_path_factory.mktemp("home")
    environment = {
        name: value for name, value in os.environ.items()
        if name not in ("DOVECOTE_DATA_DIR", "XDG_STATE_HOME", "XDG_CACHE_HOME") and not name.startswith("AWS_")
    }
    environment["HOME"] = str(home)
    environment["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environment.get('PATH', '')}"
    return environment


@pytest.fixture(scope="module")
def broker(readme_environment):
    process = subprocess.Popen(
        [sys.executable, "-m", "dovecote", "serve"], env=readme_environment, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            pytest.fail(f"dovecote serve, as the README runs it, exited {process.returncode}: {process.stderr.read()}")
        try:
            if httpx.get("http://127.0.0.1:7481/health", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "dovecote serve did not answer /health on the README's port"
        time.sleep(0.05)
    yield process
    process.terminate()
    assert process.wait(timeout=30) == 0


def test_the_broker_keeps_its_data_in_the_default_directory(broker, readme_environment):
    assert (Path(readme_environment["HOME"]) / ".local" / "state" / "dovecote" / "lmdb" / "data.mdb").exists()


def test_the_readme_has_examples_of_each_kind():
    assert {language for language, _, _ in EXAMPLES} == {"sh", "python"} and CONFIGURATIONS


@pytest.mark.parametrize(("language", "text", "line"), EXAMPLES, ids=[f"line {line}" for _, _, line in EXAMPLES])
def test_each_example_runs_as_written(broker, readme_environment, language, text, line):
    command = ["bash", "-e", "-c", text] if language == "sh" else [sys.executable, "-c", text]
    result = subprocess.run(command, env=readme_environment, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"README.md line {line} ({language}) failed:\n{result.stdout}\n{result.stderr}"


@pytest.mark.parametrize(("text", "line"), CONFIGURATIONS, ids=[f"line {line}" for _, line in CONFIGURATIONS])
def test_each_configuration_is_accepted(readme_environment, tmp_path, text, line):
    path = tmp_path / "dovecote.toml"
    path.write_text(text)
    result = subprocess.run(
        [sys.executable, "-m", "dovecote", "config", "--config", str(path)],
        env=readme_environment, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, f"README.md line {line}: {result.stderr}"
