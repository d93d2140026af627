"""The tests' own layout: shared test code lives in tests/support/, and unit tests mirror the
package they test.

No module under tests/ or bench/ imports from a test module (`tests.<...>.test_*`), so a test
module can be moved, renamed or deleted without breaking another; what two of them share goes
to tests/support/. Every test module sits directly in tests/<pkg>/ for a package
zai_proxy/<pkg>/, or in one of the directories that test the repository as a whole (repo,
integration) or hold what tests share (support, fixtures).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
BENCH = ROOT / "bench"
PACKAGE = ROOT / "zai_proxy"
NOT_PACKAGES = frozenset({"repo", "integration", "support", "fixtures"})


def python_files() -> list[Path]:
    return sorted([*TESTS.rglob("*.py"), *BENCH.rglob("*.py")])


def module_of(path: Path) -> str:
    """The dotted name `path` is imported as from the repository root."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(tree: ast.Module, path: Path) -> Iterator[tuple[int, str]]:
    """(line, dotted name) of every module or name imported anywhere in the file; names in a
    `from X import a` count as `X.a`, relative imports resolved against the file's package."""
    package = module_of(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            yield node.lineno, module
            for alias in node.names:
                yield node.lineno, f"{module}.{alias.name}"


def is_test_module(dotted: str) -> bool:
    parts = dotted.split(".")
    return parts[0] == "tests" and any(part.startswith("test_") for part in parts[1:])


def test_no_module_imports_from_a_test_module() -> None:
    files = python_files()
    assert len(files) > 50  # the scan sees the suite (integration tests may be absent), not nothing
    found = []
    for path in files:
        tree = ast.parse(path.read_text(), filename=str(path))
        for line, name in imported(tree, path):
            if is_test_module(name):
                found.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    assert not found, "move what is shared into tests/support/:\n" + "\n".join(sorted(set(found)))


def test_every_test_module_lives_in_a_package_mirror_directory() -> None:
    modules = sorted(TESTS.rglob("test_*.py"))
    assert len(modules) > 50  # the unit suite at least (the mutation copy has no integration)
    misplaced = []
    for path in modules:
        home = path.parent
        mirrors = home.parent == TESTS and (
            home.name in NOT_PACKAGES or (PACKAGE / home.name / "__init__.py").is_file())
        if not mirrors:
            misplaced.append(str(path.relative_to(ROOT)))
    assert not misplaced, "not in tests/<pkg>/ for a zai_proxy/<pkg>/:\n" + "\n".join(misplaced)


def test_the_import_scan_sees_every_form_of_import() -> None:
    source = (
        "import tests.relay.test_forwarding\n"
        "from tests.relay.test_forwarding import ok\n"
        "from tests.relay import test_forwarding\n"
        "from .test_forwarding import Harness\n"
        "from . import test_forwarding as f\n"
        "def later():\n"
        "    from tests.relay.test_forwarding import z429\n"
        "from tests.support.forwarding import ok as fine\n"
        "import tests.support.clock\n"
    )
    path = TESTS / "relay" / "test_example.py"
    lines = {line for line, name in imported(ast.parse(source), path) if is_test_module(name)}
    assert lines == {1, 2, 3, 4, 5, 7}
