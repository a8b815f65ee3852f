"""The package as it is built and installed: its dependencies declared, the wheel holding the
dovecote namespace alone, the benchmarks runnable from a checkout."""

import subprocess
import sys

import pytest

import dovecote


def test_every_imported_package_is_declared():
    """Third-party imports of the installed package are runtime dependencies; those of the
    benchmarks and the tests are in the test extra (botocore among them: the package verifies
    Signature V4 itself); the long tier's fuzzing harness may use the fuzz extra too, and the pytest
    plugin pytest, which alone loads it (through its entry point)."""
    import ast
    import importlib.metadata
    import re
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]

    def names(requirements):
        return {re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].lower().replace("_", "-") for requirement in requirements}

    runtime = names(project["dependencies"])
    extras = {extra: names(requirements) for extra, requirements in project["optional-dependencies"].items()}
    distributions = importlib.metadata.packages_distributions()

    def declared_for(relative: str):
        if relative.startswith("tests/fuzz/"):
            return runtime | extras["test"] | extras["fuzz"]
        if relative == "scripts/pytest_plugin.py":
            return runtime | {"pytest"}
        return runtime | extras["test"] if relative.startswith(("scripts/bench/", "tests/")) else runtime

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

    root = Path(__file__).resolve().parents[1]
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


@pytest.mark.parametrize("benchmark", ["bench", "bench.sqs", "bench.sns", "bench.pushes", "bench.aws", "bench.log", "bench.peers", "bench.embedded"])
def test_the_benchmarks_start_from_the_editable_install(benchmark, tmp_path):
    """The wheel leaves them out; the editable install finds them, from any working directory."""
    result = subprocess.run(
        [sys.executable, "-m", f"dovecote.{benchmark}", "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert f"python -m dovecote.{benchmark} " in result.stdout
