"""How the switch's kubectl wrapper passes `--request-timeout` (zai_proxy/switch/kube.py), and how
the CLI refuses a timeout kubectl cannot be given (zai_proxy/switch/cli.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.support import kubectl_fake
from zai_proxy import switch
from zai_proxy.switch.kube import Kubectl, request_timeout_flag


@pytest.mark.parametrize(
    ("seconds", "flag"),
    [(20.0, "20s"), (1.0, "1s"), (0.5, "500ms"), (1.5, "1500ms"), (0.001, "1ms"),
     (2.0004, "2000ms"), (0.0015, "2ms")],
)
def test_fractional_timeouts_reach_kubectl_as_such(seconds: float, flag: str) -> None:
    assert request_timeout_flag(seconds) == flag
    argv = Kubectl("zai", request_timeout=seconds).command("get", "pods")
    assert f"--request-timeout={flag}" in argv
    assert "--request-timeout=0s" not in argv  # kubectl's "no timeout at all"


@pytest.mark.parametrize("seconds", [0.0, 0.0004, -1.0, float("nan")])
def test_a_timeout_kubectl_cannot_take_is_refused(seconds: float) -> None:
    with pytest.raises(ValueError, match=r"at least 0\.001s"):
        Kubectl("zai", request_timeout=seconds)


def test_cli_passes_half_a_second_to_every_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    fake = kubectl_fake.install(tmp_path / "bin")
    kubectl_fake.patch_subprocess(monkeypatch, fake)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_KUBECTL_STATE", str(tmp_path / "state.json"))
    monkeypatch.setenv("FAKE_KUBECTL_CALLS", str(tmp_path / "calls.jsonl"))
    (tmp_path / "state.json").write_text(kubectl_fake.CLUSTER.read_text())
    (tmp_path / "calls.jsonl").write_text("")
    assert switch.main(["status", "-n", "zai", "--request-timeout", "0.5"]) == 0
    calls = [json.loads(line) for line in (tmp_path / "calls.jsonl").read_text().splitlines()]
    assert calls and all("--request-timeout=500ms" in call for call in calls), calls


@pytest.mark.parametrize("value", ["0.0004", "nan"])
def test_cli_refuses_a_timeout_below_a_millisecond(value: str, capsys: Any) -> None:
    assert switch.main(["status", "-n", "zai", "--request-timeout", value]) == switch.EXIT_USAGE
    err = capsys.readouterr().err
    assert f"--request-timeout {float(value):g} is below 0.001s (1ms)" in err, err
