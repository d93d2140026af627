"""Mutation testing of the modules where a silent bug costs money or leaks (mutmut 3).

    python scripts/mutation.py [MODULE ...] [--check] [--update [--allow-raise]] [--force] [-j N]

Runs mutmut, with one operator added (statement deletion: a call or assignment line replaced by
`pass`, scripts/mutmut_ops.py), on the in-process unit tests (`tests/**/test_*.py`, never
`tests/integration/`) in a scratch copy of the tree (`.mutation/work`, git-ignored), then prints
per module: mutants, killed, survived (of which listed as equivalent), timeouts, mutants no unit
test reaches, score.

Results are cached in `.ci/mutation-results.json` (committed), keyed per module by a hash of the
module's source, of the unit-test files that executed it in the run that produced the entry, of
the shared test helpers and of the mutmut version. A module whose key is unchanged is not run
again (`--force` runs it anyway). Code elsewhere in the package is not in the key: a change there
that weakens the tests of a module shows up the next time that module or its tests change, or
with `--force`.

`--check` (CI): exit 1 when a module's survivors (timeouts and mutants no test reaches count as
survivors: no test failed) exceed its budget in `.ci/mutation-budget.json`.
`--update`: write the cache, lower budgets to the new counts and rewrite the README table. A
budget only goes down: a module with more survivors than its budget fails unless `--allow-raise`
is given (a deliberate, reviewable act: the budget diff shows up in the commit).
Equivalent mutants are listed in `.ci/mutation-equivalent.txt` (module, mutant id, reason).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODULES = ("clients.auth", "wire.headers", "wire.routing", "limiter.admission",
           "limiter.rate_controller", "limiter.concurrency_controller", "zai.classify",
           "zai.codes", "core.ticker", "core.lease", "limiter.learned",
           "accounting.ledger", "accounting.usage", "accounting.sse", "quota.quota",
           "quota.state", "quota.pacing", "quota.shared", "quota.stop", "quota.client_budgets",
           "limiter.congestion", "limiter.gcra", "limiter.shared", "limiter.limiter",
           "server.http_protocol", "server.connections", "switch.carry", "switch.retire",
           "limiter.fair_queue", "limiter.fleet_shares")
BUDGET = ROOT / ".ci" / "mutation-budget.json"
RESULTS = ROOT / ".ci" / "mutation-results.json"
EQUIVALENT = ROOT / ".ci" / "mutation-equivalent.txt"
README = ROOT / "README.md"
WORK = ROOT / ".mutation" / "work"
# Everything the unit tests read besides the package and the tests (docs, manifests, ...).
ALSO_COPY = (".ci", "Dockerfile", ".dockerignore", "README.md", "bench", "deploy", "docs",
             "requirements.lock", "scripts")
TEST_HELPERS = ("tests/__init__.py", "tests/conftest.py")
# The shared test support (fake clock, fake Redis, ...) is a helper of every test that uses it.
SUPPORT = "tests/support"
# mutmut with the statement-deletion operator added (see that script).
MUTMUT = ROOT / "scripts" / "mutmut_ops.py"
# A mutant is a timeout after (its tests' CPU seconds + 1) * this * 2 CPU seconds (mutmut's
# RLIMIT_CPU, so load on the machine does not matter); mutmut's default 15 spent most of a run
# waiting on the mutants that loop forever.
TIMEOUT_MULTIPLIER = 4.0
# Bump when the way mutants are run or counted changes: every cached entry goes stale.
SCHEME = "2"  # 2: statement deletion added to mutmut's operators
TABLE_START = "<!-- mutation-table:start -->"
TABLE_END = "<!-- mutation-table:end -->"

# mutmut's exit codes per mutant (mutmut/stats.py), folded into what this script reports.
KILLED = {1, 3, 37}
TIMEOUT = {36, -24, 24, 152, 255}
NO_TESTS = {5, 33}
SURVIVED = {0}


@dataclass
class Entry:
    """The cached result of one module."""

    key: str
    mutants: int
    killed: int
    survived: int
    timeout: int
    no_tests: int
    survivors: dict[str, str]  # mutant id -> the mutated line, for reading and for equivalents
    covering_tests: list[str]
    seconds: float = 0.0  # test time its mutants took (sum over mutants), to foresee a re-run
    pending: int = 0  # mutants an interrupted run did not get to: counted as undetected

    @property
    def undetected(self) -> int:
        """Mutants no test failed on (or not run): what the budget bounds."""
        return self.survived + self.timeout + self.no_tests + self.pending

    @property
    def score(self) -> float:
        return 100.0 * self.killed / self.mutants if self.mutants else 100.0


def module_path(module: str) -> str:
    """`switch.carry` -> `zai_proxy/switch/carry.py`."""
    return f"zai_proxy/{module.replace('.', '/')}.py"


def test_helpers(base: Path) -> list[str]:
    """The shared test helpers under `base` (their content is in every module's key)."""
    support = sorted(str(p.relative_to(base)) for p in (base / SUPPORT).glob("*.py"))
    return [*TEST_HELPERS, *support]


def mutmut_version() -> str:
    return metadata.version("mutmut")


def cache_key(module: str, covering_tests: list[str], base: Path | None = None) -> str:
    """The hash a cached result is valid for (of the files under `base`, default the tree)."""
    base = base or ROOT
    digest = hashlib.sha256(f"{SCHEME}\0{mutmut_version()}\0".encode())
    digest.update(MUTMUT.read_bytes())  # the operators themselves
    for rel in (module_path(module), *test_helpers(base), *sorted(covering_tests)):
        path = base / rel
        digest.update(rel.encode() + b"\0")
        digest.update(path.read_bytes() if path.is_file() else b"<missing>")
        digest.update(b"\0")
    return digest.hexdigest()[:20]


def load_json(path: Path) -> dict[str, object]:
    return json.loads(path.read_text()) if path.exists() else {}


def load_results() -> dict[str, Entry]:
    return {m: Entry(**e) for m, e in load_json(RESULTS).items()}  # type: ignore[arg-type]


def load_equivalents() -> dict[str, dict[str, str]]:
    """`module mutant_id reason...` per line; lines starting with `#` are comments."""
    found: dict[str, dict[str, str]] = {}
    if EQUIVALENT.exists():
        for line in EQUIVALENT.read_text().splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            module, mutant, reason = [*line.split(None, 2), "", ""][:3]
            found.setdefault(module, {})[mutant] = reason.strip()
    return found


def carry_equivalents(before: dict[str, Entry], after: dict[str, Entry]) -> None:
    """Move listed equivalents to their new ids after a re-run.

    Mutant ids are numbered per function, so an edit elsewhere in a function (or a new
    operator) renumbers them. An equivalent whose id no longer survives moves to the survivor of
    the same function with the same mutated line, when exactly one has it; otherwise it stays
    (and is reported as stale for someone to judge).
    """
    if not EQUIVALENT.exists():
        return
    lines = EQUIVALENT.read_text().splitlines()
    for i, line in enumerate(lines):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        module, mutant, reason = [*line.split(None, 2), "", ""][:3]
        old, new = before.get(module), after.get(module)
        if old is None or new is None or mutant in new.survivors:
            continue
        text = old.survivors.get(mutant)
        function = mutant.rsplit("__mutmut_", 1)[0]
        moved = [m for m, t in new.survivors.items()
                 if t == text and m.rsplit("__mutmut_", 1)[0] == function]
        if text is not None and len(moved) == 1:
            lines[i] = f"{module} {moved[0]} {reason}".rstrip()
    EQUIVALENT.write_text("\n".join(lines) + "\n")


def tracked_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    return [p for p in out.splitlines()
            if not p.startswith(("tests/integration/", ".mutation/", "mutants/"))
            and (ROOT / p).is_file()]


def prepare_workdir(modules: list[str]) -> None:
    if WORK.exists():
        shutil.rmtree(WORK)
    WORK.mkdir(parents=True)
    for rel in tracked_files():
        target = WORK / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, target)
    only = ", ".join(json.dumps(module_path(m)) for m in modules)
    also = ", ".join(json.dumps(p) for p in ALSO_COPY)
    pyproject = WORK / "pyproject.toml"
    pyproject.write_text(pyproject.read_text() + f"""
[tool.mutmut]
source_paths = ["zai_proxy"]
only_mutate = [{only}]
also_copy = [{also}]
pytest_add_cli_args = ["-p", "no:cacheprovider", "-q"]
pytest_add_cli_args_test_selection = ["tests"]
use_git_change_detection = false
timeout_multiplier = {TIMEOUT_MULTIPLIER}
""")


def mutmut(*args: str, log: Path | None = None) -> subprocess.CompletedProcess[str]:
    exe = [sys.executable, str(MUTMUT)]
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("ZAI_PROXY_REQUIRE_SERVICES", None)  # unit tests only; skips are no failure here
    if log is None:
        return subprocess.run([*exe, *args], cwd=WORK, env=env, capture_output=True,
                              text=True)
    with log.open("w") as out:
        return subprocess.run([*exe, *args], cwd=WORK, env=env, stdout=out,
                              stderr=subprocess.STDOUT, text=True)


# The first changed line of each named mutant, as `mutmut show` prints it, in one process (one
# `mutmut show` per survivor costs half a second each).
_SHOW = """
import json, sys
from mutmut.mutation.diff_apply import find_mutant, get_diff_for_mutant
names = json.load(sys.stdin)
paths, out = {}, {}
for name in names:
    module = name.rsplit(".", 1)[0]
    if module not in paths:
        paths[module] = find_mutant(name).path
    added = [line[1:].strip() for line in get_diff_for_mutant(name, path=paths[module]).splitlines()
             if line.startswith("+") and not line.startswith("+++")]
    out[name] = added[0] if added else "?"
json.dump(out, sys.stdout)
"""


def mutated_lines(mutants: list[str]) -> dict[str, str]:
    """The first changed line of each mutant (`?` where there is none)."""
    if not mutants:
        return {}
    done = subprocess.run([sys.executable, "-c", _SHOW], cwd=WORK, input=json.dumps(mutants),
                          capture_output=True, text=True, check=True)
    lines: dict[str, str] = json.loads(done.stdout)
    return lines


def collect(module: str) -> Entry:
    meta = json.loads((WORK / "mutants" / (module_path(module) + ".meta")).read_text())
    codes: dict[str, int | None] = meta["exit_code_by_key"]
    stats = json.loads((WORK / "mutants" / "mutmut-stats.json").read_text())
    prefix = f"zai_proxy.{module}."
    tests = {t.split("::", 1)[0]
             for name, ids in stats["tests_by_mangled_function_name"].items()
             if name.startswith(prefix) for t in ids}
    tally: Counter[str] = Counter()
    survivors: dict[str, str] = {}
    for mutant, code in sorted(codes.items()):
        if code in KILLED:
            tally["killed"] += 1
        elif code in TIMEOUT:
            tally["timeout"] += 1
        elif code in NO_TESTS:
            tally["no_tests"] += 1
        elif code is None:
            tally["pending"] += 1
        elif code in SURVIVED:
            tally["survived"] += 1
            survivors[mutant.removeprefix(prefix)] = mutant
        else:
            raise SystemExit(f"{mutant}: unexpected mutmut result {code!r} (see {WORK})")
    lines = mutated_lines(list(survivors.values()))
    survivors = {short: lines.get(full, "?") for short, full in survivors.items()}
    covering = sorted(tests)
    seconds = sum(float(s or 0) for s in meta.get("durations_by_key", {}).values())
    # Keyed by the copy the run used: files edited in the tree meanwhile make the entry stale.
    return Entry(cache_key(module, covering, WORK), len(codes), tally["killed"], tally["survived"],
                 tally["timeout"], tally["no_tests"], survivors, covering, round(seconds, 1),
                 tally["pending"])


def run_modules(modules: list[str], jobs: int) -> dict[str, Entry]:
    prepare_workdir(modules)
    log = WORK / "mutmut.log"
    print(f"mutmut {mutmut_version()} on {', '.join(modules)} ({jobs} workers; log {log})",
          flush=True)
    started = time.monotonic()
    done = mutmut("run", "--max-children", str(jobs), log=log)
    if done.returncode != 0:
        print(log.read_text()[-4000:], file=sys.stderr)
        raise SystemExit(f"mutmut run failed with exit code {done.returncode}")
    print(f"mutmut ran in {time.monotonic() - started:.0f} s", flush=True)
    return {m: collect(m) for m in modules}


def print_table(entries: dict[str, Entry], equivalents: dict[str, dict[str, str]],
                budgets: dict[str, int], fresh: set[str]) -> None:
    print(f"{'module':<24}{'mutants':>8}{'killed':>8}{'survived':>9}{'(equiv)':>8}"
          f"{'timeout':>8}{'no test':>8}{'score':>8}{'budget':>8}  source")
    for module, e in entries.items():
        equiv = len(set(equivalents.get(module, {})) & set(e.survivors))
        print(f"{module:<24}{e.mutants:>8}{e.killed:>8}{e.survived:>9}{equiv:>8}{e.timeout:>8}"
              f"{e.no_tests:>8}{e.score:>7.1f}%{budgets.get(module, '-')!s:>8}  "
              f"{'run now' if module in fresh else 'cached'}"
              f"{f' ({e.pending} not run)' if e.pending else ''}")


def readme_table(entries: dict[str, Entry], equivalents: dict[str, dict[str, str]]) -> str:
    rows = ["| module | mutants | killed | survived (equivalent) | timeout | no test | score |",
            "|---|---:|---:|---:|---:|---:|---:|"]
    for module in MODULES:
        e = entries.get(module)
        if e is None:
            continue
        equiv = len(set(equivalents.get(module, {})) & set(e.survivors))
        not_run = f" ({e.pending} not run)" if e.pending else ""
        rows.append(f"| `{module}` | {e.mutants}{not_run} | {e.killed} | {e.survived} ({equiv}) | "
                    f"{e.timeout} | {e.no_tests} | {e.score:.1f}% |")
    return "\n".join(rows)


def update_readme(table: str) -> None:
    text = README.read_text()
    pattern = re.compile(re.escape(TABLE_START) + ".*?" + re.escape(TABLE_END), re.S)
    if not pattern.search(text):
        raise SystemExit(f"README.md has no {TABLE_START} ... {TABLE_END} block")
    README.write_text(pattern.sub(lambda _: f"{TABLE_START}\n{table}\n{TABLE_END}", text))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", metavar="MODULE",
                        help=f"a subset of: {' '.join(MODULES)} (default: all)")
    parser.add_argument("--check", action="store_true",
                        help="fail when survivors exceed the budget (CI)")
    parser.add_argument("--update", action="store_true",
                        help="write the cache, lower the budgets, rewrite the README table")
    parser.add_argument("--allow-raise", action="store_true",
                        help="with --update: let a budget go up")
    parser.add_argument("--force", action="store_true", help="ignore the cache")
    parser.add_argument("--reuse-workdir", action="store_true",
                        help="collect the last run's results from .mutation/work instead of "
                             "running (e.g. to --update after a run without it)")
    parser.add_argument("--max-minutes", type=float,
                        default=float(os.environ.get("ZAI_MUTATION_MAX_MINUTES", "10")),
                        help="with --check: fail at once, without running, when the stale "
                             "modules took longer than this last time (default 10, or "
                             "$ZAI_MUTATION_MAX_MINUTES)")
    parser.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 1,
                        help="mutants tested in parallel (default: the CPU count)")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.modules) - set(MODULES))
    if unknown:
        parser.error(f"unknown module {', '.join(unknown)}; choose from {' '.join(MODULES)}")
    modules = [m for m in MODULES if m in args.modules] or list(MODULES)

    cached = load_results()
    stale = [m for m in modules if args.force or m not in cached
             or cached[m].key != cache_key(m, cached[m].covering_tests)]
    for m in modules:
        if m not in stale:
            print(f"{m}: unchanged since its cached run (key {cached[m].key}), not re-run")
    entries = dict(cached)
    if args.reuse_workdir:
        entries.update({m: collect(m) for m in modules})
        stale = list(modules)
    elif stale:
        if args.check:
            # What the stale modules cost last time (a module never run: unknown, so too much).
            foreseen = sum(cached[m].seconds if m in cached else float("inf") for m in stale)
            minutes = foreseen / max(1, args.jobs) / 60
            if minutes > args.max_minutes:
                print(f"mutation results are stale for {', '.join(stale)} (module or its tests "
                      f"changed); re-running them would take about {minutes:.0f} min here, more "
                      f"than --max-minutes {args.max_minutes:g}. Run `python scripts/mutation.py "
                      f"--update {' '.join(stale)}` and commit .ci/mutation-results.json.",
                      file=sys.stderr)
                return 1
        entries.update(run_modules(stale, args.jobs))

    budgets: dict[str, int] = {k: int(v) for k, v in load_json(BUDGET).items()}  # type: ignore[call-overload]
    if args.update:
        carry_equivalents({m: cached[m] for m in stale if m in cached}, entries)
    equivalents = load_equivalents()
    print()
    print_table({m: entries[m] for m in modules}, equivalents, budgets, set(stale))

    failures = []
    for m in modules:
        e = entries[m]
        for mutant in sorted(set(equivalents.get(m, {})) - set(e.survivors)):
            print(f"note: {m} {mutant} is listed as equivalent but did not survive "
                  "(stale entry in .ci/mutation-equivalent.txt?)")
        gaps = sorted(set(e.survivors) - set(equivalents.get(m, {})))
        if gaps:
            print(f"\n{m}: {len(gaps)} surviving mutants not listed as equivalent (test gaps):")
            for mutant in gaps:
                print(f"  {mutant}: {e.survivors[mutant]}")
        budget = budgets.get(m)
        if budget is not None and e.undetected > budget:
            failures.append(f"{m}: {e.undetected} undetected mutants (survived + timeout + "
                            f"no test) > budget {budget}")

    if args.update:
        if failures and not args.allow_raise:
            print("\n".join(["", *failures, "refusing to raise a budget without --allow-raise"]),
                  file=sys.stderr)
            return 1
        for m in modules:
            budgets[m] = entries[m].undetected
        RESULTS.write_text(json.dumps(
            {m: entries[m].__dict__ for m in MODULES if m in entries}, indent=1) + "\n")
        BUDGET.write_text(json.dumps({m: budgets[m] for m in MODULES if m in budgets},
                                     indent=1) + "\n")
        update_readme(readme_table(entries, equivalents))
        print(f"\nwrote {RESULTS.relative_to(ROOT)}, {BUDGET.relative_to(ROOT)}, README.md")
        return 0
    if args.check:
        missing = [m for m in modules if m not in budgets]
        if missing:
            failures.append(f"no budget for {', '.join(missing)} in {BUDGET.relative_to(ROOT)}")
        if failures:
            print("\n".join(["", *failures]), file=sys.stderr)
            return 1
        print("\nevery module is within its mutation budget")
    return 0


if __name__ == "__main__":
    sys.exit(main())
