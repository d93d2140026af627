"""The fake `kubectl` (tests/fixtures/kubectl/kubectl) installed for one test or bench run.

`install(bin_dir)` copies it into `bin_dir` with this interpreter in its shebang (started with
`-S`: it needs only the standard library), so each of the dozens of calls a switch makes starts
in tens of milliseconds whatever `python3` on PATH is (a pyenv shim costs ~150 ms per call).
`patch_subprocess` goes further for the unit tests: `zai_proxy.switch.kube` still finds the fake on
PATH and builds the same argv, but the fake's `main` runs in this process (a switch makes ~40
calls; as processes that is ~2 s per test).
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import importlib.util
import io
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

FIXTURES = Path(__file__).parent.parent / "fixtures" / "kubectl"
SCRIPT = FIXTURES / "kubectl"
CLUSTER = FIXTURES / "cluster.json"


def install(bin_dir: Path) -> Path:
    """Write `bin_dir/kubectl` (executable) and return its path."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    body = SCRIPT.read_text().split("\n", 1)[1]
    target = bin_dir / "kubectl"
    target.write_text(f"#!{sys.executable} -S\n{body}")
    target.chmod(0o755)
    return target


_module: ModuleType | None = None


def _load() -> ModuleType:
    global _module
    if _module is None:
        loader = importlib.machinery.SourceFileLoader("fake_kubectl", str(SCRIPT))
        spec = importlib.util.spec_from_loader("fake_kubectl", loader)
        assert spec is not None
        _module = importlib.util.module_from_spec(spec)
        loader.exec_module(_module)
    return _module


def run_in_process(argv: Sequence[str], stdin: str | None) -> subprocess.CompletedProcess[str]:
    """What running the fake as `argv` would return, without starting a process (~1 ms)."""
    fake = _load()
    out, err = io.StringIO(), io.StringIO()
    saved_stdin = sys.stdin
    sys.stdin = io.StringIO(stdin or "")
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            fake.main(list(argv[1:]))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.stdin = saved_stdin
    return subprocess.CompletedProcess(list(argv), code, out.getvalue(), err.getvalue())


def patch_subprocess(monkeypatch: pytest.MonkeyPatch, fake_path: Path) -> None:
    """Make `zai_proxy.switch.kube` run the fake at `fake_path` in-process; other programs as
    usual."""
    real = subprocess.run

    def run(argv: Sequence[str], **kwargs: Any) -> Any:
        if Path(argv[0]) == fake_path:
            return run_in_process(argv, kwargs.get("input"))
        return real(argv, **kwargs)

    monkeypatch.setattr("zai_proxy.switch.kube.subprocess.run", run)
