"""The `needs` marker (tests/conftest.py): a missing program skips locally, fails in CI."""

from __future__ import annotations

import sys

import pytest

pytest_plugins = ["pytester"]

INNER = """
import pytest

@pytest.mark.needs("zai-no-such-program-4b1e")
def test_missing():
    raise AssertionError("ran although its program is missing")

@pytest.mark.needs("zai-no-such-program-4b1e|{python}")
def test_alternative_present():
    pass

@pytest.mark.needs("{python}", "zai-no-such-program-4b1e")
def test_one_of_two_missing():
    raise AssertionError("ran although one of its programs is missing")

def test_unmarked():
    pass
"""


@pytest.fixture
def inner(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest("from tests.conftest import *  # noqa: F403\n")
    pytester.makeini("[pytest]\nmarkers =\n    needs: programs\n"
                     "asyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(test_inner=INNER.replace("{python}", sys.executable))
    return pytester


def test_missing_program_skips_locally(inner: pytest.Pytester,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tests.conftest.REQUIRE_SERVICES", False)
    result = inner.runpytest_inprocess("-p", "no:cacheprovider", "-rs")
    result.assert_outcomes(passed=2, skipped=2)
    result.stdout.fnmatch_lines(["*zai-no-such-program-4b1e is not installed*"])


def test_missing_program_fails_when_services_are_required(
        inner: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tests.conftest.REQUIRE_SERVICES", True)
    result = inner.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, errors=2)  # the skip happens in setup: an error there
    result.stdout.fnmatch_lines(["*skipped in CI, where every test must run*"])
