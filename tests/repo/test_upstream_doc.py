"""docs/zai-upstream.md's code table says what the code table does, row for row.

The page is what an operator reads to learn what the proxy does with each Z.AI code; the code
table (`zai_proxy/zai/codes.py`) is what the proxy does. A row added, or a class, retry or
status changed, without the page following fails here, naming the code.
"""

from __future__ import annotations

from pathlib import Path

from zai_proxy.zai.codes import TABLE, UNKNOWN, ZaiCode

PAGE = Path(__file__).resolve().parents[2] / "docs" / "zai-upstream.md"


def documented_rows() -> dict[str, list[str]]:
    """The page's code table: the first cell (a code, or `other`) -> the row's cells."""
    rows: dict[str, list[str]] = {}
    for line in PAGE.read_text("utf-8").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 7 and (cells[0].isdigit() or cells[0] == "other"):
            rows[cells[0]] = cells
    return rows


def expected(row: ZaiCode) -> tuple[str, str, str]:
    """(class cell, first word of the retry cell, status cell) the page must show."""
    return f"`{row.cls.value}`", "yes" if row.retryable else "never", str(row.status)


def test_every_code_in_the_table_is_on_the_page_as_the_table_says() -> None:
    rows = documented_rows()
    wrong = []
    for row in (*TABLE, UNKNOWN):
        key = row.code or "other"
        cells = rows.pop(key, None)
        if cells is None:
            wrong.append(f"{key}: missing from {PAGE.name}")
            continue
        cls, retry, status = expected(row)
        shown = (cells[2], cells[3].split()[0].rstrip(","), cells[6])
        if shown != (cls, retry, status):
            wrong.append(f"{key}: the page says {shown}, the table {(cls, retry, status)}")
        if row.stop and "account stop" not in cells[5]:
            wrong.append(f"{key}: an account stop the page does not call one")
    wrong.extend(f"{key}: on the page, not in the table" for key in rows)
    assert not wrong, "\n".join(wrong)
