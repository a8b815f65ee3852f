"""The layers point one way, storage <- actors <- net <- the programs, and the pure modules stay pure.

Layering is read from the source: every .py file of every folder that pyproject.toml maps into the
`dovecote` package is parsed with `ast`, and every import in it, at any depth (inside functions,
under `if TYPE_CHECKING:`, `importlib.import_module("...")` with a literal name), is resolved to an
absolute module name, relative imports included. A module may import its own layer and the layers
below it. The programs are every module of `dovecote` outside storage/, actors/ and net/, so a new
file or subpackage in scripts/ is one of them. The root package itself (`dovecote`, scripts/__init__.py)
is loaded by Python before any module of any layer, so importing it adds no dependency; in exchange
it may import nothing of dovecote, but in its module `__getattr__` (PEP 562), which loads a program
(dovecote.embedded) only when that name is first asked for, never with the package.

Purity is read from a fresh interpreter: each pure module (every `*_core` module in actors/, found
by name, and the named ones below) is imported alone and `sys.modules` is inspected afterwards. A
finder placed first on `sys.meta_path` notes which module asked for each new import, so a failure
names the chain that pulled the forbidden module in.

Each checker is also fed a known violation, so that it cannot pass by seeing nothing.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import NamedTuple

import pytest

ROOT = Path(__file__).resolve().parent.parent
TOP = "dovecote"
LAYERS = ("storage", "actors", "net", "programs")  # each may import itself and those before it
PROGRAMS = "programs"

# Pure beside the `*_core` modules of actors/, which are found by their names.
NAMED_PURE_MODULES = (
    "validation", "filter_policy", "delivery_policy", "push_schedule", "dedup", "errors", "ids", "policy",
    # the rest of the actors' pure vocabulary and rules
    "ops", "messages", "push_types", "limits", "config", "paging", "stored_time", "ready_set", "move_tasks",
    "sqs_results", "sns_validation", "sns_messages", "archive_replay", "signing", "principals", "attributes",
    "authorization", "sse_policy", "json_depth", "mobile",
)
# Libraries that do I/O (a top-level name also covers its submodules). `_socket` and the like are not
# listed: the standard library's `uuid`, which msgspec imports, loads `_socket` without doing I/O.
FORBIDDEN_IN_PURE = (
    "trio", "anyio", "asyncio", "lmdb", "httpx", "httpcore", "h11", "h2", "socket", "ssl", "select",
    "selectors", "subprocess", "multiprocessing", "smtplib", "http.client", "urllib.request",
)


# --- layering ------------------------------------------------------------------------------------


class SourceModule(NamedTuple):
    name: str  # absolute, e.g. dovecote.actors.queue
    path: Path
    is_package: bool  # an __init__.py: relative imports are relative to the module itself


class Violation(NamedTuple):
    path: Path
    line: int
    importer: str
    imported: str
    reason: str

    def describe(self, root: Path) -> str:
        try:
            shown = self.path.relative_to(root)
        except ValueError:
            shown = self.path
        return f"{shown}:{self.line}: {self.importer} imports {self.imported} ({self.reason})"


def package_dirs(root: Path) -> dict[str, Path]:
    """pyproject.toml's package-dir: package name -> folder."""
    with open(root / "pyproject.toml", "rb") as file:
        mapping = tomllib.load(file)["tool"]["setuptools"]["package-dir"]
    return {package: root / folder for package, folder in mapping.items()}


def source_modules(packages: dict[str, Path]) -> list[SourceModule]:
    """Every .py file under the mapped folders, named as Python imports it. A file belongs to the
    deepest mapped folder that holds it."""
    folders = sorted(packages.items(), key=lambda item: len(item[1].parts), reverse=True)
    modules = {}
    for folder in packages.values():
        for path in sorted(folder.rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            package, base = next((p, f) for p, f in folders if path.is_relative_to(f))
            parts = [package, *path.relative_to(base).with_suffix("").parts]
            is_package = parts[-1] == "__init__"
            if is_package:
                parts.pop()
            modules[path] = SourceModule(".".join(parts), path, is_package)
    return list(modules.values())


def layer_of(name: str) -> str | None:
    """The layer of a dovecote module; None for the root package and for anything outside dovecote."""
    parts = name.split(".")
    if parts[0] != TOP or len(parts) == 1:
        return None
    return parts[1] if parts[1] in LAYERS[:-1] else PROGRAMS


def is_ours(name: str) -> bool:
    return name == TOP or name.startswith(TOP + ".")


def _resolve_relative(module: SourceModule, level: int, name: str | None) -> str | None:
    package = module.name if module.is_package else module.name.rpartition(".")[0]
    parts = package.split(".") if package else []
    if level - 1 >= len(parts):
        return None  # beyond the top-level package
    base = parts[: len(parts) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def _import_module_target(node: ast.Call) -> str | None:
    """The literal name of `importlib.import_module("x")`, `import_module("x")`, `__import__("x")`."""
    func = node.func
    called = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
    if called not in ("import_module", "__import__") or not node.args:
        return None
    first = node.args[0]
    if isinstance(first, ast.Constant) and isinstance(first.value, str) and not first.value.startswith("."):
        return first.value
    return None


def imports_of(module: SourceModule, source: str, known: frozenset[str]) -> list[tuple[int, str | None]]:
    """(line, absolute module name) of every import in the source, at any depth. The name is None
    for a relative import that climbs above the top-level package. `from package import name`
    names the submodule when `package.name` is a known module, else the package."""
    found: list[tuple[int, str | None]] = []
    for node in ast.walk(ast.parse(source, filename=str(module.path))):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module if node.level == 0 else _resolve_relative(module, node.level, node.module)
            if base is None:
                found.append((node.lineno, None))
                continue
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.append((node.lineno, submodule if submodule in known else base))
        elif isinstance(node, ast.Call):
            target = _import_module_target(node)
            if target is not None:
                found.append((node.lineno, target))
    return found


def lazy_lines(source: str) -> range:
    """The lines of a module's top-level `def __getattr__` (PEP 562), empty if it has none."""
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef) and node.name == "__getattr__":
            return range(node.lineno, (node.end_lineno or node.lineno) + 1)
    return range(0)


def layer_violations(packages: dict[str, Path]) -> tuple[list[Violation], set[str | None]]:
    """The imports that point up the layers, and the layers seen (so a caller can tell that the
    walk found something)."""
    modules = source_modules(packages)
    known = frozenset(module.name for module in modules)
    violations = []
    seen = set()
    for module in modules:
        source_layer = layer_of(module.name)
        seen.add(source_layer)
        source = module.path.read_text()
        lazy = lazy_lines(source) if source_layer is None else range(0)
        for line, imported in imports_of(module, source, known):
            if imported is None:
                violations.append(Violation(module.path, line, module.name, "?", "relative import above the top package"))
                continue
            if not is_ours(imported):
                continue
            target_layer = layer_of(imported)
            if source_layer is None:
                if imported != TOP and not (line in lazy and target_layer == PROGRAMS):
                    violations.append(Violation(
                        module.path, line, module.name, imported,
                        f"the root package is loaded with every layer, so it imports nothing of {TOP}",
                    ))
            elif target_layer is not None and LAYERS.index(target_layer) > LAYERS.index(source_layer):
                violations.append(Violation(
                    module.path, line, module.name, imported, f"{source_layer} may not import {target_layer}"
                ))
    return violations, seen


def test_the_layers_point_one_way():
    violations, seen = layer_violations(package_dirs(ROOT))
    assert seen >= set(LAYERS), f"the walk found only the layers {seen}: is pyproject's package-dir read right?"
    assert not violations, "imports against storage <- actors <- net <- programs:\n" + "\n".join(
        v.describe(ROOT) for v in violations
    )


def test_only_the_lmdb_store_imports_lmdb():
    packages = package_dirs(ROOT)
    modules = source_modules(packages)
    known = frozenset(module.name for module in modules)
    importers = sorted(
        module.name
        for module in modules
        if any(name == "lmdb" or (name or "").startswith("lmdb.") for _, name in imports_of(module, module.path.read_text(), known))
    )
    assert importers == [f"{TOP}.storage.lmdb_store"]


# Synthetic trees, laid out like the real one, with one known violation each.
LAYOUT = {"dovecote": "scripts", "dovecote.storage": "storage", "dovecote.actors": "actors", "dovecote.net": "net"}
BASE_TREE = {
    "scripts/__init__.py": '__version__ = "0"\n',
    "scripts/app.py": "import dovecote.net.server\nfrom .storage import keys\nfrom .actors.queue import Q\n",
    "scripts/bench/__init__.py": "",
    "scripts/bench/runner.py": "from ..net import server\nfrom dovecote.bench import runner\n",
    "storage/__init__.py": "",
    "storage/keys.py": "from . import records\nfrom .records import Record\nfrom dovecote import __version__\n",
    "storage/records.py": "import msgspec\n",
    "actors/__init__.py": "",
    "actors/queue.py": "from dovecote.storage import keys\nfrom ..storage.records import Record\nQ = 1\n",
    "actors/queue_core.py": "from . import queue\n",
    "net/__init__.py": "",
    "net/server.py": "from dovecote.actors import queue\nimport dovecote.storage.keys\nfrom .. import storage\n",
}


def write_tree(root: Path, files: dict[str, str]) -> dict[str, Path]:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return {package: root / folder for package, folder in LAYOUT.items()}


def test_a_tree_that_keeps_the_layers_passes(tmp_path):
    violations, seen = layer_violations(write_tree(tmp_path, BASE_TREE))
    assert seen == {None, *LAYERS}
    assert violations == []


@pytest.mark.parametrize(
    "path, source, line, imported",
    [
        ("storage/bad.py", "import dovecote.actors.queue\n", 1, "dovecote.actors.queue"),
        ("storage/bad.py", "from ..net import server\n", 1, "dovecote.net.server"),
        ("storage/bad.py", "from .. import actors\n", 1, "dovecote.actors"),
        ("storage/bad.py", "from dovecote import app\n", 1, "dovecote.app"),
        ("storage/bad.py", "from dovecote.bench.runner import go\n", 1, "dovecote.bench.runner"),
        ("storage/bad.py", "from .. import history\n", 1, "dovecote.history"),
        ("actors/bad.py", "def f():\n    if True:\n        from dovecote.net.server import S\n", 3, "dovecote.net.server"),
        ("actors/bad.py", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..net import server\n", 3,
         "dovecote.net.server"),
        ("actors/bad.py", "import importlib\nnet = importlib.import_module('dovecote.net.server')\n", 2,
         "dovecote.net.server"),
        ("actors/sub/__init__.py", "from ...net import server\n", 1, "dovecote.net.server"),
        ("net/bad.py", "from .. import app\n", 1, "dovecote.app"),
        ("net/bad.py", "import dovecote.bench\n", 1, "dovecote.bench"),
        ("net/bad.py", "class C:\n    def m(self):\n        from ..bench.runner import go\n", 3, "dovecote.bench.runner"),
        ("scripts/__init__.py", "from .app import main\n", 1, "dovecote.app"),
        ("scripts/__init__.py", "def main():\n    from .app import main\n", 2, "dovecote.app"),
        ("scripts/__init__.py", "def __getattr__(name):\n    from .storage import keys\n", 2, "dovecote.storage.keys"),
        ("storage/bad.py", "from .... import anything\n", 1, "?"),
    ],
)
def test_the_layer_check_reports_a_known_violation(tmp_path, path, source, line, imported):
    tree = {**BASE_TREE, "scripts/history.py": "", path: source}
    violations, _ = layer_violations(write_tree(tmp_path, tree))
    assert [(v.path, v.line, v.imported) for v in violations] == [(tmp_path / path, line, imported)]
    assert f"{path}:{line}: " in violations[0].describe(tmp_path)


def test_the_root_package_may_load_a_program_when_its_name_is_asked_for(tmp_path):
    lazy = "def __getattr__(name):\n    from . import app\n    return app.main\n"
    violations, _ = layer_violations(write_tree(tmp_path, {**BASE_TREE, "scripts/history.py": "", "scripts/__init__.py": lazy}))
    assert violations == []


# --- purity --------------------------------------------------------------------------------------

# Run in a fresh interpreter: argv is the module to import, then folders to put first on sys.path.
PROBE = r"""
import json, sys

target, extra_path = sys.argv[1], sys.argv[2:]
sys.path[:0] = extra_path
importer = {}


def is_machinery(name):
    return name in ("importlib", "_frozen_importlib", "_frozen_importlib_external") or name.startswith("importlib.")


class WhoAsked:
    "Finds nothing; notes which module first asked for each new import."

    def find_spec(self, name, path=None, target=None):
        if name not in importer:
            frame = sys._getframe(1)
            while frame is not None and is_machinery(frame.f_globals.get("__name__", "")):
                frame = frame.f_back
            importer[name] = None if frame is None else frame.f_globals.get("__name__")
        return None


before = sorted(sys.modules)
sys.meta_path.insert(0, WhoAsked())
error = None
try:
    __import__(target)
except BaseException as exc:
    error = f"{type(exc).__name__}: {exc}"
loaded = sorted(set(sys.modules) - set(before))
print(json.dumps({"before": before, "loaded": loaded, "importer": importer, "error": error}))
"""


def is_forbidden(name: str) -> bool:
    return any(name == f or name.startswith(f + ".") for f in FORBIDDEN_IN_PURE)


class Purity(NamedTuple):
    module: str
    error: str | None
    already_loaded: list[str]  # forbidden modules the bare interpreter had loaded: nothing to judge
    forbidden: dict[str, list[str]]  # forbidden library -> the import chain from the module to it

    def describe(self) -> str:
        if self.error:
            return f"{self.module} could not be imported: {self.error}"
        if self.already_loaded:
            return f"a bare interpreter has already loaded {self.already_loaded}; purity cannot be judged"
        if not self.forbidden:
            return f"{self.module} is pure"
        direct: list[str] = []
        through: dict[str, list[str]] = {}  # forbidden module -> the forbidden ones it pulled in
        for name, chain in self.forbidden.items():
            first = next((step for step in chain[1:-1] if is_forbidden(step)), None)
            if first is None:
                direct.append(f"  {name}: " + " -> ".join(chain))
            else:
                through.setdefault(first, []).append(name)
        indirect = [f"  {', '.join(names)}: through {first}" for first, names in through.items()]
        return "\n".join([f"{self.module} loads {', '.join(self.forbidden)}:", *direct, *indirect])


def check_purity(module: str, cwd: Path, extra_path: tuple[str, ...] = ()) -> Purity:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, module, *extra_path], capture_output=True, text=True, timeout=60, cwd=cwd,
    )
    assert result.returncode == 0, f"the probe failed for {module}:\n{result.stderr}"
    report = json.loads(result.stdout.splitlines()[-1])  # the module may print on import
    importer = report["importer"]
    forbidden = {}
    for name in report["loaded"]:
        if not is_forbidden(name):
            continue
        top = next(f for f in FORBIDDEN_IN_PURE if name == f or name.startswith(f + "."))
        if top in forbidden or top not in report["loaded"]:
            continue
        chain = [top]
        while chain[-1] != module and importer.get(chain[-1]) not in (None, "__main__") and len(chain) < 100:
            chain.append(importer[chain[-1]])
        forbidden[top] = chain[::-1]
    already = [name for name in report["before"] if is_forbidden(name)]
    return Purity(module, report["error"], already, forbidden)


def pure_modules(actors_dir: Path, package: str = f"{TOP}.actors") -> list[str]:
    """Every `*_core` module under actors/ (subfolders too) and the named ones."""
    cores = {
        ".".join([package, *path.relative_to(actors_dir).with_suffix("").parts])
        for path in actors_dir.rglob("*_core.py")
    }
    return sorted(cores | {f"{package}.{name}" for name in NAMED_PURE_MODULES})


@pytest.mark.parametrize(
    "module", pure_modules(package_dirs(ROOT)[f"{TOP}.actors"]), ids=lambda name: name.removeprefix(f"{TOP}.actors.")
)
def test_a_pure_module_loads_no_io_library(module, tmp_path):
    purity = check_purity(module, tmp_path)
    if purity.error or purity.already_loaded or purity.forbidden:
        pytest.fail(purity.describe(), pytrace=False)


def test_pure_modules_include_every_core_found_by_name(tmp_path):
    actors = tmp_path / "actors"
    write_tree(tmp_path, {"actors/__init__.py": "", "actors/queue.py": "", "actors/new_core.py": "",
                          "actors/cores/__init__.py": "", "actors/cores/deep_core.py": ""})
    found = pure_modules(actors)
    assert {"dovecote.actors.new_core", "dovecote.actors.cores.deep_core", "dovecote.actors.validation"} <= set(found)
    assert "dovecote.actors.queue" not in found


PROBE_PACKAGE = {
    "probed/__init__.py": "",
    "probed/clean_core.py": "import json\nimport msgspec\n",
    "probed/leaky_core.py": "from . import helper\n",
    "probed/helper.py": "def f():\n    pass\nimport socket\n",
    "probed/loop_core.py": "import trio\n",
}


def test_the_purity_check_passes_a_pure_module(tmp_path):
    write_tree(tmp_path, PROBE_PACKAGE)
    purity = check_purity("probed.clean_core", tmp_path, (str(tmp_path),))
    assert purity == ("probed.clean_core", None, [], {})


def test_the_purity_check_names_the_chain_to_a_forbidden_module(tmp_path):
    write_tree(tmp_path, PROBE_PACKAGE)
    purity = check_purity("probed.leaky_core", tmp_path, (str(tmp_path),))
    assert purity.forbidden["socket"] == ["probed.leaky_core", "probed.helper", "socket"]
    assert "socket: probed.leaky_core -> probed.helper -> socket" in purity.describe()
    assert purity.forbidden.keys() <= {"socket", "selectors", "select"}  # socket imports selectors

    purity = check_purity("probed.loop_core", tmp_path, (str(tmp_path),))
    assert purity.forbidden["trio"] == ["probed.loop_core", "trio"]
    assert "socket" in purity.forbidden and "trio: probed.loop_core -> trio" in purity.describe()
    assert any(line.endswith("through trio") and "socket" in line for line in purity.describe().splitlines())


def test_the_purity_check_reports_a_module_it_cannot_import(tmp_path):
    purity = check_purity("dovecote.actors.no_such_module", tmp_path)
    assert purity.error and "no_such_module" in purity.describe()


def test_failures_are_made_only_from_the_error_table():
    """A request that fails as a whole is answered with a Failure made by errors.failure() from a
    BrokerError, whose code the table knows: no module constructs a Failure itself."""
    offenders = []
    for folder in ("actors", "net", "scripts", "storage"):
        for path in (ROOT / folder).rglob("*.py"):
            if path == ROOT / "actors" / "errors.py":
                continue
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Call):
                    name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
                    if name == "Failure":
                        offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []
