"""The settings idiom: a declared field is read from its variable, a flag wins, a bad value names
where it came from, and the doc table lists every field."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import pytest

from zai_proxy.settings import (
    Section,
    SettingError,
    add_flags,
    fields_of,
    flags_from,
    markdown_table,
    parse_bool,
    parse_duration,
    parse_int,
    positive,
    read,
    setting,
)

_NET = Section("Network")


@dataclass(frozen=True)
class Example:
    port: int = _NET.setting("EX_PORT", positive(parse_int), "port to listen on", default=80)
    wait: float = _NET.setting("EX_WAIT", parse_duration, "how long to wait", default=1.0)
    label: str = setting("EX_LABEL", str, "free text; empty = none", default="x")
    on: bool = setting("EX_ON", parse_bool, "a switch", default=False)
    token: str = setting("EX_TOKEN", str, "a secret", secret=True, default="")
    urls: tuple[str, ...] = setting("EX_URLS", str.upper, "a list", flag="--url", many=True,
                                    default=())
    host: str = setting(None, str, "flag only", flag="--bind", default="::")
    computed: int = 0  # not a setting


def test_a_field_parses_its_variable() -> None:
    values = read(Example, {"EX_PORT": "8080", "EX_WAIT": "250ms", "EX_ON": "yes"})
    assert values == {"port": 8080, "wait": 0.25, "on": True}
    assert Example(**values).port == 8080


def test_unset_and_empty_fields_keep_their_default_but_empty_text_is_a_text_value() -> None:
    assert read(Example, {}) == {}
    assert read(Example, {"EX_PORT": "", "EX_ON": ""}) == {}
    assert read(Example, {"EX_LABEL": ""}) == {"label": ""}


def test_a_flag_wins_over_its_variable() -> None:
    env = {"EX_PORT": "8080", "EX_LABEL": "env"}
    assert read(Example, env, {"port": "9090"}) == {"port": 9090, "label": "env"}
    assert read(Example, {}, {"host": "0.0.0.0"}) == {"host": "0.0.0.0"}


def test_a_list_is_comma_separated_in_its_variable_and_repeated_as_a_flag() -> None:
    assert read(Example, {"EX_URLS": "a, ,b"}) == {"urls": ("A", "B")}
    assert read(Example, {"EX_URLS": "a"}, {"urls": ["c,d", "e"]}) == {"urls": ("C,D", "E")}


@pytest.mark.parametrize(("env", "flags", "named"), [
    ({"EX_PORT": "eighty"}, {}, "EX_PORT='eighty' is invalid: expected a whole number"),
    ({"EX_PORT": "0"}, {}, "EX_PORT='0' is invalid: expected a positive number"),
    ({"EX_WAIT": "soon"}, {}, "EX_WAIT='soon' is invalid: expected a duration"),
    ({"EX_ON": "maybe"}, {}, "EX_ON='maybe' is invalid: expected a boolean"),
    ({"EX_PORT": "80"}, {"port": "x"}, "--port='x' is invalid"),
])
def test_a_bad_value_names_the_variable_or_flag_it_came_from(
        env: dict[str, str], flags: dict[str, str], named: str) -> None:
    with pytest.raises(SettingError) as info:
        read(Example, env, flags)
    assert str(info.value).startswith(named)
    assert isinstance(info.value, ValueError)


def test_a_secret_is_never_shown_and_has_no_flag() -> None:
    secret = next(f for f in fields_of(Example) if f.attr == "token")
    assert secret.flag is None and "token" not in repr(Example(token="hunter2"))

    def refuse(text: str) -> str:
        raise ValueError("something else")

    bad = [type(secret)(env="EX_TOKEN", parse=refuse, doc="", secret=True, attr="token")]
    with pytest.raises(SettingError, match="EX_TOKEN=<hidden>") as info:
        read(bad, {"EX_TOKEN": "hunter2"})
    assert "hunter2" not in str(info.value)


def test_flags_are_added_as_text_and_collected_by_attribute() -> None:
    parser = argparse.ArgumentParser()
    add_flags(parser, Example, "ex_")
    ns = parser.parse_args(["--port", "81", "--url", "a", "--url", "b", "--bind", "h"])
    assert flags_from(ns, Example, "ex_") == {"port": "81", "urls": ["a", "b"], "host": "h"}
    with pytest.raises(SystemExit):
        parser.parse_args(["--token", "hunter2"])


def test_the_doc_table_lists_every_field_under_its_section() -> None:
    lines = markdown_table(Example)
    rows = [line for line in lines if line.startswith("| `") or line.startswith("| (")]
    assert len(rows) == len(fields_of(Example)) == 7
    for f in fields_of(Example):
        assert any(f.doc in row and (f.env or f.flag or "") in row for row in rows), f.attr
    assert lines[0] == "### Network"
    assert "| `EX_PORT` | `--port` | `80` | port to listen on |" in lines
    assert "| (flag only) | `--bind` | `::` | flag only |" in lines
    assert "| `EX_TOKEN` | (environment only) | (unset) | a secret |" in lines
