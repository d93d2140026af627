"""scripts/mutation.py's bookkeeping: the cache, the budgets (which only go down unless
--allow-raise), the README table. mutmut itself is not run here (run_modules is replaced)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "mutation.py"


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mutation_script", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[ModuleType, Path]:
    m = load_script()
    (tmp_path / "zai_proxy").mkdir()
    (tmp_path / "zai_proxy" / "classify.py").write_text("x = 1\n")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_classify.py").write_text("def test(): pass\n")
    (tmp_path / ".ci").mkdir()
    (tmp_path / "README.md").write_text(f"# x\n{m.TABLE_START}\nold\n{m.TABLE_END}\nend\n")
    for name, value in {"ROOT": tmp_path, "BUDGET": tmp_path / ".ci" / "budget.json",
                        "RESULTS": tmp_path / ".ci" / "results.json",
                        "EQUIVALENT": tmp_path / ".ci" / "equivalent.txt",
                        "README": tmp_path / "README.md", "MODULES": ("classify",)}.items():
        monkeypatch.setattr(m, name, value)

    def no_run(modules: list[str], jobs: int) -> dict[str, Any]:
        raise AssertionError(f"mutmut would run for {modules}")

    monkeypatch.setattr(m, "run_modules", no_run)
    return m, tmp_path


def entry(m: ModuleType, root: Path, survived: int) -> Any:
    covering = ["tests/zai/test_classify.py"]
    return m.Entry(m.cache_key("classify", covering, root), 10, 10 - survived, survived, 0, 0,
                   {f"x_f__mutmut_{i}": "return 1" for i in range(survived)}, covering)


def write(m: ModuleType, survived: int, budget: int | None) -> None:
    m.RESULTS.write_text(json.dumps({"classify": entry(m, m.ROOT, survived).__dict__}))
    if budget is not None:
        m.BUDGET.write_text(json.dumps({"classify": budget}))


def test_check_uses_the_cache_and_enforces_the_budget(tree: tuple[ModuleType, Path]) -> None:
    m, _ = tree
    write(m, survived=2, budget=2)
    assert m.main(["--check"]) == 0
    write(m, survived=3, budget=2)
    assert m.main(["--check"]) == 1


def test_check_fails_without_a_budget(tree: tuple[ModuleType, Path]) -> None:
    m, _ = tree
    write(m, survived=0, budget=None)
    assert m.main(["--check"]) == 1


def test_a_changed_module_is_run_again(tree: tuple[ModuleType, Path],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    m, root = tree
    write(m, survived=1, budget=1)
    (root / "zai_proxy" / "classify.py").write_text("x = 2\n")
    ran: list[list[str]] = []

    def fake_run(modules: list[str], jobs: int) -> dict[str, Any]:
        ran.append(modules)
        return {"classify": entry(m, root, survived=1)}

    monkeypatch.setattr(m, "run_modules", fake_run)
    assert m.main(["--check"]) == 0
    assert ran == [["classify"]]


def test_update_lowers_the_budget_and_rewrites_the_table(tree: tuple[ModuleType, Path]) -> None:
    m, root = tree
    write(m, survived=1, budget=4)
    assert m.main(["--update"]) == 0
    assert json.loads(m.BUDGET.read_text()) == {"classify": 1}
    readme = (root / "README.md").read_text()
    assert "| `classify` | 10 | 9 | 1 (0) | 0 | 0 | 90.0% |" in readme and "old" not in readme
    assert readme.endswith("end\n")


def test_update_refuses_to_raise_a_budget_without_allow_raise(
        tree: tuple[ModuleType, Path]) -> None:
    m, _ = tree
    write(m, survived=3, budget=2)
    assert m.main(["--update"]) == 1
    assert json.loads(m.BUDGET.read_text()) == {"classify": 2}
    assert m.main(["--update", "--allow-raise"]) == 0
    assert json.loads(m.BUDGET.read_text()) == {"classify": 3}


def test_equivalent_mutants_are_read_and_counted(tree: tuple[ModuleType, Path]) -> None:
    m, _ = tree
    m.EQUIVALENT.write_text("# module mutant reason\nclassify x_f__mutmut_0  same result\n")
    assert m.load_equivalents() == {"classify": {"x_f__mutmut_0": "same result"}}
    write(m, survived=2, budget=2)
    assert m.main(["--update"]) == 0
    assert "| 2 (1) |" in m.README.read_text()


def test_collect_folds_mutmut_exit_codes(tree: tuple[ModuleType, Path],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    m, root = tree
    work = root / "work"
    monkeypatch.setattr(m, "WORK", work)
    monkeypatch.setattr(m, "mutated_lines", lambda mutants: {x: f"<{x}>" for x in mutants})
    (work / "mutants" / "zai_proxy").mkdir(parents=True)
    (work / "zai_proxy").mkdir()
    (work / "zai_proxy" / "classify.py").write_text("x = 1\n")
    codes = {"a__mutmut_1": 1, "a__mutmut_2": 0, "a__mutmut_3": 36, "a__mutmut_4": 33,
             "a__mutmut_5": 3, "a__mutmut_6": 37, "a__mutmut_7": 0}
    (work / "mutants" / "zai_proxy" / "classify.py.meta").write_text(json.dumps(
        {"exit_code_by_key": {f"zai_proxy.classify.{k}": v for k, v in codes.items()}}))
    (work / "mutants" / "mutmut-stats.json").write_text(json.dumps({
        "tests_by_mangled_function_name": {
            "zai_proxy.classify.x_a": ["tests/zai/test_classify.py::test_x", "tests/test_b.py::t"],
            "zai_proxy.accounting.sse.x_b": ["tests/accounting/test_sse.py::test_y"]}}))
    got = m.collect("classify")
    assert (got.mutants, got.killed, got.survived, got.timeout, got.no_tests) == (7, 3, 2, 1, 1)
    assert got.undetected == 4 and got.score == pytest.approx(100 * 3 / 7)
    assert got.survivors == {"a__mutmut_2": "<zai_proxy.classify.a__mutmut_2>",
                             "a__mutmut_7": "<zai_proxy.classify.a__mutmut_7>"}
    assert got.covering_tests == ["tests/test_b.py", "tests/zai/test_classify.py"]
    assert got.key == m.cache_key("classify", got.covering_tests, work)
    codes["a__mutmut_2"] = None  # not run (an interrupted run): counted as undetected
    (work / "mutants" / "zai_proxy" / "classify.py.meta").write_text(json.dumps(
        {"exit_code_by_key": {f"zai_proxy.classify.{k}": v for k, v in codes.items()}}))
    got = m.collect("classify")
    assert (got.survived, got.pending, got.undetected) == (1, 1, 4)
    codes["a__mutmut_1"] = 99  # an exit code this script does not know: stop, do not guess
    (work / "mutants" / "zai_proxy" / "classify.py.meta").write_text(json.dumps(
        {"exit_code_by_key": {f"zai_proxy.classify.{k}": v for k, v in codes.items()}}))
    with pytest.raises(SystemExit):
        m.collect("classify")


def test_check_refuses_a_rerun_longer_than_max_minutes(tree: tuple[ModuleType, Path]) -> None:
    m, root = tree
    write(m, survived=1, budget=1)
    results = json.loads(m.RESULTS.read_text())
    results["classify"]["seconds"] = 3000.0  # 25 min on two workers
    m.RESULTS.write_text(json.dumps(results))
    (root / "zai_proxy" / "classify.py").write_text("x = 2\n")
    # run_modules raises in this fixture: a refusal must come before any run.
    assert m.main(["--check", "-j", "2", "--max-minutes", "10"]) == 1


def test_equivalents_follow_their_mutant_to_its_new_id(tree: tuple[ModuleType, Path]) -> None:
    m, _ = tree
    m.EQUIVALENT.write_text("# header\nclassify x_f__mutmut_2 same value either way\n"
                            "classify x_f__mutmut_5 gone for good\n"
                            "classify x_g__mutmut_1 still there\n")

    def with_survivors(survivors: dict[str, str]) -> Any:
        return m.Entry("k", 9, 9 - len(survivors), len(survivors), 0, 0, survivors, [])

    before = with_survivors({"x_f__mutmut_2": "a = 1", "x_f__mutmut_5": "b = 2",
                             "x_g__mutmut_1": "pass"})
    after = with_survivors({"x_f__mutmut_3": "a = 1", "x_g__mutmut_1": "pass",
                            "x_h__mutmut_3": "a = 1"})
    m.carry_equivalents({"classify": before}, {"classify": after})
    assert m.EQUIVALENT.read_text().splitlines() == [
        "# header", "classify x_f__mutmut_3 same value either way",
        "classify x_f__mutmut_5 gone for good", "classify x_g__mutmut_1 still there"]
