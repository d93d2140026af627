"""The settings idiom shared by every program (proxy, simulator, dashboard).

A program declares its settings once, as a frozen dataclass whose fields are made by `setting`
(or `Section.setting`): each names its environment variable, flag, parser, default and doc text.
From that one declaration come the reading (`read`: environment and flags once, flags win),
the argparse flags (`add_flags`, `flags_from`) and the markdown table of docs/configuration.md
(`markdown_table`). The value formats every program shares live in `formats`.

This package is the lowest layer: it imports no other package of zai_proxy.
"""

from zai_proxy.settings.formats import (
    non_negative,
    parse_bool,
    parse_duration,
    parse_float,
    parse_int,
    parse_list,
    parse_size,
    parse_url,
    positive,
)
from zai_proxy.settings.table import (
    Field,
    Section,
    SettingError,
    add_flags,
    fields_of,
    flags_from,
    markdown_table,
    read,
    setting,
)

__all__ = [
    "Field",
    "Section",
    "SettingError",
    "add_flags",
    "fields_of",
    "flags_from",
    "markdown_table",
    "non_negative",
    "parse_bool",
    "parse_duration",
    "parse_float",
    "parse_int",
    "parse_list",
    "parse_size",
    "parse_url",
    "positive",
    "read",
    "setting",
]
